"""`python shop.py --workers N`: N processes on one listening socket, each reloading the catalog and sharing the
ledger; a dead worker is replaced and no worker outlives the shop. Real processes on loopback, no timing."""

import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlencode

import pytest

from ledger import Ledger
from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SID = "workersworkersworkersworkers0001"


def request(port, method="GET", path="/", body=None, headers=None):
    """(status, text) over a fresh connection, so the kernel may hand it to any worker."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def shop_server(tmp_path, workers=2, catalog=None, cpus=None, **env_extra):
    """`python shop.py --workers N` in offline mode on a private DATA_DIR and a free port (on `cpus` only, if
    given, as `taskset` would start it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", BASE_URL="",
               DATA_DIR=str(tmp_path / "data"), CATALOG=str(catalog or ROOT / "catalog.json"), **env_extra)
    log = open(tmp_path / "shop.log", "wb")
    proc = subprocess.Popen([sys.executable, "shop.py", "--port", str(port), "--workers", str(workers)],
                            cwd=ROOT, env=env, stdout=log, stderr=log,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    serving = workers if workers > 1 else 0  # one worker: the shop's own process serves
    try:
        wait_for(lambda: len(children(proc.pid)) == serving and _answers(port), "the workers to answer")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in children(proc.pid) + [proc.pid]:
                    os.kill(pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def _answers(port, path="/healthz"):
    try:
        return request(port, path=path)[0] == 200
    except OSError:
        return False


@contextmanager
def paused(pid):
    """Only the other workers can accept while this one is stopped."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_two_workers_each_accept_on_the_shared_socket(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        first, second = children(proc.pid)
        assert proc.pid not in (first, second)
        for stopped in (first, second):  # each worker alone serves every request
            with paused(stopped):
                assert [request(port)[0] for _ in range(10)] == [200] * 10


def open_sockets(pid):
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_a_burst_of_keep_alive_connections_is_shared_between_the_workers(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        workers = children(proc.pid)

        def settled():  # the start-up checks' connections are closed on the server side too
            first = [open_sockets(w) for w in workers]
            time.sleep(0.1)
            return first if first == [open_sockets(w) for w in workers] else None

        before = wait_for(settled, "idle workers")
        held = []
        try:
            for _ in range(16):  # a proxy's keep-alive pool: opened at once, then kept
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                held.append(conn)
            for conn in held:
                assert conn.getresponse().read() == b"ok\n"
            shares = [open_sockets(w) - b for w, b in zip(workers, before)]
            assert sum(shares) == 16 and max(shares) - min(shares) <= 2, shares
        finally:
            for conn in held:
                conn.close()


def test_every_worker_reloads_an_edited_catalog(tmp_path):
    catalog = tmp_path / "catalog.json"
    shutil.copy(ROOT / "catalog.json", catalog)
    with shop_server(tmp_path, catalog=catalog) as (proc, port):
        workers = children(proc.pid)
        for _ in range(10):
            assert "A Brand New Title" not in request(port)[1]
        data = json.loads(catalog.read_text())
        data["products"][0]["name"] = "A Brand New Title"
        catalog.write_text(json.dumps(data))
        os.utime(catalog, ns=(1, 2_000_000_000_000_000_000))
        time.sleep(1.2)  # each worker looks at the file at most once a second (CATALOG_CHECK_SECONDS)
        for other in workers:
            with paused(other):
                assert all("A Brand New Title" in request(port)[1] for _ in range(5))


def test_workers_share_the_ledger_without_losing_an_order(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        statuses = []

        def shopper(n):
            for i in range(6):  # 48 browsers (a browser's new checkout would expire its open one)
                sid = f"{SID[:-4]}{n}{i:03d}"
                token = _CSRF.search(request(port, headers={"Cookie": f"sid={sid}"})[1])[1]
                body = urlencode({"csrf_token": token, "product_id": "walden", "quantity": "1"})
                headers = {"Cookie": f"sid={sid}", "Content-Type": "application/x-www-form-urlencoded"}
                statuses.append(request(port, "POST", "/checkout", body, headers)[0])

        threads = [threading.Thread(target=shopper, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [303] * 48
    ledger = Ledger(tmp_path / "data" / "shop.sqlite3")
    orders = ledger.list(limit=100)
    assert len(orders) == 48 and len({o["session_id"] for o in orders}) == 48
    assert all(o["status"] == "open" and o["session_id"] for o in orders)
    ledger.close()
    db = sqlite3.connect(tmp_path / "data" / "standin.sqlite3")
    assert db.execute("SELECT count(*) FROM objects WHERE type = 'checkout.session'").fetchone()[0] == 48
    db.close()


def test_a_dead_worker_is_replaced(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        victim, survivor = children(proc.pid)
        os.kill(victim, signal.SIGKILL)

        def replaced():
            workers = children(proc.pid)
            return workers if len(workers) == 2 and victim not in workers else None

        workers = wait_for(replaced, "a new worker")
        assert survivor in workers
        with paused(survivor):  # the new one serves on its own
            assert request(port)[0] == 200
        assert "was killed by signal 9; starting another" in (tmp_path / "shop.log").read_text()


def test_stopping_the_shop_stops_every_worker(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        workers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        wait_for(lambda: not any(alive(w) for w in workers), "the workers to exit")


def test_workers_do_not_outlive_a_killed_shop(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        workers = children(proc.pid)
        proc.kill()
        proc.wait(5)
        wait_for(lambda: not any(alive(w) for w in workers), "orphaned workers to exit")
        with pytest.raises(OSError):
            request(port)


def test_one_worker_is_the_default(tmp_path):
    from settings import load_config
    assert load_config(environ={}).workers == 1


def policies(pid):
    """The scheduling policy of each thread of a process, as a set (os.SCHED_OTHER, os.SCHED_BATCH, ...)."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add(os.sched_getscheduler(int(tid)))
        except OSError:  # the thread ended
            pass
    return found


def placement(pid):
    """The set of CPUs each thread of a process may run on, one frozenset per distinct set."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add(frozenset(os.sched_getaffinity(int(tid))))
        except OSError:  # the thread ended
            pass
    return found


USABLE = sorted(os.sched_getaffinity(0))
STARTED_WITH = os.sched_getscheduler(0)  # the policy a shop started by these tests begins with (as a rule OTHER)
two_cpus = pytest.mark.skipif(len(USABLE) < 2, reason="pinning needs at least 2 usable CPUs")


@two_cpus
def test_each_worker_runs_every_thread_on_a_cpu_of_its_own(tmp_path):
    with shop_server(tmp_path) as (proc, port):
        request(port)  # the workers' request threads exist now
        first, second = (placement(pid) for pid in children(proc.pid))
        assert len(first) == len(second) == 1, (first, second)
        (a,), (b,) = first, second
        assert len(a) == len(b) == 1 and a != b and a | b <= set(USABLE)
        assert placement(proc.pid) == {frozenset(USABLE)}  # the supervising process stays where it was
        # every thread of a pinned worker, the request threads waitress started after pinning included
        assert all(policies(pid) == {os.SCHED_BATCH} for pid in children(proc.pid))
        assert policies(proc.pid) == {STARTED_WITH}  # the supervising process keeps the policy it started with
    assert b"runs on CPU" in (tmp_path / "shop.log").read_bytes()


@two_cpus
def test_a_single_worker_is_pinned_too(tmp_path):
    with shop_server(tmp_path, workers=1) as (proc, port):
        request(port)
        (cpus,) = placement(proc.pid)
        assert len(cpus) == 1 and cpus <= set(USABLE)
        assert policies(proc.pid) == {os.SCHED_BATCH}


@two_cpus
def test_pin_cpus_off_leaves_the_workers_to_the_kernel(tmp_path):
    with shop_server(tmp_path, PIN_CPUS="off") as (proc, port):
        request(port)
        assert all(placement(pid) == {frozenset(USABLE)} for pid in children(proc.pid))
        assert all(policies(pid) == {STARTED_WITH} for pid in children(proc.pid))


@two_cpus
def test_more_workers_than_cpus_are_not_pinned(tmp_path):
    two = set(USABLE[:2])
    with shop_server(tmp_path, workers=3, cpus=two) as (proc, port):
        request(port)
        assert all(placement(pid) == {frozenset(two)} for pid in children(proc.pid))


def test_pin_cpus_takes_auto_or_off():
    from settings import ConfigError, load_config
    assert load_config(environ={}).pin_cpus == "auto"
    assert load_config(environ={"PIN_CPUS": " off "}).pin_cpus == "off"
    assert load_config(environ={"PIN_CPUS": "OFF"}).pin_cpus == "off"
    with pytest.raises(ConfigError, match="PIN_CPUS: must be auto or off, got 'yes'"):
        load_config(environ={"PIN_CPUS": "yes"})


@two_cpus
@pytest.mark.parametrize("slot", [0, 1])
def test_workers_are_placed_from_the_cpu_the_shop_started_on(slot):
    first = USABLE[-1]  # the last usable CPU: slot 1 wraps round to the first
    code = ("import os, workers; cpu = workers.pin_to_cpu(%d, 2, first=%d); "
            "print(cpu, sorted(os.sched_getaffinity(0)))" % (slot, first))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    expected = USABLE[(len(USABLE) - 1 + slot) % len(USABLE)]
    assert out.split(" ", 1) == [str(expected), f"[{expected}]\n"]


def fake_root(tmp_path, cgroup, files):
    """A directory laid out like / for workers.cpu_quota: /proc/self/cgroup and cgroup files."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("cgroup, files, limited", [
    ("0::/kubepods/pod1/c1\n", {"sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "200000 100000\n"}, True),
    ("0::/user.slice\n", {"sys/fs/cgroup/user.slice/cpu.max": "max 100000\n"}, False),
    ("0::/\n", {}, False),  # the root cgroup has no cpu.max
    ("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
     {"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n"}, True),
    ("3:cpu:/docker/abc\n", {"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us": "-1\n"}, False),
    ("3:memory:/limited\n", {"sys/fs/cgroup/memory/limited/cpu.cfs_quota_us": "100000\n"}, False),
    ("garbage\n0::/a\n", {"sys/fs/cgroup/a/cpu.max": "50000 100000"}, True),
], ids=["v2 quota", "v2 max", "v2 root", "v1 quota", "v1 unlimited", "not the cpu controller", "odd line"])
def test_a_cpu_quota_is_read_from_the_process_cgroup(tmp_path, cgroup, files, limited):
    from workers import cpu_quota
    assert cpu_quota(fake_root(tmp_path, cgroup, files)) is limited


def test_no_cgroup_information_means_no_quota(tmp_path):
    from workers import cpu_quota
    assert cpu_quota(str(tmp_path)) is False


@two_cpus
def test_a_process_under_a_cpu_quota_is_not_pinned():
    code = ("import os, workers; workers.cpu_quota = lambda: True; "
            "print(workers.pin_to_cpu(0, 1), len(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", str(len(USABLE))]
