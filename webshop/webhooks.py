"""POST /webhook: Stripe's signed events keep every order right, however late, often or out of order they come."""

import logging
import re

import stripe
from bottle import request, response

from . import payments
from .catalog import money
from .fulfilment import FULFILLED, UNCHANGED
from .ledger import Ledger
from .payments import CHARGE_EVENTS, EVENTS, SESSION_EVENTS
from .settings import ShopError

log = logging.getLogger("shop.webhooks")


class Retry(Exception):
    """The event cannot be applied yet (it overtook the payment); a 5xx makes Stripe send it again later."""


def install(app, shop):
    """Add POST /webhook to the app."""

    @app.post("/webhook")
    def webhook():
        """Verify the signature over the raw body, apply the event once, and answer 2xx only once it is stored."""
        standin = shop.orders.standin  # offline: its own secret, unless STRIPE_WEBHOOK_SECRET is set
        secret = shop.config.stripe_webhook_secret or (standin.webhook_secret if standin else "")
        if not secret:
            return refuse(shop, "STRIPE_WEBHOOK_SECRET is not set")
        body, signature = request.body.read(), request.environ.get("HTTP_STRIPE_SIGNATURE") or ""
        client = shop.orders.stripe
        try:
            # Verify over the raw body (a signature over 5 minutes old is a replay), then parse:
            # https://docs.stripe.com/webhooks#verify-official-libraries
            event = client.construct_event(body, signature, secret).to_dict()
        except stripe.SignatureVerificationError as e:
            return refuse(shop, f"signature: {_reason(e)}")
        except (ValueError, RecursionError, AttributeError, TypeError):  # not UTF-8, not JSON, not an object
            event = None
        if event is None and _thin(client, body, signature, secret):  # signed, but it holds no object to apply
            log.warning("webhook: a thin event ignored; this endpoint needs snapshot events to see orders")
            return answer(200, {"received": True, "outcome": "ignored: a thin event"})
        if problem := _problem(event):
            return refuse(shop, problem)
        try:
            order_id, outcome = apply(shop.orders, event)
        except Retry as e:
            log.info("webhook %s %s deferred: %s", event["id"], event["type"], e)
            return answer(503, {"error": f"not yet: {e}"})
        except ShopError as e:  # Stripe unreachable while re-reading the session
            log.warning("webhook %s %s failed: %s (%s)", event["id"], event["type"], e.status, e.detail or e.message)
            return answer(503 if e.status == 503 else 500, {"error": "could not apply the event; retry"})
        except Exception as e:  # never a traceback to the caller; not recorded, so Stripe's retry applies it
            if Ledger.unavailable(e):  # an outage, not a bug: the one error handler answers 503, without a traceback
                raise
            log.exception("webhook %s %s failed", event["id"], event["type"])
            return answer(500, {"error": "could not apply the event; retry"})
        obj_id = event["data"]["object"].get("id")  # checked only for the types the shop handles: shown if id-like
        log.info("webhook %s %s %s order=%s: %s", event["id"], event["type"], obj_id if _is(_ID, obj_id) else "-",
                 order_id or "-", outcome)
        return answer(200, {"received": True, "outcome": outcome})


def apply(orders, event):
    """Apply one verified event to its order; returns (order id or None, outcome)."""
    ledger = orders.ledger
    # Stripe may deliver an event more than once: https://docs.stripe.com/webhooks#handle-duplicate-events
    if ledger.seen_event(event["id"]):
        return None, "duplicate"
    kind, obj = event["type"], event["data"]["object"]
    source = f"webhook {event['id']} {kind}"
    order, outcome = None, "ignored: not an event this shop handles"
    if kind in SESSION_EVENTS:
        order = orders.order_for(obj["id"], obj, source)
        if order is None:
            outcome = "ignored: not a session of this shop"
        else:
            # Expiry is final, so an expired snapshot is enough (the fields _problem checked, no others); else the
            # session is re-read (1 call): Stripe decides.
            session = ({k: obj.get(k) for k in ("id", *_FIELDS["session"])}
                       if kind == "checkout.session.expired" and obj.get("status") == "expired" else None)
            _, outcome = orders.sync(obj["id"], session, source, order=order, event=(event["id"], kind),
                                     failed=kind == "checkout.session.async_payment_failed")
    elif kind in CHARGE_EVENTS:
        order = _charge_order(orders, obj, kind, source)
        if order is None:
            outcome = "ignored: not a payment of this shop"
        elif order["fulfilled_at"] is None:
            # The refund or dispute overtook the payment's own events; settle those first.
            raise Retry(f"order {order['id']} is not marked paid yet")
        elif kind == "charge.refunded" and not order["refund_failures"]:
            # Event object is the Charge with the running refunded total: https://docs.stripe.com/api/charges/object
            changed = ledger.apply_refund(order["id"], obj.get("amount_refunded") or 0,
                                          obj.get("amount_captured") or obj.get("amount") or 0, source,
                                          f"refunded {money(obj.get('amount_refunded'), order['currency'])} of "
                                          f"{money(obj.get('amount'), order['currency'])}")
            outcome = "refund recorded" if changed else "no change"
        elif kind in ("charge.refunded", "refund.failed"):
            # Once a refund failed (its money went back to the balance, not to the shopper), an event's total may be
            # from before the failure: Stripe's list of the payment's refunds says what was given back (1 call).
            intent, failing = payments.object_id(obj["payment_intent"]), kind == "refund.failed"  # (_problem checked)
            total, failed = payments.refunded(orders.stripe, intent)
            note = (f"refund {obj['id']} of {money(obj.get('amount'), order['currency'])} failed: not given back"
                    if failing else f"refunded {money(total, order['currency'])} in all")
            changed = ledger.apply_refund(order["id"], total, order["amount_total"] or 0, source, note, failed)
            if failing:
                log.warning("order %s: %s", order["id"], note)  # the merchant refunds the shopper another way
            outcome = "refund failed" if failing else "refund recorded" if changed else "no change"
        else:
            # Disputes: https://docs.stripe.com/disputes/how-disputes-work
            changed = ledger.apply_dispute(order["id"], obj, source)
            outcome = f"dispute {obj.get('status')}" if changed else "no change"
    order_id = order["id"] if order else None
    if outcome != FULFILLED:  # a fulfilment marks its event handled in its own transaction
        ledger.record_event(event["id"], kind, order_id, outcome if outcome in UNCHANGED else None)
    return order_id, outcome


def _charge_order(orders, obj, kind, source):
    """The order a Charge or Dispute belongs to: by its PaymentIntent or metadata, else (a dispute) by its session."""
    intent_id = payments.object_id(obj.get("payment_intent"))  # checked by _problem: an id, an object or None
    if intent_id is None:
        return None  # not a payment of ours
    order = orders.ledger.by_payment_intent(intent_id)
    if order is None:
        candidate = orders.ledger.get((obj.get("metadata") or {}).get("order_id"))  # checked: text or None
        order = candidate if candidate and candidate["payment_intent"] in (None, intent_id) else None
    if order is None and kind.startswith("charge.dispute."):
        # A dispute carries no metadata, and its event can overtake the session's own
        # (https://docs.stripe.com/webhooks#event-ordering): ask Stripe which session made the payment (1 call).
        sessions = payments.call("GET /v1/checkout/sessions", orders.stripe.v1.checkout.sessions.list,
                                 {"payment_intent": intent_id, "limit": 1}).data
        order = orders.order_for(sessions[0].id, sessions[0].to_dict(), source) if sessions else None
    return order


# Ids and types as Stripe makes them: they reach the ledger and the log as they are, so nothing else gets in.
_ID, _TYPE = re.compile(r"[A-Za-z0-9_-]{1,255}"), re.compile(r"[a-z0-9_.]{1,100}")
_STATUS = re.compile(r"[a-z_]{1,50}")  # Stripe's statuses, including ones newer than this code (the SDK allows any)
_CURRENCY = re.compile("[a-z]{3}")
_UNSTORABLE = re.compile("[\0\ud800-\udfff]")  # from a JSON escape: NUL (PostgreSQL), a surrogate (SQLite)
CEILING = 10 ** 12  # above any amount Stripe takes in any currency, far below SQLite's integer limit


def _is(pattern, value):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _optional(test):
    """A check passing None, or a value that passes `test`."""
    return lambda value: value is None or test(value)


_text = _optional(lambda v: isinstance(v, str) and len(v) <= 5000 and not _UNSTORABLE.search(v))
_typed = _optional(lambda v: isinstance(v, str))  # what a shopper typed: made storable as it is recorded
_dicts = _optional(lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v))
_status = _optional(lambda v: _is(_STATUS, v))
_amount = _optional(lambda v: type(v) is int and 0 <= v <= CEILING)
_metadata = _optional(lambda v: isinstance(v, dict) and all(_text(x) for x in v.values()))
_intent = _optional(lambda v: _is(_ID, v) or (isinstance(v, dict) and _is(_ID, v.get("id"))))
_code = _optional(lambda v: _is(_ID, v) or (isinstance(v, dict) and _text(v.get("code"))))  # an id, or expanded
_totals = _optional(lambda v: isinstance(v, dict) and all(_amount(v.get(k)) for k in ("amount_discount",
                                                                                     "amount_shipping", "amount_tax")))

# The fields of an event's object that the shop reads, and what each must be.
_FIELDS = {
    "session": {"metadata": _metadata, "client_reference_id": _text, "url": _text, "status": _status,
                "payment_status": _status, "expires_at": _amount, "payment_intent": _intent,
                # and what is recorded of an expired session's own snapshot, as it comes (no re-read)
                "amount_subtotal": _amount, "amount_total": _amount, "total_details": _totals,
                "currency": _optional(lambda v: _is(_CURRENCY, v)),
                "customer_details": _optional(lambda v: isinstance(v, dict) and _typed(v.get("email"))
                                              and _dicts(v.get("tax_ids"))),
                "consent": _optional(lambda v: isinstance(v, dict) and _text(v.get("terms_of_service"))),
                "discounts": _optional(lambda v: isinstance(v, list) and all(
                    isinstance(d, dict) and _code(d.get("promotion_code")) for d in v))},
    "charge": {"payment_intent": _intent, "metadata": _metadata, "amount": _amount, "amount_captured": _amount,
               "amount_refunded": _amount, "status": _status, "reason": _status,  # and a Dispute's:
               "evidence_details": _optional(lambda v: isinstance(v, dict) and _amount(v.get("due_by")))},
}


def _problem(event):
    """Why a verified body is no event the shop can apply (a field of a type Stripe never sends), or None."""
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not (isinstance(obj, dict) and event.get("object") == "event" and _is(_ID, event.get("id"))
            and _is(_TYPE, event.get("type")) and (event["type"] not in EVENTS or _is(_ID, obj.get("id")))):
        return "body is not a Stripe event"
    kind = "session" if event["type"] in SESSION_EVENTS else "charge" if event["type"] in CHARGE_EVENTS else None
    if kind and not all(check(obj.get(name)) for name, check in _FIELDS[kind].items()):
        return "event fields of the wrong type"
    return None


def _thin(client, body, signature, secret):
    """Whether the body is a verified thin event (https://docs.stripe.com/event-destinations#thin-payload)."""
    try:
        return client.parse_event_notification(body, signature, secret) is not None
    except Exception:  # not one either: refused as any other body
        return False


def _reason(error):
    known = ("No Stripe-Signature header", "Unable to extract timestamp", "No signatures found with expected",
             "No signatures found matching", "Timestamp outside the tolerance")
    return next((k.lower() for k in known if str(error).startswith(k)), "invalid")


def refuse(shop, reason):
    """400 for a delivery that is not a verified Stripe event (or no secret to verify it with); one log line, nothing
    changed."""
    # The client's whole address, as Guard finds it for /admin (which then counts an IPv6 one by its /64):
    # bottle's remote_addr would take X-Forwarded-For from anyone.
    log.warning("webhook refused from %s: %s", shop.guard.client_address(request), reason)
    return answer(400, {"error": "invalid webhook delivery"})


def answer(status, body):
    response.status = status  # (no-store, as every answer the route did not mark otherwise)
    return body
