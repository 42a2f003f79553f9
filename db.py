"""The SQLite file behind the ledger: one connection per thread, WAL, writers in turn, schema migrations."""

import fcntl
import os
import sqlite3
import threading
import time


class Database:
    """A SQLite file in DATA_DIR with its schema kept at the newest of `migrations`."""

    def __init__(self, path, migrations):
        self.path = str(path)
        self.migrations = migrations
        self._local = threading.local()
        self._writer = _writer_lock(self.path)
        self.migrate()

    def connect(self):
        """This thread's connection (created on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
        return db

    def close(self):
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def write(self):
        """A write transaction that takes the lock up front (no read-then-upgrade deadlocks)."""
        return _Tx(self.connect(), self._writer)

    def migrate(self):
        """Bring the file's schema to the newest version."""
        db = self.connect()
        with self.write():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(self.migrations[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def schema_version(self):
        """The schema version recorded in the file."""
        return self.connect().execute("PRAGMA user_version").fetchone()[0]


_WRITERS = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(path):
    """One lock per database file in this process: its threads take turns to write; then one across processes.

    Without it, writers that find the file locked sleep in SQLite's busy handler (1, 2, 5, 10 ... 100 ms)
    even after the lock is free; these locks hand over at once. With --workers N every worker writes to
    the one file, and the busy handler's sleeps were most of a webhook's time (bench/run.py figure 6).
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


class _Tx:
    """`with ledger.write() as db:` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db, writer):
        self.db = db
        self.writer = writer

    def __enter__(self):
        self.writer.acquire()
        try:
            for attempt in range(50):
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                    return self.db
                except sqlite3.OperationalError as e:  # busy beyond busy_timeout under heavy contention
                    if "locked" not in str(e) or attempt == 49:
                        raise
                    time.sleep(0.05)
        except BaseException:
            self.writer.release()
            raise

    def __exit__(self, kind, value, tb):
        try:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.writer.release()
        return False
