"""Fulfilment: every paid Checkout Session becomes exactly one hand-off line, however often we are told."""

import json
import logging
import os

import payments
from groupcommit import GroupCommit
from ledger import utcnow

log = logging.getLogger("shop.fulfilment")

CHECKPOINT = "fulfilments.jsonl recovered to"  # the ledger's note of how far recover() has read the file
TAIL = 64  # bytes before that offset, kept to tell the same file from one rewritten in place

PAID = ("paid", "no_payment_required")
# sync()'s outcome when this call fulfilled the order; a webhook's event was then marked handled in the same
# transaction (webhooks.apply relies on it).
FULFILLED = "fulfilled"
# A paid session may arrive after we saw it expire or fail (events come in any order), so those
# states can still move to paid. https://docs.stripe.com/webhooks#event-ordering
PAYABLE_FROM = ("open", "checkout_failed", "awaiting_payment", "payment_failed", "expired")
# A delayed payment that failed leaves its PaymentIntent wanting a new payment method (or canceled):
# https://docs.stripe.com/payments/paymentintents/lifecycle
FAILED_INTENT = ("requires_payment_method", "canceled")


def append_jsonl(path, *records):
    """The default action: append one JSON line per record to DATA_DIR/fulfilments.jsonl for the warehouse."""
    data = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records).encode()
    # One write() with O_APPEND: concurrent writers never interleave within a line.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a crash: start on a fresh line
            data = b"\n" + data
        if os.write(fd, data) != len(data):  # a full disk: the next append starts on a fresh line
            raise OSError(f"{path}: short write")
        os.fsync(fd)
    finally:
        os.close(fd)


def record(order, summary, session, fulfilled_at):
    """The hand-off record for one fulfilled order: what to ship, where, and what was charged."""
    collected = session.get("collected_information") or {}
    # Newer API versions put the shipping address under collected_information, older ones on the session.
    shipping = collected.get("shipping_details") or session.get("shipping_details") or {}
    address = shipping.get("address") or {}
    product_ids = {(i["name"], i["unit_amount"]): i["product_id"] for i in order["items"]}
    items = [{"product_id": product_ids.get((i["name"], i["unit_amount"])), "name": i["name"],
              "quantity": i["quantity"], "unit_amount": i["unit_amount"], "amount_total": i["amount_total"]}
             for i in summary["items"]]
    if not items:  # the session came without line items: hand off what the order asked Stripe to charge
        items = [{"product_id": i["product_id"], "name": i["name"], "quantity": i["quantity"],
                  "unit_amount": i["unit_amount"], "amount_total": None} for i in order["items"]]
    return {
        "order_id": order["id"],
        "session_id": summary["id"],
        "items": items,
        "currency": summary["currency"],
        "amount_subtotal": summary["amount_subtotal"],
        "amount_shipping": summary["amount_shipping"],
        "amount_tax": summary["amount_tax"],
        "amount_total": summary["amount_total"],
        "customer_email": summary["email"],
        "shipping_name": shipping.get("name"),
        "shipping_address": {k: address.get(k) for k in
                             ("line1", "line2", "city", "postal_code", "state", "country")},
        "payment_intent": summary["payment_intent"],
        "fulfilled_at": fulfilled_at,
    }


def _tail(f, offset):
    """The (up to) TAIL bytes of the file before `offset`, as hex."""
    n = min(offset, TAIL)
    return os.pread(f.fileno(), n, offset - n).hex()


class Fulfilment:
    """Brings an order in line with its Checkout Session and hands paid orders to `action` exactly once."""

    def __init__(self, ledger, client, data_dir, action=None):
        self.ledger = ledger
        self.client = client
        self.path = data_dir / "fulfilments.jsonl"
        # The one replaceable step: anything that takes the record and raises on failure. None: a line in
        # fulfilments.jsonl, written for all the orders of a shared transaction at once (groupcommit.py).
        self.action = action
        self.last_recovery = None  # (from, to) byte offsets of the file that the last recover() read
        self.commits = GroupCommit(ledger, lambda records: append_jsonl(self.path, *records))

    def fulfil(self, session_id, session=None, source="success page", failed=False):
        """Re-read the session from Stripe and, if it is paid, fulfil its order once; returns the summary."""
        summary, _ = self.sync(session_id, session, source, failed)
        return summary

    def order_for(self, session_id, session=None, source="stripe"):
        """This shop's order for a session: by session id, else by the order id we put in its metadata."""
        order = self.ledger.by_session(session_id)
        if order is not None or session is None:
            return order
        order_id = (session.get("metadata") or {}).get("order_id") or session.get("client_reference_id")
        order = self.ledger.get(order_id) if order_id else None
        # Only an order whose create call failed before it learnt its session id may be claimed this way.
        if order is None or order["session_id"] is not None:
            return None
        self.ledger.transition(order["id"], (order["status"],), order["status"], source,
                               f"session {session_id} found", session_id=session_id,
                               session_url=session.get("url"), session_expires_at=session.get("expires_at"))
        return self.ledger.get(order["id"])

    def sync(self, session_id, session=None, source="success page", failed=False, order=None, event=None):
        """Apply the session's state to its order; returns (summary, outcome) or (None, None) if not ours.

        order: the ledger's order for the session when the caller already has it. event: (id, type) of the
        webhook event that asked, marked handled in the same transaction when it fulfils the order."""
        if order is None:
            order = self.order_for(session_id, session, source)
        if order is None:
            return None, None
        if session is None:
            # One API call; its answer, not the event or the URL, decides: https://docs.stripe.com/checkout/fulfillment
            session = payments.retrieve_session(self.client, session_id)
        if session.get("id") != session_id:
            raise ValueError("session id mismatch")
        summary = payments.summary(session)
        if summary["order_id"] not in (None, order["id"]):
            log.warning("session %s names order %s, ledger has %s: not acting", session_id, summary["order_id"],
                        order["id"])
            return summary, "ignored: order mismatch"
        return summary, self._settle(order, session, summary, source, failed, event)

    def _settle(self, order, session, summary, source, failed, event=None):
        status, paid = session.get("status"), session.get("payment_status")
        move = self.ledger.transition
        if status == "complete" and paid in PAID:
            return FULFILLED if self._fulfil_once(order, summary, session, source, event) else "already fulfilled"
        if status == "complete":
            intent = session.get("payment_intent")
            if failed or (isinstance(intent, dict) and intent.get("status") in FAILED_INTENT):
                moved = move(order["id"], ("open", "checkout_failed", "awaiting_payment", "expired"),
                             "payment_failed", source, "payment failed", **self._amounts(summary))
                return "payment failed" if moved else "no change"
            moved = move(order["id"], ("open", "checkout_failed", "expired"), "awaiting_payment", source,
                         "payment processing", **self._amounts(summary))
            return "awaiting payment" if moved else "no change"
        if status == "expired":
            moved = move(order["id"], ("open", "checkout_failed"), "expired", source, "session expired")
            return "expired" if moved else "no change"
        if status == "open":  # the create call failed for us but reached Stripe: the session is usable
            moved = move(order["id"], ("checkout_failed",), "open", source, "session exists")
            return "reopened" if moved else "no change"
        return "no change"

    def _fulfil_once(self, order, summary, session, source, event=None):
        # The guarded UPDATE and the hand-off share one write transaction: a second caller (another
        # thread or process) waits for the lock, then finds fulfilled_at set and does nothing. If the
        # hand-off raises, the transaction rolls back and the next delivery or reconcile tries again.
        # If the process dies between the hand-off and COMMIT, the line exists but the order is not marked:
        # recover(), run at start-up and by reconcile, marks such orders from the file, so no line repeats.
        now = utcnow()
        rec = record(order, summary, session, now)  # made before the turn: the lock is held for SQL and the write

        def claim(db):
            # A value the session leaves out (None) keeps the ledger's, as in _amounts.
            cur = db.execute(
                "UPDATE orders SET status = 'paid', fulfilled_at = ?, updated = ?,"
                " payment_intent = COALESCE(?, payment_intent), customer_email = COALESCE(?, customer_email),"
                " amount_subtotal = COALESCE(?, amount_subtotal), amount_shipping = COALESCE(?, amount_shipping),"
                " amount_tax = COALESCE(?, amount_tax), amount_total = COALESCE(?, amount_total)"
                f" WHERE id = ? AND fulfilled_at IS NULL AND status IN ({','.join('?' * len(PAYABLE_FROM))})",
                (now, now, summary["payment_intent"], summary["email"], summary["amount_subtotal"],
                 summary["amount_shipping"], summary["amount_tax"], summary["amount_total"], order["id"],
                 *PAYABLE_FROM))
            if cur.rowcount != 1:
                return None
            db.execute("INSERT INTO order_history (order_id, at, source, status, note) VALUES (?, ?, ?, 'paid', ?)",
                       (order["id"], now, source, "fulfilled"))
            if event is not None:  # one write turn per webhook that fulfils, not two
                self.ledger.note_event(db, *event, order["id"])
            if self.action is not None:  # a custom hand-off, one record at a time, inside this transaction
                self.action(rec)
            return rec

        # A custom action hands off inside its claim: alone, so a failure never rolls back another's hand-off.
        if self.commits.run(claim, alone=self.action is not None) is None:
            return False
        log.info("fulfilled order=%s session=%s amount_total=%s %s source=%s", order["id"], summary["id"],
                 summary["amount_total"], summary["currency"], source)
        return True

    def recover(self):
        """Mark fulfilled every order whose hand-off line was written but whose commit a crash lost."""
        handed, start, end, mark = self._lines_since_last_recovery()
        if handed is None:
            return 0
        recovered = 0
        for order_id, rec in handed.items():
            order = self.ledger.get(order_id)
            if order is None or order["fulfilled_at"] is not None:
                continue
            moved = self.ledger.transition(
                order_id, PAYABLE_FROM, "paid", "recovery", "fulfilled (hand-off line found after a restart)",
                fulfilled_at=rec.get("fulfilled_at") or utcnow(), payment_intent=rec.get("payment_intent"),
                customer_email=rec.get("customer_email"), amount_subtotal=rec.get("amount_subtotal"),
                amount_shipping=rec.get("amount_shipping"), amount_tax=rec.get("amount_tax"),
                amount_total=rec.get("amount_total"))
            if moved:
                recovered += 1
                log.warning("recovered order=%s: handed off before a crash, now marked fulfilled", order_id)
        # Every order of a line before `end` is marked now: the next start reads on from there.
        if end != start:
            self.ledger.set_checkpoint(CHECKPOINT, mark)
        self.last_recovery = (start, end)
        return recovered

    def _lines_since_last_recovery(self):
        """({order_id: record}, start, end, checkpoint) for the complete lines after the last recovery's end.

        The checkpoint holds the file's device, inode, the offset reached and the bytes just before it; a
        file replaced, rotated or rewritten in place is read again from the start. Each start of the shop
        (and each merchant command) then costs what was appended since, not the whole file."""
        try:
            with open(self.path, "rb") as f:
                return self._read_on(f)
        except FileNotFoundError:
            return None, 0, 0, None

    def _read_on(self, f):
        st = os.fstat(f.fileno())
        mark = self.ledger.checkpoint(CHECKPOINT) or {}
        start = mark.get("offset", 0)
        same = (mark.get("dev"), mark.get("ino")) == (st.st_dev, st.st_ino) and 0 < start <= st.st_size
        if not same or _tail(f, start) != mark.get("tail"):
            start = 0
        f.seek(start)
        handed, end = {}, start
        for line in f:
            if not line.endswith(b"\n"):
                break  # still being written, or torn by a crash: the next append starts a fresh line
            end += len(line)
            try:
                rec = json.loads(line)
                handed[rec["order_id"]] = rec
            except (ValueError, KeyError, TypeError):  # a line torn by a crash, now ended by the next one
                continue
        return handed, start, end, {"dev": st.st_dev, "ino": st.st_ino, "offset": end, "tail": _tail(f, end)}

    @staticmethod
    def _amounts(summary):
        """What the session says was charged; a field it leaves out keeps the ledger's value."""
        values = {"amount_subtotal": summary["amount_subtotal"], "amount_shipping": summary["amount_shipping"],
                  "amount_tax": summary["amount_tax"], "amount_total": summary["amount_total"],
                  "customer_email": summary["email"], "payment_intent": summary["payment_intent"]}
        return {k: v for k, v in values.items() if v is not None}

