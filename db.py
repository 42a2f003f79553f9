"""The SQLite file behind the ledger: one connection per thread, WAL, writers in turn, schema migrations."""

import sqlite3
import threading
import time

from writerlock import writer_lock


class Database:
    """A SQLite file in DATA_DIR with its schema kept at the newest of `migrations`."""

    def __init__(self, path, migrations):
        self.path = str(path)
        self.migrations = migrations
        self._local = threading.local()
        self._writer = writer_lock(self.path)
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
