"""Writers of one SQLite file take turns: the threads of a process, then the processes, without SQLite's sleeps."""

import fcntl
import os
import threading

_WRITERS = {}
_WRITERS_LOCK = threading.Lock()


def writer_lock(path):
    """One lock per database file in this process: its threads take turns to write; then one across processes.

    Without it, writers that find the file locked sleep in SQLite's busy handler (1, 2, 5, 10 ... 100 ms)
    even after the lock is free; these locks hand over at once. With --workers N every worker writes to
    the one file, and the busy handler's sleeps were most of a webhook's time (bench/run.py figure 6).
    The ledger (db.py) and the offline stand-in (standin/store.py) both take their turns here.
    """
    key = os.path.realpath(path)
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(key, _WriterLock(key + "-writer"))


class _WriterLock:
    """A thread lock, then flock() on a file beside the database, so writers of every process take turns.

    The lock file is opened anew in each process: a descriptor inherited across fork() would share its
    flock with the parent and siblings, and exclude nothing."""

    def __init__(self, path):
        self.path = path
        self._threads = threading.RLock()
        self._depth = 0  # re-entries by the thread holding the lock: flock once, at the outermost
        self._fd, self._pid = None, None

    def acquire(self):
        self._threads.acquire()
        if self._depth == 0:
            try:
                if self._pid != os.getpid():
                    self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600), os.getpid()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1

    def release(self):
        self._depth -= 1
        try:
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()
