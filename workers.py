"""`python shop.py --workers N`: N server processes on the one listening socket, kept alive and kept even."""

import logging
import mmap
import os
import signal
import struct
import threading
import time

log = logging.getLogger("shop")


class Prefork:
    """WORKERS processes accepting on the one inherited listening socket; a worker that dies is replaced.

    The kernel hands each new connection to whichever worker accepts first; Balance keeps their shares even.
    Each worker has its own app: its own catalog reload (a stat per request), SQLite connections and threads.
    """

    RESTARTS = 10  # more deaths than this within a minute means something is wrong: stop instead

    def __init__(self, config, sock):
        self.config, self.sock = config, sock
        self.parent = os.getpid()
        self.workers = {}  # pid: slot in self.balance
        self.balance = Balance(config.workers)
        self.first_cpu = current_cpu()  # workers are pinned from here on (place)
        self.deaths = []
        self.stopping = False

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGALRM, self.kill)
        for slot in range(self.config.workers):
            self.spawn(slot)
        code = 0
        while self.workers:
            try:
                pid, status = os.wait()  # retried after a signal handler returns (PEP 475)
            except ChildProcessError:
                break
            if pid not in self.workers:
                continue
            slot = self.workers.pop(pid)
            if self.stopping:
                continue
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < 60] + [now]
            log.error("worker %d %s", pid, _describe(status))
            if len(self.deaths) > self.RESTARTS:
                log.error("workers keep dying: stopping")
                code = 1
                self.stop(None, None)
            else:
                self.spawn(slot)
        signal.alarm(0)
        log.info("stopped")
        return code

    def spawn(self, slot):
        self.balance.reset(slot)
        pid = os.fork()
        if pid:
            self.workers[pid] = slot
            return
        code = 1
        try:  # the worker: Ctrl-C or SIGTERM ends waitress's loop; it exits if the parent goes away
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, stop_on_signal)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            threading.Thread(target=_watch_parent, args=(self.parent,), daemon=True).start()
            from cli import _run
            from shop import make_app
            code = _run(make_app(self.config), self.sock, self.config, self.balance.slot(slot), slot,
                        self.first_cpu)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def stop(self, signum, frame):
        """Ask every worker to finish; any still running after 10 s is killed."""
        self._signal_workers(signal.SIGTERM)
        signal.alarm(10)

    def kill(self, signum, frame):
        self._signal_workers(signal.SIGKILL)

    def _signal_workers(self, sig):
        self.stopping = True
        for pid in list(self.workers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


class Balance:
    """Keeps the workers' shares of open connections within one of each other.

    With one listening socket, the kernel gives each new connection to whichever worker accepts first, so a
    burst of them (a proxy's or a load generator's keep-alive pool) can land on one worker and stay there
    while the others idle. Each worker publishes its number of connections in shared memory once per turn
    of its event loop, and leaves the listening socket to the others while it has more than the least
    busy live one. A worker that has not published for 2 s (stuck or gone) does not count.
    """

    STALE = 2.0

    def __init__(self, workers):
        self.n = workers
        self.shared = mmap.mmap(-1, 16 * workers)  # per slot: connections (q), last update (d); kept by fork()

    def reset(self, slot):
        struct.pack_into("qd", self.shared, 16 * slot, 0, 0.0)

    def slot(self, slot):
        return _BalancedSlot(self, slot)


class _BalancedSlot:
    def __init__(self, balance, slot):
        self.balance, self.slot = balance, slot

    def attach(self, server):
        """Wrap the waitress server's readable(): asyncore asks it every turn whether to watch the socket."""
        shared, stale, entry = self.balance.shared, self.balance.STALE, struct.Struct("qd")
        mine_at = 16 * self.slot
        others_at = [16 * j for j in range(self.balance.n) if j != self.slot]
        readable = server.readable

        def balanced():
            accepting = readable()  # also waitress's own housekeeping: always called
            now = time.monotonic()
            mine = len(server._map)  # this worker's connections, plus its listening socket and trigger
            entry.pack_into(shared, mine_at, mine, now)
            if not accepting:
                return False
            for at in others_at:
                count, seen = entry.unpack_from(shared, at)
                if count < mine and now - seen < stale:
                    return False  # a live worker with fewer connections takes the next one
            return True

        server.readable = balanced


def place(config, slot=0, first=None):
    """Pin this server process as PIN_CPUS says (`auto`: pin_to_cpu; `off`: leave it); returns the CPU or None."""
    return pin_to_cpu(slot, config.workers, first) if config.pin_cpus == "auto" else None


def pin_to_cpu(slot, workers, first=None):
    """Run this process, every thread of it, on one CPU; returns the CPU, or None when nothing was changed.

    The GIL holds a process's Python to one core's worth of work anyway, and its threads hand the GIL over at
    every system call. Between threads on two cores, each handover waits for the other core to wake a
    thread: on 2 cores a pinned worker served GET / about 1.5 times as fast and took a webhook in 1.6
    instead of 2.5 ms of CPU (bench/run.py). Worker `slot` takes the slot-th CPU after `first` (the CPU the
    shop started on, so that shops started side by side spread out) among those this process may use.
    Each pinned thread also runs under SCHED_BATCH (_no_wakeup_preemption).
    Nothing is pinned with one usable CPU, more workers than CPUs, a CPU quota (a container that shares the
    host's CPUs with others: the kernel had better move it), or no affinity call on this system.
    """
    if not hasattr(os, "sched_setaffinity") or cpu_quota():
        return None
    try:
        allowed = sorted(os.sched_getaffinity(0))  # a container's or taskset's limits are respected
    except OSError:
        return None
    if len(allowed) < 2 or workers > len(allowed):
        return None
    first = current_cpu() if first is None else first
    start = allowed.index(first) if first in allowed else 0
    cpu = allowed[(start + slot) % len(allowed)]
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]  # the calling thread sets only its own
    except OSError:
        threads = [threading.get_native_id()]
    pinned = 0
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
            pinned += 1
        except OSError:  # a thread that ended meanwhile, or a sandbox that forbids it
            continue
        _no_wakeup_preemption(tid)
    return cpu if pinned else None


def _no_wakeup_preemption(tid):
    """Put a pinned thread under SCHED_BATCH; threads it starts later inherit it (man 7 sched).

    With a worker's threads on one CPU, a thread woken there (handed the GIL, or the I/O thread woken by
    a new request) used to preempt the running one at once, only to find the GIL taken and sleep again:
    a context switch that did no work. Under SCHED_BATCH the woken thread waits until the running one
    blocks. GET / on one worker went from 86 to 69 µs of CPU per request (bench/run.py).
    """
    try:
        os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a sandbox that forbids it: pinned is still better
        pass


def cpu_quota(root="/"):
    """True when this process's cgroup caps its CPU time (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`)."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.split(":", 2)  # hierarchy-id:controllers:path (man 7 cgroups)
        if len(parts) != 3:
            continue
        controllers, path = parts[1], parts[2].lstrip("/")
        if controllers == "":  # cgroup v2: "max 100000" when unlimited
            names = [os.path.join(root, "sys/fs/cgroup", path, "cpu.max")]
        elif "cpu" in controllers.split(","):  # v1: -1 when unlimited
            names = [os.path.join(root, "sys/fs/cgroup", mount, path, "cpu.cfs_quota_us")
                     for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
        else:
            continue
        for name in names:
            try:
                with open(name) as f:
                    limit = f.read().split()[0]
            except (OSError, IndexError):
                continue
            if limit not in ("max", "-1"):
                return True
    return False


def current_cpu():
    """The CPU this thread last ran on (Linux /proc), or None."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[36])  # field 39, "processor"; man 5 proc
    except (OSError, ValueError, IndexError):
        return None


def stop_on_signal(signum, frame):
    """A signal handler that stops the server the way Ctrl-C does."""
    raise KeyboardInterrupt


def _watch_parent(parent):
    """A worker never outlives the process that started it (it would keep the port answering)."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def _describe(status):
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}; starting another"
    return f"exited with code {os.waitstatus_to_exitcode(status)}; starting another"
