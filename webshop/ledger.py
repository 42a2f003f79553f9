"""The order ledger and all the shop's SQL, written once for SQLite (DATA_DIR) and PostgreSQL (DATABASE_URL)."""

import json
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from functools import partialmethod
from datetime import datetime, timezone
from pathlib import Path

from .settings import ConfigError, ShopError

ORDER_ID = re.compile(r"ord_[0-9a-f]{24}")  # an order's id, as start_order makes it

# Each entry moves the schema one version up. Amounts are BIGINT (an event's may be up to CEILING, 10**12).
MIGRATIONS = (
    """CREATE TABLE orders (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, currency TEXT NOT NULL,
        items TEXT NOT NULL,  -- JSON: [{product_id, name, unit_amount, quantity}], priced from the catalog
        amount_subtotal BIGINT NOT NULL, amount_shipping BIGINT, amount_tax BIGINT, amount_total BIGINT,
        amount_refunded BIGINT NOT NULL DEFAULT 0, session_id TEXT UNIQUE, session_url TEXT, payment_intent TEXT,
        customer_email TEXT, browser TEXT, dispute_status TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
        fulfilled_at TEXT);
    CREATE INDEX orders_status ON orders(status, created);
    CREATE INDEX orders_browser ON orders(browser, created);
    CREATE TABLE order_history (order_id TEXT NOT NULL REFERENCES orders(id), at TEXT NOT NULL,
        source TEXT NOT NULL, status TEXT NOT NULL, note TEXT);
    CREATE INDEX order_history_order ON order_history(order_id, at);
    CREATE TABLE webhook_events (id TEXT PRIMARY KEY, type TEXT NOT NULL, order_id TEXT, received TEXT NOT NULL)""",
    """CREATE INDEX orders_payment_intent ON orders(payment_intent);
    ALTER TABLE orders ADD COLUMN session_expires_at BIGINT""",
    "CREATE TABLE checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE INDEX webhook_events_received ON webhook_events(received)",
    # Hand-off records, in the order made; the unique order_id makes a second one impossible on any instance.
    """CREATE TABLE fulfilments (id {serial}, order_id TEXT NOT NULL UNIQUE REFERENCES orders(id),
        record TEXT NOT NULL);
    ALTER TABLE orders ADD COLUMN charged TEXT""",  # JSON: what Stripe charged, for the confirmation page
    # Stock (an order's lines hold copies while it is open, keep them once paid); what Checkout collected beyond pay.
    """CREATE TABLE order_lines (order_id TEXT NOT NULL REFERENCES orders(id), product_id TEXT NOT NULL,
        quantity BIGINT NOT NULL);
    CREATE INDEX order_lines_product ON order_lines(product_id);
    ALTER TABLE orders ADD COLUMN restocked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE orders ADD COLUMN amount_discount BIGINT;
    ALTER TABLE orders ADD COLUMN promotion_code TEXT;
    ALTER TABLE orders ADD COLUMN terms_accepted TEXT;
    ALTER TABLE orders ADD COLUMN tax_ids TEXT""",
    # Emails, stored by the change that causes them (in its transaction) and sent after it, each under a lease.
    """CREATE TABLE outbox (id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(id), kind TEXT NOT NULL,
        amount BIGINT NOT NULL, recipient TEXT NOT NULL, message TEXT NOT NULL, created TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt TEXT NOT NULL, lease_until TEXT, sent_at TEXT,
        last_error TEXT, UNIQUE (order_id, kind, amount));
    CREATE INDEX outbox_due ON outbox(sent_at, next_attempt)""",
    # The client's signed address, kept only while ADDRESS_CHECKOUT_LIMIT is set.
    """ALTER TABLE orders ADD COLUMN client TEXT;
    CREATE INDEX orders_client ON orders(client, created)""",
    # Refunds that failed after they were made: part of a refund's idempotency key, so refunding again is a new one.
    "ALTER TABLE orders ADD COLUMN refund_failures INTEGER NOT NULL DEFAULT 0",
    # and their sum, so that the merchant is told each failure once, with its amount, whoever finds it
    "ALTER TABLE orders ADD COLUMN refunds_failed BIGINT NOT NULL DEFAULT 0",
)

STATUSES = ("open", "checkout_failed", "awaiting_payment", "paid", "payment_failed",
            "expired", "refunded", "partially_refunded", "disputed")
REFUNDABLE = ("paid", "partially_refunded")  # an order that has money left to refund
PAID = ("paid", "partially_refunded", "refunded", "disputed")  # money taken (some of it perhaps given back since)
BOUGHT = ("awaiting_payment", *PAID)  # paid, or paying by bank: its copies are sold, its cart is spent
DISPUTE_FINAL = ("won", "lost", "warning_closed", "prevented")  # a dispute status that never changes again
# An inquiry's: the bank asks before any chargeback, no money is taken, and the payment can still be refunded
# (https://docs.stripe.com/disputes/how-disputes-work; the dispute's is_charge_refundable).
INQUIRY_STATUSES = ("warning_needs_response", "warning_under_review", "warning_closed")
# An open checkout past its expiry keeps its copies until Stripe says it expired unpaid (its event, or reconcile):
# one paid in its last seconds may reach the shop minutes later. An hour on, reconcile has settled it (cron, 15 min).
HOLD_AFTER_EXPIRY = 3600
MAX_MAIL_ATTEMPTS = 25  # then a message waits for `shop.py mail`, listed by `shop.py outbox` as given up


def iso_utc(seconds):
    """A Unix time as the ledger writes times: ISO-8601 UTC with microseconds (they sort as text)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def refundable(order):
    """Whether an order has money left to refund: paid, or its payment only inquired about."""
    inquired = order["status"] == "disputed" and order["dispute_status"] in INQUIRY_STATUSES
    return order["status"] in REFUNDABLE or inquired and (order["amount_total"] or 0) > order["amount_refunded"]


def utcnow():
    return iso_utc(time.time())


class Ledger:
    """Orders, their history, webhook events and hand-off records, in SQLite or PostgreSQL."""

    # notify(what, order, **details) -> the emails an order change causes: [{id, kind, amount, to, message}]
    notify = staticmethod(lambda what, order, **details: [])  # none until Orders sets mail.Notices

    def __init__(self, config):
        self.db = _Postgres(config.database_url) if config.database_url else _SQLite(config.data_dir / "shop.sqlite3")
        self.engine = self.db.engine
        self.migrate()

    def migrate(self):
        """Bring the schema to the newest version; safe when two instances start at once. Returns the version."""
        with self.db.tx() as c:
            self.db.lock(c, "migrations")  # two instances starting at once: the second finds the schema current
            version = self.db.version(c)
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.replace("{serial}", self.db.serial).split(";"):
                    c.execute(statement)
                self.db.set_version(c, number)
            return len(MIGRATIONS)

    def rows(self, sql, *args):
        """What a query finds, as dicts (an order's JSON columns decoded)."""
        with self.db.read() as c:
            return [_row(r) for r in c.execute(sql, args)]

    def one(self, sql, *args):
        return next(iter(self.rows(sql, *args)), None)

    def close(self):
        self.db.close()

    # -- orders -------------------------------------------------------------------------------------------------

    def start_order(self, browser, currency, items, per_minute, stock=None, cap=False, client=None, per_client=None):
        """A new `open` order replacing this browser's open ones: (order id, its items, their sessions, which stay
        open until Stripe has expired them); 429 when more than `per_minute` from the browser, or `per_client` from
        the `client` (None: this click was counted already, or no limit). With `cap`, lines are held to the copies
        left (as the cart page does) instead of refused."""
        order_id, now, since = "ord_" + secrets.token_hex(12), utcnow(), iso_utc(time.time() - 60)  # as ORDER_ID
        with self.db.tx() as c:  # of two clicks at once, the later replaces the earlier (attach_session refuses it)
            self.db.lock(c, browser)
            if client:  # and clicks from one address take turns at counting
                self.db.lock(c, "client:" + client)
            for column, key, limit in (("browser", browser, per_minute), ("client", client, per_client)):
                if limit is None:
                    continue
                recent = c.execute(f"SELECT COUNT(*) AS n FROM orders WHERE {column} = ? AND created > ?",
                                   (key, since)).fetchone()["n"]
                if recent >= limit:
                    raise ShopError(429, "Too many checkouts were started from here in the last minute. Please "
                                         "wait a minute and try again.", detail=f"{recent} checkouts from one {column}",
                                    retry_after=60)
            stale = c.execute("SELECT id, session_id FROM orders WHERE browser = ? AND status = 'open'",
                              (browser,)).fetchall()
            for row in stale:  # a click still waiting for its session: attach_session will refuse it
                if not row["session_id"]:
                    self._move(c, row["id"], ("open",), "expired", "checkout", "replaced by a newer checkout")
            # This browser's open orders are being replaced, so their copies count as its own.
            items = self._reserve(c, items, stock or {}, cap, browser)  # stock: {product id: copies} of limited ones
            c.execute("INSERT INTO orders (id, status, currency, items, amount_subtotal, browser, client, created,"
                      " updated) VALUES (?, 'open', ?, ?, ?, ?, ?, ?, ?)",
                      (order_id, currency, json.dumps(items), sum(i["unit_amount"] * i["quantity"] for i in items),
                       browser, client, now, now))
            for i in items:
                c.execute("INSERT INTO order_lines (order_id, product_id, quantity) VALUES (?, ?, ?)",
                          (order_id, i["product_id"], i["quantity"]))
            _history(c, order_id, "checkout", "open", f"{len(items)} line{'' if len(items) == 1 else 's'}")
        return order_id, items, [row["session_id"] for row in stale if row["session_id"]]

    def _reserve(self, c, items, stock, cap, browser):
        """The items, held to the copies left (`cap`) or refused (409) beyond them; the last copy goes to one
        shopper only."""
        wanted = sorted({i["product_id"] for i in items} & set(stock))
        for product_id in wanted:  # always in this order, so two checkouts can never deadlock
            self.db.lock(c, "stock:" + product_id)
        taken, held = self._taken(c, wanted, browser), []
        for item in items:
            pid = item["product_id"]
            left = max(0, stock[pid] - sum(taken.get(pid, ()))) if pid in stock else item["quantity"]
            if item["quantity"] > left and not cap:
                raise too_few(item["name"], left, held_back(stock[pid], taken.get(pid, (0, 0))))
            if left:
                held.append({**item, "quantity": min(item["quantity"], left)})
        if items and not held:
            pid = items[0]["product_id"]
            raise too_few(items[0]["name"], 0, held_back(stock[pid], taken.get(pid, (0, 0))))
        return held

    def _taken(self, c, product_ids, browser=None):
        """{product id: (copies held by open checkouts, copies sold and not restocked)}; the copies `browser`'s own
        open checkouts hold are not counted: checking out again gives them back first."""
        if not product_ids:
            return {}
        now = int(time.time())
        rows = c.execute(
            "SELECT l.product_id, SUM(CASE WHEN o.status = 'open' AND o.browser = ? THEN 0"
            " WHEN o.status = 'open' THEN l.quantity ELSE 0 END) AS held,"
            " SUM(CASE WHEN o.status = 'open' THEN 0 ELSE l.quantity END) AS sold"
            " FROM order_lines l JOIN orders o ON o.id = l.order_id"
            f" WHERE l.product_id IN ({','.join('?' * len(product_ids))}) AND o.restocked = 0 AND"
            f" (o.status IN ({','.join('?' * len(BOUGHT))}) OR"
            " (o.status = 'open' AND (o.session_expires_at > ? OR (o.session_expires_at IS NULL AND o.created > ?))))"
            " GROUP BY l.product_id", (browser, *product_ids, *BOUGHT, now - HOLD_AFTER_EXPIRY, iso_utc(now - 600)))
        return {r["product_id"]: (int(r["held"]), int(r["sold"])) for r in rows}  # PostgreSQL's SUM is numeric

    def stock_levels(self, product_ids, browser=None):
        """{product id: (copies held by open checkouts, copies bought and not restocked)}, for the pages and `stock`."""
        with self.db.read() as c:
            return self._taken(c, list(product_ids), browser)

    def over_stock(self, stock, closing=()):
        """The sessions of the newest open checkouts that hold copies beyond `stock` ({product id: copies}), as
        after an edit lowered it: closing them keeps the sale to the copies there are. Those in `closing` (being
        closed anyway) hold none. Those past their expiry cannot be closed, and may have been paid in their last
        seconds: they keep their copies, as the stock's sums do. (A click still waiting for its session is looked
        at once it has one.)"""
        now = int(time.time())
        with self.db.read() as c:
            sold = {p: s for p, (_, s) in self._taken(c, sorted(stock)).items()}
            rows = c.execute("SELECT o.session_id, o.session_expires_at, l.product_id, l.quantity FROM orders o JOIN"
                             " order_lines l ON l.order_id = o.id WHERE o.status = 'open' AND o.session_expires_at > ?"
                             " ORDER BY o.created DESC, o.id", (now - HOLD_AFTER_EXPIRY,)).fetchall()
        over, sessions, lapsed = {p: sold.get(p, 0) - copies for p, copies in stock.items()}, {}, set()
        for r in (r for r in rows if r["session_id"] not in closing):
            sessions.setdefault(r["session_id"], []).append((r["product_id"], r["quantity"]))
            if r["session_expires_at"] <= now:
                lapsed.add(r["session_id"])
            if r["product_id"] in over:
                over[r["product_id"]] += r["quantity"]
        closing = []
        for session_id, lines in sessions.items():  # newest first: the first to check out keep their copies
            if session_id not in lapsed and any(over.get(p, 0) > 0 for p, _ in lines):
                closing.append(session_id)
                for p, quantity in lines:
                    if p in over:  # a limited product
                        over[p] -= quantity
        return closing

    def open_checkouts(self):
        """Orders still payable at Stripe (open, with a session not yet expired): id, session, currency and items."""
        return self.rows("SELECT id, session_id, currency, items FROM orders WHERE status = 'open' AND session_id IS"
                         " NOT NULL AND session_expires_at > ?", int(time.time()))

    def restock(self, order_id, source):
        """Give an order's copies back to the stock (a refund the merchant restocks)."""
        with self.db.tx() as c:
            if c.execute("UPDATE orders SET restocked = 1 WHERE id = ? AND restocked = 0", (order_id,)).rowcount:
                _history(c, order_id, source, None, "restocked")
                return True
            return False

    def attach_session(self, order_id, session_id, url, expires_at):
        """Tie an order to its Checkout Session; False when the order is no longer open (a newer click won), None
        when the session is another order's."""
        with self.db.tx() as c:  # after a newer click's start_order (same browser lock), which may have replaced it
            if self.engine != "sqlite":  # SQLite lets one writer in at a time already
                for row in c.execute("SELECT browser FROM orders WHERE id = ?", (order_id,)).fetchall():
                    self.db.lock(c, row["browser"])
            # Stripe never answers two creates with one session; a stand-in of fixed examples (stripe-mock) does.
            if c.execute("SELECT 1 FROM orders WHERE session_id = ? AND id <> ?", (session_id, order_id)).fetchone():
                return None
            return self._move(c, order_id, ("open",), "open", "checkout", f"session {session_id}",
                              session_id=session_id, session_url=url, session_expires_at=expires_at)

    def _find(self, column, value):
        return self.one(f"SELECT * FROM orders WHERE {column} = ?", value) if value else None

    get = partialmethod(_find, "id")
    by_session = partialmethod(_find, "session_id")
    by_payment_intent = partialmethod(_find, "payment_intent")

    def open_checkout_for(self, browser):
        """The newest order of this browser still waiting on an open, unexpired Checkout Session."""
        return self.one("SELECT * FROM orders WHERE browser = ? AND status = 'open' AND session_id IS NOT NULL"
                        " AND session_expires_at > ? ORDER BY created DESC LIMIT 1", browser, int(time.time()))

    def last_checkout(self, browser):
        """The newest order of this browser that was sent to Stripe's payment page."""
        return self.one("SELECT * FROM orders WHERE browser = ? AND session_id IS NOT NULL ORDER BY created DESC"
                        " LIMIT 1", browser)

    def list(self, status=None, limit=50, since=None, before=None, without_session=False, search=None, after_id=None):
        """Orders, newest first, filtered; search: part of an order id or email (any case)."""
        sql, args = "SELECT * FROM orders WHERE 1 = 1", []
        like = search and "%" + "".join("\\" + ch if ch in "%_\\" else ch for ch in search.lower()) + "%"
        for clause, value in (("status = ?", status), ("created >= ?", since), ("created < ?", not after_id and before),
                              ("(id LIKE ? ESCAPE '\\' OR LOWER(customer_email) LIKE ? ESCAPE '\\')", like),
                              ("session_id IS NULL", without_session)):
            if value:
                sql += f" AND {clause}"
                args += [value] * clause.count("?")
        if before and after_id:  # the page after (before, after_id) in this order: none made at that moment skipped
            sql += " AND (created < ? OR (created = ? AND id > ?))"
            args += [before, before, after_id]
        return self.rows(sql + " ORDER BY created DESC, id LIMIT ?", *args, limit)

    def open_disputes(self):
        marks = ",".join("?" * len(DISPUTE_FINAL))
        return self.rows("SELECT * FROM orders WHERE status = 'disputed' AND payment_intent IS NOT NULL AND"
                         f" (dispute_status IS NULL OR dispute_status NOT IN ({marks}))", *DISPUTE_FINAL)

    def history(self, order_id):
        return self.rows("SELECT at, source, status, note FROM order_history WHERE order_id = ? ORDER BY at", order_id)

    def transition(self, order_id, allowed_from, to_status, source, note=None, **fields):
        """Move an order to `to_status` only from one of `allowed_from`, atomically; True if it moved."""
        with self.db.tx() as c:
            return self._move(c, order_id, allowed_from, to_status, source, note, **fields)

    def fulfil(self, order_id, allowed_from, record, charged, source, event=None, **fields):
        """Mark the order paid and store its hand-off record, once: True only for the call that did it."""
        with self.db.tx() as c:  # any other caller, on any instance, finds fulfilled_at set (or the order_id taken)
            if not self._move(c, order_id, allowed_from, "paid", source, "fulfilled", unfulfilled_only=True,
                              fulfilled_at=record["fulfilled_at"], charged=json.dumps(charged), **fields):
                return False
            self._enqueue(c, "paid", order_id, record=record)
            # Records commit in the order of their ids, so a reader resuming after the last id it saw never skips
            # one: on PostgreSQL another instance's lower id could otherwise commit after a higher one.
            self.db.lock(c, "fulfilments")
            c.execute("INSERT INTO fulfilments (order_id, record) VALUES (?, ?)",
                      (order_id, json.dumps(record, sort_keys=True)))
            if event:
                _note_event(c, *event, order_id)
            return True

    def _move(self, c, order_id, allowed_from, to_status, source, note=None, unfulfilled_only=False, **fields):
        """Move the order from a status in `allowed_from` to `to_status`, with its history line (a failed payment
        also queues its email); True if it moved."""
        sets = "".join(f", {k} = COALESCE(?, {k})" for k in fields)  # a value Stripe left out keeps the ledger's
        guard = " AND fulfilled_at IS NULL" if unfulfilled_only else ""
        cur = c.execute(f"UPDATE orders SET status = ?, updated = ?{sets} WHERE id = ? AND status IN "
                        f"({','.join('?' * len(allowed_from))}){guard}",
                        (to_status, utcnow(), *fields.values(), order_id, *allowed_from))
        if cur.rowcount == 1:
            _history(c, order_id, source, to_status, note)
            if to_status == "payment_failed":
                self._enqueue(c, "payment_failed", order_id)
        return cur.rowcount == 1

    def _enqueue(self, c, what, order_id, **details):
        """Store the emails this change causes, in its transaction; one per (order, kind, amount), ever."""
        order, now = _row(c.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()), utcnow()
        for m in self.notify(what, order, **details):
            c.execute("INSERT INTO outbox (id, order_id, kind, amount, recipient, message, created, next_attempt)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      (m["id"], order_id, m["kind"], m["amount"], m["to"], m["message"], now, now))

    # -- after payment: refunds, disputes, webhook bookkeeping --------------------------------------------------

    def apply_refund(self, order_id, amount_refunded, amount_charged, source, note=None, failed=None):
        """Keep the charge's largest refunded total (events come in any order), or, given `failed` (how many of its
        refunds failed, and their sum, from Stripe's list read just now), Stripe's total; never more than it
        charged or the order came to; paid becomes (partially_)refunded. Failures not known before email the
        merchant what they did not give back."""
        with self.db.tx() as c:
            self.db.lock(c, order_id)
            row = c.execute("SELECT id, status, amount_refunded, amount_total, refund_failures, refunds_failed FROM "
                            "orders WHERE id = ?", (order_id,)).fetchone()
            amount_charged = min(amount_charged, row["amount_total"] or 0)  # the order's payment took that, no more
            amount, status, exact = min(amount_refunded, amount_charged), row["status"], failed is not None
            amount = amount if exact else max(row["amount_refunded"], amount)
            if status in ("paid", "partially_refunded", "refunded") and (amount > 0 or exact):
                status = "paid" if amount == 0 else "refunded" if amount >= amount_charged or (
                    status == "refunded" and not exact) else "partially_refunded"
            count, lost = failed or (0, 0)  # failed refunds stay failed: both only grow
            changed = self._settle(c, row, source, note, status=status, amount_refunded=amount,
                                   refund_failures=max(row["refund_failures"], count),
                                   refunds_failed=max(row["refunds_failed"], lost))
            if amount > row["amount_refunded"]:
                self._enqueue(c, "refund", order_id, before=row["amount_refunded"])
            # (a ledger from before the sum was kept counted failures already told: those are not told again)
            if count > row["refund_failures"] and lost > row["refunds_failed"]:  # the merchant gives it back
                self._enqueue(c, "refund_failed", order_id, lost=lost - row["refunds_failed"])
            return changed

    def apply_dispute(self, order_id, dispute, source):
        """Mark a paid order disputed, and tell the merchant, who has days to answer it; a closed dispute's outcome
        is never undone by a late event. `dispute`: Stripe's Dispute (https://docs.stripe.com/api/disputes/object)."""
        with self.db.tx() as c:
            self.db.lock(c, order_id)
            row = c.execute("SELECT id, status, dispute_status FROM orders WHERE id = ?", (order_id,)).fetchone()
            status = "disputed" if row["status"] in ("paid", "partially_refunded", "refunded") else row["status"]
            outcome = row["dispute_status"] if row["dispute_status"] in DISPUTE_FINAL else dispute.get("status")
            changed = self._settle(c, row, source, f"dispute {dispute.get('id')} {dispute.get('status')}",
                                   status=status, dispute_status=outcome)
            if status == "disputed" and row["status"] != "disputed":  # told once, with what is left to do
                self._enqueue(c, "dispute", order_id, reason=dispute.get("reason"), dispute_status=outcome,
                              due_by=(dispute.get("evidence_details") or {}).get("due_by"))
            return changed

    def _settle(self, c, row, source, note, **values):
        """Write `values` over the order `row` (read under its lock) if any differs, with a history line; True if so."""
        if all(row[k] == v for k, v in values.items()):
            return False
        c.execute(f"UPDATE orders SET {''.join(k + ' = ?, ' for k in values)}updated = ? WHERE id = ?",
                  (*values.values(), utcnow(), row["id"]))
        _history(c, row["id"], source, values["status"], note)
        return True

    def seen_event(self, event_id):
        return self.one("SELECT 1 FROM webhook_events WHERE id = ?", event_id) is not None

    def record_event(self, event_id, event_type, order_id=None, note=None):
        """Mark an event handled (once); with a note, also add it to the order's history. True if new."""
        with self.db.tx() as c:
            new = _note_event(c, event_id, event_type, order_id)
            if new and order_id and note:
                _history(c, order_id, f"webhook {event_id} {event_type}", None, note)
            return new

    def forget_events(self, days):
        """Drop the ids of webhook events received more than `days` ago; returns how many."""
        with self.db.tx() as c:
            return c.execute("DELETE FROM webhook_events WHERE received < ?",
                             (iso_utc(time.time() - days * 86400),)).rowcount

    def fulfilments(self, after=0, limit=1000):
        """Hand-off records after id `after`, oldest first: [(id, record dict)]."""
        return [(r["id"], json.loads(r["record"]))
                for r in self.rows("SELECT id, record FROM fulfilments WHERE id > ? ORDER BY id LIMIT ?", after, limit)]

    def handoff_record(self, order_id):
        row = self.one("SELECT record FROM fulfilments WHERE order_id = ?", order_id)
        return row and json.loads(row["record"])

    # -- the outbox: claimed under a lease, so no two senders have one message at once ---------------------------

    def claim_mail(self, now, lease_seconds, due=None, skip=(), given_up=False):
        """An unsent message due by `due` (default now), not held or in `skip`, leased until now + lease_seconds;
        one that used up its attempts only if `given_up`."""
        now_iso, until = iso_utc(now), iso_utc(now + lease_seconds)
        due_rows = self.rows("SELECT id FROM outbox WHERE sent_at IS NULL AND next_attempt <= ? AND attempts < ? AND"
                             " (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt LIMIT 20",
                             iso_utc(due or now), 2 ** 31 if given_up else MAX_MAIL_ATTEMPTS, now_iso)
        for mail_id in (r["id"] for r in due_rows if r["id"] not in skip):  # another sender may take it first
            with self.db.tx() as c:
                if c.execute("UPDATE outbox SET lease_until = ?, attempts = attempts + 1 WHERE id = ? AND sent_at"
                             " IS NULL AND (lease_until IS NULL OR lease_until < ?)",
                             (until, mail_id, now_iso)).rowcount == 1:
                    return dict(c.execute("SELECT * FROM outbox WHERE id = ?", (mail_id,)).fetchone())
        return None

    def hold_mail(self, mail_id, until):
        """Keep a claimed message's lease until `until` while it is being sent (never shorten it)."""
        with self.db.tx() as c:
            c.execute("UPDATE outbox SET lease_until = ? WHERE id = ? AND sent_at IS NULL AND lease_until < ?",
                      (iso_utc(until), mail_id, iso_utc(until)))

    def mail_sent(self, mail_id):
        with self.db.tx() as c:
            c.execute("UPDATE outbox SET sent_at = ?, lease_until = NULL, last_error = NULL WHERE id = ?"
                      " AND sent_at IS NULL", (utcnow(), mail_id))

    def mail_failed(self, mail_id, error, retry_at):
        with self.db.tx() as c:
            c.execute("UPDATE outbox SET lease_until = NULL, next_attempt = ?, last_error = ? WHERE id = ?"
                      " AND sent_at IS NULL", (iso_utc(retry_at), error, mail_id))

    def outbox(self, order_id=None, pending=False, limit=100):
        """Messages, newest first (without their text): an order's, or the unsent ones."""
        sql = ("SELECT id, order_id, kind, amount, recipient, created, attempts, next_attempt, lease_until, sent_at,"
               " last_error FROM outbox WHERE order_id " + ("= ?" if order_id else "<> ?")  # '' is no order's id
               + (" AND sent_at IS NULL" if pending else "") + " ORDER BY created DESC, id LIMIT ?")
        return self.rows(sql, order_id or "", limit)

    def fulfilment_id(self, order_id):
        row = self.one("SELECT id FROM fulfilments WHERE order_id = ?", order_id)
        return row and row["id"]

    def checkpoint(self, name):
        """The value last saved under `name`, or None."""
        row = self.one("SELECT value FROM checkpoints WHERE name = ?", name)
        return row and json.loads(row["value"])

    def kept_catalog(self, path):
        """The text of the catalog last loaded from the file at `path` (by any instance), or None."""
        try:
            kept = self.checkpoint("catalog")
        except ValueError:  # garbled by hand: as if none were kept
            return None
        ours = isinstance(kept, dict) and kept.get("path") == os.path.abspath(path)
        return kept["text"] if ours and isinstance(kept.get("text"), str) else None

    def first_time(self, name):
        """True for the one caller, of any thread or instance, that marks `name` first."""
        with self.db.tx() as c:
            return c.execute("INSERT INTO checkpoints (name, value) VALUES (?, 'true') ON CONFLICT (name) DO NOTHING",
                             (name,)).rowcount == 1

    def set_checkpoint(self, name, value):
        with self.db.tx() as c:
            c.execute("INSERT INTO checkpoints (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                      " SET value = excluded.value", (name, json.dumps(value)))

    def secret(self):
        """The shop's signing key: made once, kept in the database, so every instance signs alike."""
        with self.db.tx() as c:
            self.db.lock(c, "secret_key")
            row = c.execute("SELECT value FROM checkpoints WHERE name = 'secret_key'").fetchone()
            try:
                kept = json.loads(row["value"]) if row else None
            except ValueError:  # emptied to '' or garbled: not JSON at all
                kept = None
            if not (isinstance(kept, str) and len(kept) >= 32):  # missing, emptied, cut short or not text: a new one
                kept = secrets.token_urlsafe(32)
                c.execute("DELETE FROM checkpoints WHERE name = 'secret_key'")
                c.execute("INSERT INTO checkpoints (name, value) VALUES ('secret_key', ?)", (json.dumps(kept),))
            return kept.encode()

    def ping(self):
        """Raise if the database cannot be read within 2 s (a health check must answer before its monitor gives up),
        or refused a write in the last WRITE_FAILED_FOR seconds (a full disk, a read-only file: reads still work)."""
        with self.db.read(timeout=2) as c:
            c.execute("SELECT 1 FROM orders LIMIT 1")
        at, why = self.db.failed
        if time.monotonic() - at < WRITE_FAILED_FOR:
            raise ShopError(503, f"a write failed {time.monotonic() - at:.0f} s ago ({why})")

    @staticmethod
    def unavailable(error):
        """Whether an error means the database is down, unreachable or too busy just now (worth a retry), not a bug."""
        if isinstance(error, sqlite3.OperationalError):  # https://sqlite.org/rescode.html
            return (getattr(error, "sqlite_errorname", None) or "").startswith((
                "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY"))
        psycopg = sys.modules.get("psycopg")  # loaded only for PostgreSQL
        # No connection (the pool's timeout too: no SQLSTATE), 08 connection, 53 resources (disk full), 57 shut
        # down or canceled, 40 rolled back by a conflict, 25006 a read-only server (a standby after a failover):
        # https://www.postgresql.org/docs/current/errcodes-appendix.html
        if psycopg is None or not isinstance(error, psycopg.Error):
            return False
        return error.sqlstate == "25006" or isinstance(error, psycopg.OperationalError) and (
            error.sqlstate or "08")[:2] in ("08", "53", "57", "40")


HELD = ("the last copies are in other shoppers' checkouts, and any they do not pay for come back within about half "
        "an hour")


def held_back(stock, taken):
    """Of the copies open checkouts hold (`taken`: held, sold), those that come back unless paid for: none beyond
    what the stock leaves after the copies sold (an edit may have lowered it)."""
    held, sold = taken
    return min(held, max(0, stock - sold))


def too_few(name, left, held=0):
    """The 409 for an order of more copies than are left (`held` of them by other shoppers' open checkouts)."""
    return ShopError(409, f"Sorry, {name} is sold out for now: {HELD}." if not left and held else
                     f"Sorry, {name} is sold out." if not left else
                     f"Sorry, only {left} of {name} left. Please change the quantity.")


def _history(c, order_id, source, status, note):
    c.execute("INSERT INTO order_history (order_id, at, source, status, note) SELECT id, ?, ?, COALESCE(?, status), ?"
              " FROM orders WHERE id = ?", (utcnow(), source, status, note, order_id))  # status None: as it is


def _note_event(c, event_id, event_type, order_id):
    cur = c.execute("INSERT INTO webhook_events (id, type, order_id, received) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING", (event_id, event_type, order_id, utcnow()))
    return cur.rowcount == 1


def _row(row):
    """A row as a dict, an order's JSON columns decoded; None stays None."""
    return None if row is None else {k: json.loads(v) if k in ("items", "charged", "tax_ids") and isinstance(v, str)
                                     else v for k, v in dict(row).items()}


WRITE_FAILED_FOR = 30  # seconds /healthz says so after a write the database refused


@contextmanager
def _failures_noted(db):
    """A write the database refused as unavailable (full, read-only, down) is noted, for the health check."""
    try:
        yield
    except Exception as e:
        if Ledger.unavailable(e):
            db.failed = (time.monotonic(), type(e).__name__)
        raise


class LedgerMoved(sqlite3.OperationalError):
    """The ledger's file was deleted or replaced under the running shop: what it wrote there would be lost."""
    sqlite_errorname = "SQLITE_CANTOPEN"


class _SQLite:
    """One connection per thread, WAL; a process's writers queue on a plain lock, not SQLite's sleeping busy
    handler (which other processes on the file still meet)."""

    engine, serial = "sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT"
    failed = (float("-inf"), "")  # when a write was last refused, and with what

    def __init__(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self._local, self._writer = str(path), threading.local(), threading.Lock()
        # The file holds shoppers' emails: readable by the shop's user only.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)  # a file an older version made 0644 too (SQLite gives -wal and -shm its mode)
        self.inode, self.uri = os.stat(self.path).st_ino, Path(self.path).resolve().as_uri() + "?mode=rw"

    def _conn(self):
        try:  # deleted or replaced (a restore under the running shop): never written into a file none can read back
            moved = os.stat(self.path).st_ino != self.inode
        except OSError:
            moved = True
        if moved:
            raise LedgerMoved(f"{self.path} was deleted or replaced while the shop ran: restart it")
        conn = getattr(self._local, "conn", None)
        if conn is None:  # mode=rw: never a new, empty file
            conn = sqlite3.connect(self.uri, uri=True, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            # SQLite's own LOWER knows only ASCII: the search would miss ÄRGER@example.com (PostgreSQL's finds it)
            conn.create_function("LOWER", 1, lambda text: text.lower() if isinstance(text, str) else text,
                                 deterministic=True)
            _wal(conn)
            for pragma in ("synchronous = NORMAL", "foreign_keys = ON"):
                conn.execute(f"PRAGMA {pragma}")
            self._local.conn = conn
        return conn

    @contextmanager
    def read(self, timeout=None):
        yield self._conn()

    def lock(self, c, key):
        """Writers take turns already: BEGIN IMMEDIATE holds the database's one write lock."""

    @contextmanager
    def tx(self):
        # BEGIN IMMEDIATE takes the write lock up front, so a read-then-write never deadlocks another process.
        with self._writer, _failures_noted(self):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            with conn:  # COMMIT, or ROLLBACK on any exception
                yield conn

    def version(self, c):
        return c.execute("PRAGMA user_version").fetchone()[0]

    def set_version(self, c, number):
        c.execute(f"PRAGMA user_version = {int(number)}")

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _wal(conn):
    """WAL mode, which the file keeps once set. Setting it does not wait in SQLite's busy handler, so processes that
    open a new database at once (gunicorn's workers on a fresh DATA_DIR) failed to start: it is tried for up to 5 s."""
    for attempt in range(100):
        try:
            return conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as e:
            if e.sqlite_errorname != "SQLITE_BUSY" or attempt == 99:
                raise
            time.sleep(0.05)


def reach(url):
    """Connect to DATABASE_URL once (in its connect_timeout, else 10 s), or ConfigError with libpq's reason."""
    import psycopg
    try:
        psycopg.connect(**{"connect_timeout": 10, **psycopg.conninfo.conninfo_to_dict(url)}).close()
    except psycopg.Error as e:  # libpq's reason names host, port, user or option, never the password
        raise ConfigError(f"DATABASE_URL: cannot connect: {str(e).splitlines()[0]}") from None


class _Postgres:
    """A psycopg 3 pool taking SQLite's `?` placeholders; each `tx()` is one transaction, committed on success."""

    engine, serial = "postgresql", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    failed = (float("-inf"), "")

    def __init__(self, url):
        import psycopg_pool
        from psycopg.conninfo import conninfo_to_dict
        from psycopg.rows import dict_row
        # Unless DATABASE_URL says otherwise, a connection a network drops without a word (a NAT's idle timeout) is
        # kept alive or found dead within about a minute, not after the system's hours.
        given = conninfo_to_dict(url)
        limits = {k: v for k, v in (("keepalives_idle", 30), ("keepalives_interval", 10), ("keepalives_count", 3),
                                    ("tcp_user_timeout", 60000)) if k not in given}
        self.sweeping = threading.Lock()
        reach(url)  # a wrong DATABASE_URL fails at once, in libpq's words, not after the pool's 30 s of retries
        self.pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=16, open=True, timeout=30, check=self._check,
                                                kwargs={"row_factory": dict_row, "autocommit": True, **limits})

    def _check(self, conn):
        """A connection the server dropped (a restart, a failover, a proxy's idle timeout) is replaced as it is handed
        out, not a failed request. The first one found has a thread check the others: after a restart the pool would
        otherwise try its dead ones one by one, waiting 1, 2, 4... s between them, past its 30 s.
        https://www.psycopg.org/psycopg3/docs/advanced/pool.html#connection-quality"""
        try:
            conn.execute("")
        except Exception:
            if not self.sweeping.locked():
                threading.Thread(target=self._sweep, name="pool-sweep", daemon=True).start()
            raise

    def _sweep(self):
        if self.sweeping.acquire(blocking=False):  # one sweep at a time
            try:
                self.pool.check()
            finally:
                self.sweeping.release()

    @contextmanager
    def read(self, timeout=None):
        with self.pool.connection(timeout=timeout) as conn:  # None: the pool's 30 s
            yield _PgConn(conn)

    @contextmanager
    def tx(self):
        with _failures_noted(self), self.pool.connection() as conn, conn.transaction():
            yield _PgConn(conn)

    def lock(self, c, key):
        """Within this transaction, writers of the same key (a browser, an order) take turns, on every instance."""
        c.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def version(self, c):
        c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        return c.execute("SELECT COALESCE(MAX(version), 0) AS version FROM schema_version").fetchone()["version"]

    def set_version(self, c, number):
        c.execute("DELETE FROM schema_version")
        c.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))

    def close(self):
        self.pool.close()


class _PgConn:
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args=()):
        return self.conn.execute(sql.replace("?", "%s"), args)
