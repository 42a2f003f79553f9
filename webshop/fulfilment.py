"""Fulfilment: each Checkout Session's state is applied to its order, and every paid order is handed off once."""

import csv
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from decimal import Decimal

from . import mail, payments
from .catalog import currency_exponent, money
from .ledger import REFUNDABLE, Ledger, refundable, utcnow
from .settings import ShopError

log = logging.getLogger("shop.fulfilment")

FULFILLED = "fulfilled"  # sync()'s outcome for the one call that fulfilled the order
UNCHANGED = ("no change", "already fulfilled")  # its outcomes when this call changed nothing (another one may have)
# Events come in any order, so a paid session may follow an expiry or failure:
# https://docs.stripe.com/webhooks#event-ordering
PAYABLE_FROM = ("open", "checkout_failed", "awaiting_payment", "payment_failed", "expired")
# state -> (statuses it may move an order from, the status it moves it to, the outcome it reports)
MOVES = {
    "failed": (("open", "checkout_failed", "awaiting_payment", "expired"), "payment_failed", "payment failed"),
    "processing": (("open", "checkout_failed", "expired"), "awaiting_payment", "awaiting payment"),
    "expired": (("open", "checkout_failed"), "expired", "expired"),
}
AMOUNTS = ("amount_subtotal", "amount_shipping", "amount_tax", "amount_discount", "amount_total")
JSONL_MARK = "fulfilments.jsonl"  # the ledger's checkpoint: the last hand-off id written to the file


class Orders:
    """The ledger, the Stripe client and fulfilment of one shop: what the web app and the merchant's commands share."""

    def __init__(self, config, shop_name=lambda: "Test shop", ledger=None):
        self.config = config
        self.ledger = ledger or Ledger(config)
        self.ledger.notify = mail.Notices(config, shop_name)  # the emails a payment, failure or refund causes
        self.stripe, self.standin = payments.make_client(config, shop_name())
        # The embedded default also writes each hand-off as a line of DATA_DIR/fulfilments.jsonl for the warehouse.
        self.jsonl = None if config.database_url else config.data_dir / "fulfilments.jsonl"
        # This process's threads take turns here, not on the file lock, which wakes every waiter at each release.
        self.exporting, self.passes = threading.Lock(), 0
        self.export()  # lines a crash kept from the file are written before anything else runs

    def close(self):
        """Release what this process opened (the stand-in only if it was made here)."""
        if self.standin is not None and self.config.standin is None:
            self.standin.close()
        self.ledger.close()

    def order_for(self, session_id, session=None, source="stripe"):
        """This shop's order for a session: by id, else by its metadata (its create call died after reaching Stripe)."""
        order = self.ledger.by_session(session_id)
        if order is not None or session is None:
            return order
        order_id = (session.get("metadata") or {}).get("order_id") or session.get("client_reference_id")
        order = self.ledger.get(order_id) if isinstance(order_id, str) else None
        if order is None or order["session_id"] is not None:
            return None
        self.ledger.transition(order["id"], (order["status"],), order["status"], source, f"session {session_id} found",
                               session_id=session_id, session_url=session.get("url"),
                               session_expires_at=session.get("expires_at"))
        return self.ledger.get(order["id"])

    def sync(self, session_id, session=None, source="success page", failed=False, order=None, event=None):
        """Apply the session's state to its order; returns (what was charged, outcome), or (None, None) if not ours.

        session: None re-reads it from Stripe (one call), whose answer, not an event or a URL, decides:
        https://docs.stripe.com/checkout/fulfillment. event: (id, type), marked handled with a fulfilment. failed:
        an async_payment_failed event, so a session still processing counts as failed."""
        order = order or self.order_for(session_id, session, source)
        if order is None:
            return None, None
        session = session or payments.retrieve_session(self.stripe, session_id)
        currency = (session.get("currency") or order["currency"]).lower()  # stripe-mock's example session has none
        if session.get("id") != session_id or currency != order["currency"].lower():
            # Not the session this order made (stripe-mock answers any id with its one example): acting on it would
            # record another payment, or amounts in the wrong money.
            raise ShopError(502, payments.REFUSED, detail=f"Stripe's answer for {session_id} is another session's")
        charged = dict(payments.charged(session), currency=currency)
        charged["email"] = typed(charged["email"])  # as the shopper typed it: recorded, mailed and shown
        if charged["order_id"] not in (None, order["id"]):
            log.warning("session %s names order %s, ledger has %s: not acting", session_id, charged["order_id"],
                        order["id"])
            return charged, "ignored: order mismatch"
        state = payments.state(session)
        state = "failed" if failed and state == "processing" else state
        fields = {k: charged[k] for k in AMOUNTS + ("payment_intent", "promotion_code", "terms_accepted")}
        fields["customer_email"] = charged["email"]
        fields["tax_ids"] = json.dumps(charged["tax_ids"]) if charged["tax_ids"] else None
        if state == "paid":
            record = handoff(order, charged, session)
            if not self.ledger.fulfil(order["id"], PAYABLE_FROM, record, charged, source, event, **fields):
                return charged, "already fulfilled"
            log.info("fulfilled order=%s session=%s amount_total=%s %s source=%s", order["id"], session_id,
                     charged["amount_total"], charged["currency"], source)
            try:
                self.export()
            except OSError as e:  # the record is committed; the next fulfilment or start writes the line
                log.error("fulfilments.jsonl not written after order=%s: %s", order["id"], e)
            return charged, FULFILLED
        if state == "open":  # nothing to record (a failed create call's session stays failed: reconcile expires it)
            return charged, "no change"
        allowed, to, outcome = MOVES[state]
        moved = self.ledger.transition(order["id"], allowed, to, source, outcome, **fields)
        return charged, outcome if moved else "no change"

    def expire(self, session_id, source):
        """Expire a session at Stripe so it cannot be paid, order in line: (expired?, refusal, outcome). ShopError 503
        if Stripe is down, or refused yet says it is open; 404 if it does not know a session that may still be
        payable (under another key)."""
        refused = missing = None
        # One key for every retry of this call (the SDK's, and the shop's after a 429): one whose answer was lost
        # is replayed, not refused as "not open" (https://docs.stripe.com/api/checkout/sessions/expire)
        key = {"idempotency_key": f"expire-{session_id}-{secrets.token_hex(8)}"}
        try:
            session = payments.call("POST /v1/checkout/sessions/{id}/expire", self.stripe.v1.checkout.sessions.expire,
                                    session_id, None, key).to_dict()
        except ShopError as e:
            if e.status == 503:
                raise
            # Not open any more (paid or expired meanwhile), or unknown to this key.
            session, refused, missing = None, e.detail or e.message, e if e.status == 404 else None
        order = self.ledger.by_session(session_id)
        if order is None or order["status"] not in PAYABLE_FROM:
            return refused is None, refused, "no change"
        if missing:
            # Made in the other mode (test keys before going live), or past its expiry: it can never be paid, and
            # asking again would only find it missing again. Otherwise (another account's key?) it may still be.
            other_mode = session_id.startswith("cs_live_") != (self.config.mode == "live")
            if not (other_mode or (order["session_expires_at"] or 0) <= time.time()):
                raise missing
            moved = self.ledger.transition(order["id"], ("open", "checkout_failed"), "expired", source, refused)
            return False, refused, "expired" if moved else "no change"
        if refused is not None:  # Stripe refuses a session that is not open: its own word on the session decides
            session = payments.retrieve_session(self.stripe, session_id)
            if payments.state(session) == "open":  # so it is still payable: never taken as closed
                raise ShopError(503, payments.UNAVAILABLE, code="still_open",
                                detail=f"Stripe did not expire {session_id}, which is still open: {refused}")
        return refused is None, refused, self.sync(session_id, session, source, order=order)[1]

    def refund(self, order_id, amount=None, restock=False, source="cli refund", key=None, again=False):
        """Refund through Stripe what is left, or `amount`: (the order, Stripe's Refund, replayed?, restocked?).

        Its status and refunded amount change when Stripe's charge.refunded event arrives; `restock` marks its copies
        returned at once."""
        o = self.ledger.get(order_id)
        if o is None:
            raise ShopError(404, f"No order {order_id!r} (see `python shop.py orders`).")
        cur = o["currency"]
        if o["status"] in REFUNDABLE and o["amount_total"] == 0:  # a no-cost order (a 100% code): no payment
            raise ShopError(409, f"Nothing was charged for order {o['id']}, so there is nothing to refund.")
        if not refundable(o) or not o["payment_intent"] or o["amount_total"] is None:
            whole = o["status"] == "refunded" or o["amount_total"] and o["amount_refunded"] >= o["amount_total"]
            hint = " (it is refunded in full already)" if whole else \
                " (answer the dispute in the Stripe Dashboard instead)" if o["status"] == "disputed" else ""
            raise ShopError(409, f"Order {o['id']} is {o['status']}: only paid orders can be refunded{hint}.")
        left, asked = o["amount_total"] - o["amount_refunded"], amount
        amount = left if amount is None else amount
        if amount <= 0 or amount > left:
            raise ShopError(409, f"Cannot refund {money(amount, cur)} on order {o['id']}: {money(left, cur)} of "
                          f"{money(o['amount_total'], cur)} is left to refund (amounts are in minor units).")
        # Stripe replays a request sent again with its idempotency key: https://docs.stripe.com/api/idempotent_requests
        # key: the /admin confirmation page's own. The command keeps one per order and amount for 23 hours, so running
        # it again (after a timeout, or by mistake) replays the first refund, whenever its event arrives; --again makes
        # another. "What is left" is its own request: the same amount asked for by number is another one.
        failed = f" after {o['refund_failures']} failed" if o["refund_failures"] else ""  # refunding again: another
        mark, now = f"refund {o['id']} {'rest ' if asked is None else ''}{amount}{failed}", time.time()
        last = self.ledger.checkpoint(mark)
        if key is None:
            fresh = again or not last or now - last["at"] > 23 * 3600
            key = secrets.token_hex(16) if fresh else last["key"]
            self.ledger.set_checkpoint(mark, {"key": key, "at": now if fresh else last["at"]})
        try:
            result = payments.call("POST /v1/refunds", self.stripe.v1.refunds.create, {
                "payment_intent": o["payment_intent"], "amount": amount, "metadata": {"order_id": o["id"]}},
                {"idempotency_key": f"refund-{o['id']}-{key}"})
        except ShopError as e:  # a refund made since whose charge.refunded event has not reached the shop yet
            if e.code not in ("charge_already_refunded", "amount_too_large"):
                raise
            raise ShopError(409, f"Nothing more was refunded: Stripe has refunded more of order {o['id']} than the "
                                 "shop has recorded yet (its charge.refunded event is on its way). `python shop.py "
                                 "reconcile` records it now.", detail=e.detail) from None
        replayed = (result.last_response.headers or {}).get("Idempotent-Replayed") == "true"
        return o, result, replayed, restock and self.ledger.restock(o["id"], source)

    def export(self):
        """Append to fulfilments.jsonl every hand-off record it does not have yet, in order, once each."""
        if self.jsonl is None:
            return
        begun = self.passes  # read after the caller's commit: any pass begun since writes its record too
        with self.exporting:
            if self.passes > begun:  # one did while this thread waited: nothing of its own is left to write
                return
            self.passes += 1
            try:
                self._export()
            except BaseException:
                self.passes -= 1  # it wrote nothing for the threads waiting: each tries in turn
                raise

    def _export(self):
        """One pass: under the file lock that processes share, write the lines the file lacks."""
        with open(self.jsonl, "a+b") as f:
            os.fchmod(f.fileno(), 0o640)
            fcntl.flock(f, fcntl.LOCK_EX)  # other processes on this DATA_DIR (gunicorn workers) take turns
            # Written up to the checkpoint, or further if a crash came between the write and the checkpoint.
            last, torn = _last_line(f)
            after = max(self.ledger.checkpoint(JSONL_MARK) or 0,
                        (last and self.ledger.fulfilment_id(last.get("order_id"))) or 0)
            records = self.ledger.fulfilments(after)
            prefix = b"\n" if torn else b""  # a line torn by a crash: start on a fresh line
            while records:  # however far behind the file is, a page of records at a time
                data = prefix + "".join(json.dumps(r, sort_keys=True) + "\n" for _, r in records).encode()
                f.seek(0, os.SEEK_END)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                self.ledger.set_checkpoint(JSONL_MARK, records[-1][0])
                records, prefix = self.ledger.fulfilments(records[-1][0]), b""


def _last_line(f):
    """(last record written whole or None, ends mid-line?): what a crash left whole counts as written, never twice."""
    size, tail = f.seek(0, os.SEEK_END), 65536
    while True:  # a tail that holds the last whole line from its start (a record may be longer than 64 KiB)
        f.seek(max(0, size - tail))
        *whole, rest = f.read().split(b"\n")  # rest: b"" when the file ends with a newline
        if len(whole) > 1 or tail >= size:
            break
        tail *= 4
    for line in ([rest] if rest else []) + whole[-1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        return (record if isinstance(record, dict) else None), rest != b""
    return None, rest != b""


TYPED_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")  # one line, storable


def typed(text):
    """What the shopper typed on Stripe's page, with control characters, line separators and bidirectional overrides
    (a NUL, a name that reads backwards) and lone surrogates replaced by U+FFFD: it goes on the label, to /admin and
    into emails, and no database stores a NUL or a lone surrogate."""
    return TYPED_CONTROLS.sub("\ufffd", text) if isinstance(text, str) else text


def handoff(order, charged, session):
    """The hand-off record: what to ship (the order's own lines, by product id), where, and what was charged."""
    collected = session.get("collected_information") or {}
    # Newer API versions put the shipping address under collected_information, older ones on the session.
    shipping = collected.get("shipping_details") or session.get("shipping_details") or {}
    address = shipping.get("address") or {}
    lines = charged["items"] if len(charged["items"]) == len(order["items"]) else [{}] * len(order["items"])
    return {
        # Stripe keeps the line items in the order they were sent, so position pairs them; never the name.
        "items": [{"product_id": i["product_id"], "name": i["name"], "quantity": i["quantity"],
                   "unit_amount": i["unit_amount"], "amount_total": line.get("amount_total")}
                  for i, line in zip(order["items"], lines)],
        "order_id": order["id"], "session_id": charged["id"], "currency": charged["currency"],
        **{k: charged[k] for k in AMOUNTS + ("tax_included", "promotion_code", "terms_accepted", "tax_ids")},
        "customer_email": charged["email"], "payment_intent": charged["payment_intent"],
        "customer_phone": typed((session.get("customer_details") or {}).get("phone")),  # for the carrier
        "shipping_method": charged["shipping_method"], "shipping_name": typed(shipping.get("name")),
        "shipping_address": {k: typed(address.get(k)) for k in ("line1", "line2", "city", "postal_code", "state",
                                                                 "country")},
        "fulfilled_at": utcnow(),
    }


CSV_ROWS = 100000  # an export's orders at most, /admin's and the command's
CSV_FIELDS = ("id", "created", "status", "email", "items", "subtotal", "discount", "shipping", "tax", "total",
              "currency", "refunded", "payment reference", "tax included", "delivery")


def write_csv(out, orders):
    """Orders as CSV with a header row, for /admin/orders.csv and `shop.py orders --csv`. A value that starts with
    = + - @ tab or CR gets a leading ' so no spreadsheet runs it as a formula (OWASP: CSV injection)."""
    def decimal(amount, currency):  # in major units: 1234 cents are 12.34
        return "" if amount is None else str(Decimal(amount).scaleb(-currency_exponent(currency)))

    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for o in orders:
        items = "; ".join(f"{i['quantity']} × {i['name']}" for i in o["items"])
        money = [decimal(o[k], o["currency"]) for k in (
            "amount_subtotal", "amount_discount", "amount_shipping", "amount_tax", "amount_total")]
        writer.writerow([("'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v) for v in (
            str(x or "") for x in (o["id"], o["created"], o["status"], o["customer_email"], items, *money,
                                   o["currency"], decimal(o["amount_refunded"], o["currency"]), o["payment_intent"],
                                   o["charged"] and ("yes" if o["charged"].get("tax_included") else "no"),
                                   (o["charged"] or {}).get("shipping_method")))])
