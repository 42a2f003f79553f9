"""SQLite persistence for the stand-in: JSON objects by id, idempotency records, and the webhook outbox."""
import json
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, created INTEGER NOT NULL,
    due_at REAL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS objects_type_created ON objects(type, created);
CREATE INDEX IF NOT EXISTS objects_due_at ON objects(due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL, body TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, lease_owner TEXT, lease_until REAL,
    last_status INTEGER, last_error TEXT, delivered_at REAL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt);
"""
# Stripe keeps idempotency keys for at least 24 hours: https://docs.stripe.com/api/idempotent_requests
IDEMPOTENCY_TTL = 24 * 3600
# How long a writer of another process waits for the file before SQLite gives up with "database is locked".
BUSY_TIMEOUT_MS = 30_000


class Tx:
    """One short transaction's view of the store."""

    def __init__(self, conn):
        self.conn = conn

    def get(self, id_, type_=None):
        """The stored object (with internal `_` fields) or None."""
        row = self.conn.execute("SELECT type, data FROM objects WHERE id = ?", (id_,)).fetchone()
        if row is None or (type_ is not None and row[0] != type_):
            return None
        return json.loads(row[1])

    def put(self, obj):
        """Insert or replace an object; those that need attention later are indexed by when: an open session's
        expiry or a delayed payment's settlement, an active promotion code's expires_at, a valid coupon's
        redeem_by."""
        due = None
        kind = obj["object"]
        if kind == "checkout.session":
            due = obj["expires_at"] if obj["status"] == "open" else obj.get("_settle_at")
        elif kind == "promotion_code":
            due = obj["expires_at"] if obj["active"] else None
        elif kind == "coupon":
            due = obj["redeem_by"] if obj["valid"] else None
        self.conn.execute(
            "INSERT INTO objects(id, type, created, due_at, data) VALUES (?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET due_at = excluded.due_at, data = excluded.data",
            (obj["id"], obj["object"], obj["created"], due, json.dumps(obj, separators=(",", ":"))))
        return obj

    def due(self, now):
        """Ids of objects whose time has come (see `put`)."""
        rows = self.conn.execute("SELECT id FROM objects WHERE due_at IS NOT NULL AND due_at <= ?", (now,))
        return [r[0] for r in rows]

    def list(self, type_, limit, starting_after=None, ending_before=None, where=(), created=None):
        """Newest first, Stripe-style cursor pagination; returns (objects, has_more). `where` = [(json_path, value)]."""
        sql, args = ["SELECT data FROM objects WHERE type = ?"], [type_]
        for json_path, value in where:
            if isinstance(value, list):  # any of these; a trailing `*` matches a prefix (event types)
                sql.append("AND (" + " OR ".join(f"json_extract(data, '$.{json_path}') " + (
                    "GLOB ?" if v.endswith("*") else "= ?") for v in value) + ")")
                args += [re.sub(r"([*?\[])", r"[\1]", v[:-1]) + "*" if v.endswith("*") else v for v in value]
                continue
            sql.append(f"AND json_extract(data, '$.{json_path}') = ?")
            args.append(value)
        for op, value in (created or {}).items():
            sql.append({"gt": "AND created > ?", "gte": "AND created >= ?", "lt": "AND created < ?",
                        "lte": "AND created <= ?", "eq": "AND created = ?"}[op])
            args.append(value)
        order = "DESC"
        for cursor, cmp in ((starting_after, "<"), (ending_before, ">")):
            if cursor:
                row = self.conn.execute("SELECT created, rowid FROM objects WHERE id = ? AND type = ?",
                                        (cursor, type_)).fetchone()
                if row is None:
                    return None, False
                sql.append(f"AND (created {cmp} ? OR (created = ? AND rowid {cmp} ?))")
                args += [row[0], row[0], row[1]]
                if cmp == ">":
                    order = "ASC"
        sql.append(f"ORDER BY created {order}, rowid {order} LIMIT ?")
        args.append(limit + 1)
        rows = [json.loads(r[0]) for r in self.conn.execute(" ".join(sql), args)]
        has_more = len(rows) > limit
        rows = rows[:limit]
        if order == "ASC":
            rows.reverse()
        return rows, has_more

    def idem_get(self, key):
        """(endpoint, fingerprint, status, body) stored for an idempotency key, or None."""
        return self.conn.execute("SELECT endpoint, fingerprint, status, body FROM idempotency WHERE key = ?",
                                 (key,)).fetchone()

    def idem_put(self, key, endpoint, fingerprint, status, body):
        now = time.time()
        self.conn.execute("DELETE FROM idempotency WHERE created < ?", (now - IDEMPOTENCY_TTL,))
        self.conn.execute("INSERT OR REPLACE INTO idempotency VALUES (?,?,?,?,?,?)",
                          (key, endpoint, fingerprint, status, body, now))

    def enqueue(self, event_id, due):
        """Add an event to the webhook outbox."""
        self.conn.execute("INSERT INTO outbox(event_id, next_attempt) VALUES (?, ?)", (event_id, due))


class Store:
    """Thread- and process-safe access to `<data_dir>/standin.sqlite3` (WAL, busy timeout, short transactions).

    Writers take turns in two ways, both SQLite's own or the process's: `BEGIN IMMEDIATE` takes the file's write
    lock up front, and a writer of another process (a second shop worker, `python -m standin`) that finds it taken
    waits in SQLite's busy handler for up to BUSY_TIMEOUT_MS. This process's writers queue on a thread lock first,
    which hands over as soon as it is free, instead of sleeping in the busy handler (1, 2, 5 ... 100 ms) after the
    file is free again."""

    def __init__(self, data_dir):
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, "standin.sqlite3")
        # It holds the shoppers' emails, addresses and phones, as the shop's ledger does: the user's only.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._local = threading.local()
        self._all = []  # (thread, its connection)
        self._lock = threading.Lock()
        self._writer = threading.Lock()  # held for the length of one write transaction of this process
        self._conn().executescript(SCHEMA)

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            deadline = time.monotonic() + 5
            while True:  # switching to WAL skips the busy handler: processes opening a new file at once take turns
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:  # a server with a thread per connection ends threads: their files are closed here
                ended = [c for t, c in self._all if not t.is_alive()]
                self._all = [(t, c) for t, c in self._all if t.is_alive()] + [(threading.current_thread(), conn)]
            for c in ended:
                c.close()
        return conn

    @contextmanager
    def tx(self, write=False):
        """A transaction: `BEGIN IMMEDIATE` for writes so concurrent writers queue instead of failing."""
        conn = self._conn()
        if conn.in_transaction:  # one connection a thread: a nested tx() would wait for itself on the writer lock
            raise RuntimeError("a stand-in transaction is already open in this thread")
        if write:
            self._writer.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Tx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (a failed COMMIT, a full disk)
                    conn.execute("ROLLBACK")
                raise
        finally:
            if write:
                self._writer.release()

    def close(self):
        """Close every connection this store opened."""
        with self._lock:
            conns, self._all = self._all, []
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
