"""The order ledger: every checkout is an order row in SQLite before Stripe hears of it."""

import json
import secrets
import time
from datetime import datetime, timezone

from db import Database

# Each entry moves the schema one version up; PRAGMA user_version records how far a file has come.
MIGRATIONS = (
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        currency TEXT NOT NULL,
        items TEXT NOT NULL,               -- JSON: [{product_id, name, unit_amount, quantity}]
        amount_subtotal INTEGER NOT NULL,
        amount_shipping INTEGER,
        amount_tax INTEGER,
        amount_total INTEGER,
        amount_refunded INTEGER NOT NULL DEFAULT 0,
        session_id TEXT UNIQUE,
        session_url TEXT,
        payment_intent TEXT,
        customer_email TEXT,
        browser TEXT,                      -- the shopper's browser token, to offer "continue your payment"
        dispute_status TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        fulfilled_at TEXT
    );
    CREATE INDEX orders_status ON orders(status, created);
    CREATE INDEX orders_browser ON orders(browser, created);
    CREATE TABLE order_history (
        order_id TEXT NOT NULL REFERENCES orders(id),
        at TEXT NOT NULL,
        source TEXT NOT NULL,              -- checkout, success page, webhook evt_..., reconcile, cli
        status TEXT NOT NULL,
        note TEXT
    );
    CREATE INDEX order_history_order ON order_history(order_id, at);
    CREATE TABLE webhook_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        order_id TEXT,
        received TEXT NOT NULL
    );
    """,
    # Charge and dispute events name the PaymentIntent, not the session; the session's expires_at hides
    # a stale "continue your payment" link.
    """
    CREATE INDEX orders_payment_intent ON orders(payment_intent);
    ALTER TABLE orders ADD COLUMN session_expires_at INTEGER
    """,
    # Where a reader of a file has got to (recover() in fulfilment.py), as JSON.
    """
    CREATE TABLE checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # reconcile forgets old webhook event ids by when they came.
    """
    CREATE INDEX webhook_events_received ON webhook_events(received)
    """,
)

SESSION_LIFETIME = 24 * 3600
STATUSES = ("open", "checkout_failed", "awaiting_payment", "paid", "payment_failed",
            "expired", "refunded", "partially_refunded", "disputed")
REFUNDABLE = ("paid", "partially_refunded")  # an order that has money left to refund
DISPUTE_FINAL = ("won", "lost", "warning_closed")  # a dispute status that never changes again


def iso_utc(seconds):
    """A Unix time as the ledger writes times: ISO-8601 UTC with microseconds (they sort as text)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow():
    """The current time as the ledger writes times."""
    return iso_utc(time.time())


def new_order_id():
    """A random, unguessable order id."""
    return "ord_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")


class Ledger(Database):
    """SQLite order storage in DATA_DIR; one connection per thread, WAL, short transactions."""

    def __init__(self, path):
        super().__init__(path, MIGRATIONS)

    # -- orders -----------------------------------------------------------------------------

    def create_order(self, currency, items, browser=None):
        """Record a new `open` order from catalog-priced items; returns its id."""
        order_id = new_order_id()
        now = utcnow()
        subtotal = sum(i["unit_amount"] * i["quantity"] for i in items)
        with self.write() as db:
            db.execute(
                "INSERT INTO orders (id, status, currency, items, amount_subtotal, browser, created, updated)"
                " VALUES (?, 'open', ?, ?, ?, ?, ?, ?)",
                (order_id, currency, json.dumps(items), subtotal, browser, now, now))
            self._history(db, order_id, "checkout", "open", f"{len(items)} line(s)")
        return order_id

    def get(self, order_id):
        """One order as a dict, or None."""
        row = self.connect().execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return _order(row)

    def by_session(self, session_id):
        """The order for a Checkout Session id, or None."""
        row = self.connect().execute("SELECT * FROM orders WHERE session_id = ?", (session_id,)).fetchone()
        return _order(row)

    def list(self, status=None, limit=50, since=None):
        """Recent orders, newest first."""
        sql, args = "SELECT * FROM orders WHERE 1=1", []
        if status:
            sql += " AND status = ?"
            args.append(status)
        if since:
            sql += " AND created >= ?"
            args.append(since)
        sql += " ORDER BY created DESC, id LIMIT ?"
        args.append(limit)
        return [_order(r) for r in self.connect().execute(sql, args)]

    def by_payment_intent(self, payment_intent):
        """The order paid by a PaymentIntent id (charge and dispute events name it), or None."""
        if not payment_intent:
            return None
        row = self.connect().execute("SELECT * FROM orders WHERE payment_intent = ?", (payment_intent,)).fetchone()
        return _order(row)

    def open_checkout_for(self, browser, now=None):
        """The newest order of this browser still waiting on an open, unexpired Checkout Session."""
        if not browser:
            return None
        now = int(time.time() if now is None else now)
        # Sessions last 24 hours unless created with expires_at: https://docs.stripe.com/api/checkout/sessions/create
        day_ago = iso_utc(now - SESSION_LIFETIME)
        row = self.connect().execute(
            "SELECT * FROM orders WHERE browser = ? AND status = 'open' AND session_id IS NOT NULL"
            " AND COALESCE(session_expires_at > ?, created > ?) ORDER BY created DESC LIMIT 1",
            (browser, now, day_ago)).fetchone()
        return _order(row)

    def history(self, order_id):
        """The order's recorded changes, oldest first."""
        return [dict(r) for r in self.connect().execute(
            "SELECT at, source, status, note FROM order_history WHERE order_id = ? ORDER BY rowid",
            (order_id,))]

    def attach_session(self, order_id, session_id, session_url, expires_at=None):
        """Tie an order to the Checkout Session created for it."""
        with self.write() as db:
            db.execute("UPDATE orders SET session_id = ?, session_url = ?, session_expires_at = ?, updated = ?"
                       " WHERE id = ?", (session_id, session_url, expires_at, utcnow(), order_id))
            self._history(db, order_id, "checkout", "open", f"session {session_id}")

    def transition(self, order_id, allowed_from, to_status, source, note=None, **fields):
        """Move an order to `to_status` only from one of `allowed_from`, atomically; True if it moved."""
        sets = ["status = ?", "updated = ?"] + [f"{k} = ?" for k in fields]
        args = [to_status, utcnow(), *fields.values(), order_id, *allowed_from]
        marks = ",".join("?" * len(allowed_from))
        with self.write() as db:
            cur = db.execute(f"UPDATE orders SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})", args)
            if cur.rowcount:
                self._history(db, order_id, source, to_status, note)
            return cur.rowcount == 1

    def update_fields(self, order_id, **fields):
        """Set plain fields on an order (amounts, email) without changing its status."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as db:
            db.execute(f"UPDATE orders SET {sets}, updated = ? WHERE id = ?",
                       (*fields.values(), utcnow(), order_id))

    # -- after payment: refunds, disputes, webhook bookkeeping -------------------------------------

    def apply_refund(self, order_id, amount_refunded, amount_charged, source, note=None):
        """Record the charge's cumulative refunded amount; a paid order becomes (partially_)refunded."""
        with self.write() as db:  # BEGIN IMMEDIATE: the read below cannot go stale before the write
            row = db.execute("SELECT status, amount_refunded FROM orders WHERE id = ?", (order_id,)).fetchone()
            # Refund events may arrive out of order; each carries the charge's running total, so keep the largest.
            amount = max(row["amount_refunded"], amount_refunded)
            status = row["status"]
            if status in ("paid", "partially_refunded", "refunded") and amount > 0:
                status = "refunded" if amount >= amount_charged or status == "refunded" else "partially_refunded"
            if (status, amount) == (row["status"], row["amount_refunded"]):
                return False
            db.execute("UPDATE orders SET status = ?, amount_refunded = ?, updated = ? WHERE id = ?",
                       (status, amount, utcnow(), order_id))
            self._history(db, order_id, source, status, note)
            return True

    def apply_dispute(self, order_id, dispute_status, source, note=None):
        """Mark a paid order disputed and keep the dispute's status; a closed dispute's outcome is never undone."""
        with self.write() as db:
            row = db.execute("SELECT status, dispute_status FROM orders WHERE id = ?", (order_id,)).fetchone()
            status = "disputed" if row["status"] in ("paid", "partially_refunded", "refunded") else row["status"]
            # dispute.created may arrive after dispute.closed: https://docs.stripe.com/webhooks#event-ordering
            outcome = row["dispute_status"] if row["dispute_status"] in DISPUTE_FINAL else dispute_status
            if (status, outcome) == (row["status"], row["dispute_status"]):
                return False
            db.execute("UPDATE orders SET status = ?, dispute_status = ?, updated = ? WHERE id = ?",
                       (status, outcome, utcnow(), order_id))
            self._history(db, order_id, source, status, note)
            return True

    def open_disputes(self):
        """Disputed orders whose dispute has no final outcome yet."""
        rows = self.connect().execute(
            "SELECT * FROM orders WHERE status = 'disputed' AND payment_intent IS NOT NULL"
            f" AND (dispute_status IS NULL OR dispute_status NOT IN ({','.join('?' * len(DISPUTE_FINAL))}))",
            DISPUTE_FINAL).fetchall()
        return [_order(r) for r in rows]

    def seen_event(self, event_id):
        """True when this webhook event was already handled."""
        return self.connect().execute("SELECT 1 FROM webhook_events WHERE id = ?", (event_id,)).fetchone() is not None

    def record_event(self, event_id, event_type, order_id=None, note=None):
        """Mark an event handled (once); with a note, also add it to the order's history. True if new."""
        with self.write() as db:
            new = self.note_event(db, event_id, event_type, order_id)
            if new and order_id and note:
                status = db.execute("SELECT status FROM orders WHERE id = ?", (order_id,)).fetchone()[0]
                self._history(db, order_id, f"webhook {event_id} {event_type}", status, note)
            return new

    @staticmethod
    def note_event(db, event_id, event_type, order_id=None):
        """Inside a write transaction: mark an event handled (once). True if new."""
        cur = db.execute("INSERT OR IGNORE INTO webhook_events (id, type, order_id, received) VALUES (?, ?, ?, ?)",
                         (event_id, event_type, order_id, utcnow()))
        return cur.rowcount == 1

    def forget_events(self, days):
        """Drop the ids of webhook events received more than `days` ago; returns how many."""
        with self.write() as db:
            return db.execute("DELETE FROM webhook_events WHERE received < ?",
                              (iso_utc(time.time() - days * 86400),)).rowcount

    def checkpoint(self, name):
        """The value last saved under `name`, or None."""
        row = self.connect().execute("SELECT value FROM checkpoints WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_checkpoint(self, name, value):
        """Save a JSON value under `name`."""
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO checkpoints (name, value) VALUES (?, ?)", (name, json.dumps(value)))

    def _history(self, db, order_id, source, status, note=None):
        db.execute("INSERT INTO order_history (order_id, at, source, status, note) VALUES (?, ?, ?, ?, ?)",
                   (order_id, utcnow(), source, status, note))

    def ping(self):
        """Raise if the database cannot be read."""
        self.connect().execute("SELECT 1 FROM orders LIMIT 1").fetchall()


def _order(row):
    if row is None:
        return None
    order = dict(row)
    order["items"] = json.loads(order["items"])
    return order
