"""`python shop.py reconcile`: bring the ledger in line with what Stripe knows when webhooks never arrived."""

import time
from itertools import chain

from . import payments
from .catalog import money
from .fulfilment import UNCHANGED
from .ledger import PAID, iso_utc
from .settings import ShopError

EVENT_DAYS = 30  # how long reconcile keeps the ids of handled webhook events
LOST_AFTER = 600  # an order still without a session this long after checkout never reached Stripe
PAYMENT_EVENTS = ["checkout.session.completed", "checkout.session.async_payment_succeeded",
                  "checkout.session.async_payment_failed"]


def reconcile(ctx, args):
    """Repair the ledger from Stripe: orders whose webhooks never came (from its Checkout Sessions), bank payments
    still processing, refunds, disputes, clicks that never got a session; then forget old event ids."""
    since, quiet = int(time.time()) - args.since, getattr(args, "quiet", False)  # args from the parser, or made
    checked = repaired = 0
    window = {"created": {"gte": since}, "limit": 100}
    # https://docs.stripe.com/api/refunds/list: one paged list, so that only refunded orders cost a call each
    refunded = {r.get("payment_intent") for r in payments.listed("GET /v1/refunds", ctx.stripe.v1.refunds.list, window)}
    # and refunds that failed in the window, whenever they were made (events are kept 30 days)
    refunded |= {e["data"]["object"].get("payment_intent") for e in payments.listed(
        "GET /v1/events", ctx.stripe.v1.events.list, {**window, "type": "refund.failed"})}
    refunded -= {None}
    # https://docs.stripe.com/api/checkout/sessions/list (newest first; auto-paging follows has_more)
    listed = set()
    for checked, session in enumerate(payments.listed("GET /v1/checkout/sessions", ctx.stripe.v1.checkout.sessions.list,
                                                      window), 1):
        listed.add(session["id"])
        repaired += _repair(ctx, session)
    # and sessions paid in the window, whenever they were made (one lives up to 24 hours): from their events
    for event in payments.listed("GET /v1/events", ctx.stripe.v1.events.list, {**window, "types": PAYMENT_EVENTS}):
        session = event["data"]["object"]
        if session.get("id") not in listed:
            listed.add(session.get("id"))
            checked, repaired = checked + 1, repaired + _repair(ctx, session)
    # Payments first: refunds and disputes need the order paid.
    for line in chain(_catch_up_payments(ctx, listed), _catch_up_refunds(ctx, refunded),
                      _catch_up_disputes(ctx, since), _settle_lost_checkouts(ctx, since)):
        print(line)
        repaired += 1
    if not quiet:
        print(f"Checked {checked} checkout session(s) since {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(since))}"
              ": " + (f"repaired {repaired} order(s)." if repaired else "nothing to repair."))
    # Stripe retries an event for up to 3 days (https://docs.stripe.com/webhooks#retries); an id kept
    # for 30 still tells a late duplicate, and the table stops growing.
    if (forgotten := ctx.ledger.forget_events(EVENT_DAYS)) and not quiet:
        print(f"Forgot {forgotten} webhook event id(s) older than {EVENT_DAYS} days.")
    return 0


def _repair(ctx, session):
    sid, stripe_says = session["id"], payments.state(session)  # a listed session: its PaymentIntent is an id
    known = ctx.ledger.by_session(sid)
    order = known or ctx.order_for(sid, session, "reconcile")
    if order is None:
        return 0  # not a session this shop created
    claimed, state = known is None, order["status"]
    if (stripe_says == "paid" and order["fulfilled_at"] is None) or (
            stripe_says == "processing" and state in ("open", "checkout_failed", "expired", "awaiting_payment")):
        _, outcome = ctx.sync(sid, None, "reconcile")  # re-read with line items and the PaymentIntent
    elif (stripe_says, state) in (("expired", "open"), ("expired", "checkout_failed")):
        _, outcome = ctx.sync(sid, session, "reconcile")
    # A newer click replaced it and Stripe missed the expiry, or the shopper got an error and never saw it (and may
    # have paid a newer one since): either way it must not stay payable.
    elif stripe_says == "open" and state in ("expired", "checkout_failed"):
        try:
            expired, _, outcome = ctx.expire(sid, "reconcile")  # or paid meanwhile: then fulfilled
        except ShopError as e:
            if e.code != "still_open":
                raise
            print(f"{order['id']}: {e.detail} (the next run tries again)")  # the rest still repaired
            return 0
        if expired:
            print(f"{order['id']}: expired (its checkout {sid} was still open at Stripe: now expired)")
            return 1
    elif not claimed:
        return 0
    else:
        outcome = "session attached"
    after = ctx.ledger.get(order["id"])
    if ((after["status"], after["fulfilled_at"], after["amount_refunded"]) == (
            state, order["fulfilled_at"], order["amount_refunded"]) or outcome in UNCHANGED) and not claimed:
        return 0  # nothing changed, or another process (a webhook, a confirmation page) made the change meanwhile
    print(f"{order['id']}: {state} → {after['status']} ({outcome}; session {sid})")
    return 1


def _catch_up_payments(ctx, listed):
    """Bank payments still processing whose outcome event never arrived, however old their checkout: a debit
    settles days after it (https://docs.stripe.com/payments/ach-direct-debit/accept-a-payment#timing)."""
    live = ctx.config.mode == "live"
    for order in ctx.ledger.list(status="awaiting_payment", limit=10000):
        sid = order["session_id"]
        if not sid or sid in listed or sid.startswith("cs_live_") != live:  # listed, or the other mode's
            continue
        try:  # one read each, as for open disputes
            _, outcome = ctx.sync(sid, None, "reconcile", order=order)
        except ShopError as e:  # unknown to this key (another account's?): said, and the others still asked about
            if e.status != 404:
                raise
            print(f"{order['id']}: still awaiting_payment, its checkout {sid} unknown to Stripe: {e.detail}")
            continue
        after = ctx.ledger.get(order["id"])
        if after["status"] != order["status"] and outcome not in UNCHANGED:  # not another process's change
            yield f"{order['id']}: awaiting_payment → {after['status']} ({outcome}; session {sid})"


def _catch_up_refunds(ctx, refunded):
    """Refunds made in the window whose charge.refunded events never arrived, whenever their orders were paid."""
    for intent in refunded:
        order = ctx.ledger.by_payment_intent(intent)
        if not (order and order["fulfilled_at"] and order["status"] in PAID):  # disputed too: refunded before it
            continue
        total, failed = payments.refunded(ctx.stripe, intent)  # less any that failed since
        if (total != order["amount_refunded"] or failed[1] > order["refunds_failed"]) and ctx.ledger.apply_refund(
                order["id"], total, order["amount_total"] or 0, "reconcile",
                f"refunded {money(total, order['currency'])} in all (event missed)", failed):
            yield f"{order['id']}: {order['status']} → {ctx.ledger.get(order['id'])['status']} (refund recorded)"


def _catch_up_disputes(ctx, since):
    """Disputes whose charge.dispute.* events never arrived: opened in the window, or closed since we heard."""
    # https://docs.stripe.com/api/disputes/list (newest first); a dispute names its PaymentIntent.
    listed = list(payments.listed("GET /v1/disputes", ctx.stripe.v1.disputes.list,
                                  {"created": {"gte": since}, "limit": 100}))
    latest = {dispute.get("payment_intent"): dispute for dispute in reversed(listed)}  # the newest one wins
    # An open dispute may close weeks after it opened, outside the window: ask about each one we know of.
    for order in ctx.ledger.open_disputes():
        if order["payment_intent"] not in latest:
            found = payments.call("GET /v1/disputes", ctx.stripe.v1.disputes.list,
                                  {"payment_intent": order["payment_intent"], "limit": 1})
            if found.data:
                latest[order["payment_intent"]] = found.data[0].to_dict()
    for intent, dispute in latest.items():
        order = ctx.ledger.by_payment_intent(intent)  # None for a dispute without a PaymentIntent
        if order is None or order["fulfilled_at"] is None:  # not ours, or not paid yet (the sessions come first)
            continue
        if ctx.ledger.apply_dispute(order["id"], dispute, "reconcile"):
            after = ctx.ledger.get(order["id"])
            yield (f"{order['id']}: {order['status']} → {after['status']} (dispute {dispute.get('id')} "
                   f"{after['dispute_status']})")


def _settle_lost_checkouts(ctx, since):
    """Orders whose process died before their Checkout Session (the sessions listed above claimed any made)."""
    lost = ctx.ledger.list(status="open", since=iso_utc(since), before=iso_utc(time.time() - LOST_AFTER),
                           limit=10000, without_session=True)
    for order in lost:
        if ctx.ledger.transition(order["id"], ("open",), "checkout_failed", "reconcile", "no checkout session"):
            yield f"{order['id']}: open → checkout_failed (no checkout session was ever made)"
