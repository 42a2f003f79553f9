"""Fulfilment: every paid Checkout Session becomes exactly one hand-off line, however often we are told."""

import json
import logging
import os

import payments
from ledger import utcnow

log = logging.getLogger("shop.fulfilment")

PAID = ("paid", "no_payment_required")
# A paid session may arrive after we saw it expire or fail (events come in any order), so those
# states can still move to paid. https://docs.stripe.com/webhooks#event-ordering
PAYABLE_FROM = ("open", "checkout_failed", "awaiting_payment", "payment_failed", "expired")


def append_jsonl(path, record):
    """The default action: append one JSON line to DATA_DIR/fulfilments.jsonl for the warehouse."""
    line = json.dumps(record, sort_keys=True) + "\n"
    # One write() of one line with O_APPEND: concurrent writers never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def record(order, summary, session):
    """The hand-off record for one fulfilled order."""
    shipping = ((session.get("collected_information") or {}).get("shipping_details")) or {}
    address = shipping.get("address") or {}
    return {
        "order_id": order["id"],
        "session_id": summary["id"],
        "items": [{"name": i["name"], "quantity": i["quantity"], "unit_amount": i["unit_amount"],
                   "amount_total": i["amount_total"]} for i in summary["items"]],
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
        "fulfilled_at": utcnow(),
    }


class Fulfilment:
    """Marks orders paid and hands them to `action` exactly once per order."""

    def __init__(self, ledger, client, data_dir, action=None):
        self.ledger = ledger
        self.client = client
        self.path = data_dir / "fulfilments.jsonl"
        self.action = action or (lambda rec: append_jsonl(self.path, rec))

    def fulfil(self, session_id, session=None, source="success page"):
        """Re-read the session from Stripe and, if it is paid, fulfil its order once; returns the summary."""
        order = self.ledger.by_session(session_id)
        if order is None:
            return None
        if session is None:
            session = payments.retrieve_session(self.client, session_id)
        summary = payments.summary(session)
        if session.get("status") == "complete" and session.get("payment_status") in PAID:
            self._fulfil_once(order, summary, session, source)
        elif session.get("status") == "complete":
            self.ledger.transition(order["id"], ("open", "checkout_failed", "expired"), "awaiting_payment",
                                   source, "payment processing", **self._amounts(summary))
        return summary

    def _fulfil_once(self, order, summary, session, source):
        # The guarded UPDATE and the hand-off share one write transaction: a second caller (another
        # thread or process) blocks on the lock, then finds fulfilled_at set and does nothing. If the
        # action raises, the transaction rolls back and the next delivery or reconcile tries again.
        now = utcnow()
        with self.ledger.write() as db:
            cur = db.execute(
                f"UPDATE orders SET status = 'paid', fulfilled_at = ?, updated = ?, payment_intent = ?,"
                f" customer_email = ?, amount_subtotal = ?, amount_shipping = ?, amount_tax = ?, amount_total = ?"
                f" WHERE id = ? AND fulfilled_at IS NULL AND status IN ({','.join('?' * len(PAYABLE_FROM))})",
                (now, now, summary["payment_intent"], summary["email"], summary["amount_subtotal"],
                 summary["amount_shipping"], summary["amount_tax"], summary["amount_total"], order["id"],
                 *PAYABLE_FROM))
            if cur.rowcount != 1:
                return False
            db.execute("INSERT INTO order_history (order_id, at, source, status, note) VALUES (?, ?, ?, 'paid', ?)",
                       (order["id"], now, source, "fulfilled"))
            self.action(record(order, summary, session))
        log.info("fulfilled order=%s session=%s amount_total=%s %s", order["id"], summary["id"],
                 summary["amount_total"], summary["currency"])
        return True

    @staticmethod
    def _amounts(summary):
        return {"amount_subtotal": summary["amount_subtotal"], "amount_shipping": summary["amount_shipping"],
                "amount_tax": summary["amount_tax"], "amount_total": summary["amount_total"],
                "customer_email": summary["email"], "payment_intent": summary["payment_intent"]}
