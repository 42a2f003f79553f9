"""POST /webhook: signature checks, every event type, duplicates and reordering, through the stand-in's deliveries."""

import json
import logging
import time

import pytest

from standin import ASYNC_FAIL, ASYNC_OK
from tests.conftest import (DISPUTED, buy, edit_catalog, event, handoff, order, paid, pending, post_event, post_raw,
                            sign, start, wire)
from webshop import merchant

SESSION_GET = "GET /v1/checkout/sessions/{id}"


def events_recorded(shopper):
    with shopper.shop.orders.ledger.db.read() as c:
        return c.execute("SELECT COUNT(*) AS n FROM webhook_events").fetchone()["n"]


def failing_fulfil(shopper, error, times=1):
    """Make the ledger's fulfil() raise `error` (the database failing mid-claim) for its next `times` calls."""
    ledger = shopper.shop.orders.ledger
    real, calls = ledger.fulfil, []

    def fulfil(*args, **kwargs):
        calls.append(args[0])
        if len(calls) <= times:
            raise error
        return real(*args, **kwargs)
    ledger.fulfil = fulfil
    return calls


@pytest.fixture
def shop(make_shopper):
    return wire(make_shopper())


# -- verification --------------------------------------------------------------------------------------------------

def test_paid_session_is_fulfilled_by_its_signed_webhook(shop):
    sid = buy(shop)
    assert order(shop, sid)["status"] == "open" and handoff(shop) == []
    before = shop.standin.calls[SESSION_GET]
    results = shop.standin.deliver_pending()
    assert results and all(status == 200 for _, status in results)
    assert shop.standin.calls[SESSION_GET] - before == 1  # one re-read for one checkout.session.* event
    paid = order(shop, sid)
    assert paid["status"] == "paid" and paid["fulfilled_at"] and paid["payment_intent"].startswith("pi_")
    assert [line["order_id"] for line in handoff(shop)] == [paid["id"]]
    completed = next(e for e, _ in results if shop.standin.get(e)["type"] == "checkout.session.completed")
    history = shop.shop.orders.ledger.history(paid["id"])
    assert history[-1]["source"] == f"webhook {completed} checkout.session.completed"
    assert history[-1]["status"] == "paid"


def test_a_webhook_leaves_a_catalog_edit_to_the_pages_so_no_check_runs_inside_its_transaction(
        make_shopper, catalog_copy):
    """Checking a large edit takes seconds: a webhook that took it up would hold the ledger's writes (every checkout)
    while its order is marked paid."""
    shop = wire(make_shopper(catalog=str(catalog_copy)))
    sid = buy(shop)
    with edit_catalog(catalog_copy) as data:
        data["shop"]["name"] = "Lantern Books"
    reads = shop.shop.catalogs.reads
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "paid" and shop.shop.catalogs.reads == reads
    page = shop.get("/").text
    assert "Lantern Books" in page and "Paper Lantern" not in page and shop.shop.catalogs.reads == reads + 1


def _bad_deliveries(evt, secret):
    body = json.dumps(evt)
    now = int(time.time())
    tampered = body.replace('"amount_total": ', '"amount_total": 1')
    return {
        "unsigned": (body, None),
        "empty signature": (body, ""),
        "wrong secret": (body, sign(body, "whsec_" + "0" * 32)),
        "stale": (body, sign(body, secret, now - 301)),
        "tampered": (tampered, sign(body, secret)),
        "malformed header": (body, "t=yesterday,v1=zz"),
        "no v1 scheme": (body, f"t={now},v0=" + "a" * 64),
        "not json": ("this is not json", sign("this is not json", secret)),
        "json but not an event": ('{"hello": "world"}', sign('{"hello": "world"}', secret)),
        "event without an object id": (json.dumps({**evt, "data": {"object": {}}}),
                                       sign(json.dumps({**evt, "data": {"object": {}}}), secret)),
        "data is not an object": (json.dumps({**evt, "data": "x"}), sign(json.dumps({**evt, "data": "x"}), secret)),
        "nested past what json reads": ("[" * 100_000 + "]" * 100_000,
                                        sign("[" * 100_000 + "]" * 100_000, secret)),
        **{f"signed, but {what}": (json.dumps(bad), sign(json.dumps(bad), secret)) for what, bad in (
            ("an event id with a lone surrogate", {**evt, "id": "evt_\ud800"}),
            ("an event id with control characters", {**evt, "id": "evt_\u202e\nforged log line"}),
            ("a type that is not a Stripe type", {**evt, "type": "checkout.session.completed\r\nX"}),
            ("metadata that is a string", _with(evt, metadata="order_id=1")),
            ("an order id that is a list", _with(evt, metadata={"order_id": ["x"]})),
            ("expires_at as a float", _with(evt, expires_at=12.5)),
        )},
    }


def _with(evt, **fields):
    """The event with fields of its object replaced."""
    return {**evt, "data": {"object": {**evt["data"]["object"], **fields}}}


@pytest.mark.parametrize("case", ["unsigned", "empty signature", "wrong secret", "stale", "tampered",
                                  "malformed header", "no v1 scheme", "not json", "json but not an event",
                                  "event without an object id", "data is not an object", "nested past what json reads",
                                  *(f"signed, but {what}" for what in (
                                      "an event id with a lone surrogate", "an event id with control characters",
                                      "a type that is not a Stripe type", "metadata that is a string",
                                      "an order id that is a list", "expires_at as a float"))])
def test_unverified_deliveries_are_refused_and_change_nothing(shop, case, caplog):
    sid = buy(shop)
    evt = pending(shop, "checkout.session.completed")[0]
    body, signature = _bad_deliveries(evt, shop.standin.webhook_secret)[case]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        res = post_raw(shop, body.encode(), signature)
    assert res.status_int == 400
    assert res.json == {"error": "invalid webhook delivery"}
    assert "Traceback" not in res.text and shop.standin.webhook_secret not in res.text
    refusals = [r for r in caplog.records if r.name == "shop.webhooks"]
    assert len(refusals) == 1 and "refused" in refusals[0].getMessage()
    assert shop.standin.webhook_secret not in caplog.text
    assert order(shop, sid)["status"] == "open" and handoff(shop) == [] and events_recorded(shop) == 0
    shop.standin.deliver_pending()  # the genuine delivery still works
    assert order(shop, sid)["status"] == "paid"


def test_refusals_before_the_endpoint_runs_are_json_too(shop):
    big = shop.post("/webhook", b"x" * (600 * 1024), headers={"Content-Type": "application/json"}, status=413)
    assert big.content_type == "application/json" and big.json == {"error": "That request is too large."}
    wrong = shop.get("/webhook", status=405)
    assert wrong.content_type == "application/json" and wrong.headers["Allow"] == "POST" and "error" in wrong.json


def test_non_utf8_body_is_refused(shop):
    body = b"\xff\xfe not text"
    res = post_raw(shop, body, f"t={int(time.time())},v1=" + "0" * 64)
    assert res.status_int == 400


def test_without_a_secret_outside_offline_mode_every_event_is_refused(make_shopper, capsys):
    test_mode = make_shopper(stripe_secret_key="sk_test_" + "x" * 24)
    evt = event("checkout.session.completed", {"id": "cs_test_x", "object": "checkout.session"})
    res = post_event(test_mode, evt, secret="whsec_anything")
    assert res.status_int == 400 and res.json == {"error": "invalid webhook delivery"}
    assert merchant.check(test_mode.shop.config) == 1
    assert "STRIPE_WEBHOOK_SECRET: not set" in capsys.readouterr().out


def test_offline_mode_signs_and_verifies_with_the_configured_secret(make_shopper):
    secret = "whsec_" + "ab" * 20
    shop = wire(make_shopper(stripe_webhook_secret=secret))
    assert shop.standin.webhook_secret == secret
    sid = buy(shop)
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "paid"
    evt = event("checkout.session.completed", {"id": sid, "object": "checkout.session"})
    assert post_event(shop, evt, secret="whsec_" + "cd" * 20).status_int == 400


def test_offline_secret_is_generated_once_and_kept_in_data_dir(make_shopper, data_dir):
    first = make_shopper().standin.webhook_secret
    assert first.startswith("whsec_") and make_shopper().standin.webhook_secret == first
    assert first in (data_dir / "standin_webhook_secret").read_text()


# -- duplicates, unknowns, failures --------------------------------------------------------------------------------

def test_repeated_event_id_is_acknowledged_and_does_nothing(shop):
    sid = buy(shop)
    results = shop.standin.deliver_pending(duplicate=True)  # every event sent twice
    assert all(status == 200 for _, status in results)
    completed = next(e for e, _ in results if shop.standin.get(e)["type"] == "checkout.session.completed")
    res = post_event(shop, shop.standin.get(completed))
    assert res.status_int == 200 and res.json["outcome"] == "duplicate"
    assert len(handoff(shop)) == 1
    sources = [h["source"] for h in shop.shop.orders.ledger.history(order(shop, sid)["id"])]
    assert sum(completed in s for s in sources) == 1


def test_an_unhandled_event_cannot_write_a_line_of_its_own_into_the_log(shop, caplog):
    forged = {"id": "pi_1\n2026-11-30 12:00:00,000 ERROR shop forged line", "object": "payment_intent"}
    with caplog.at_level(logging.INFO):
        res = post_event(shop, event("payment_intent.created", forged))
    assert res.status_int == 200 and res.json["outcome"].startswith("ignored")
    assert "forged line" not in caplog.text and "payment_intent.created - order=-" in caplog.text


@pytest.mark.parametrize("kind, obj", [
    ("checkout.session.completed", {"id": "cs_test_nul", "metadata": {"order_id": "o\0"}}),
    ("checkout.session.completed", {"id": "cs_test_nul", "client_reference_id": "a\0"}),
    ("charge.refunded", {"id": "ch_nul", "payment_intent": "pi_nul", "metadata": {"order_id": "\0"}}),
])
def test_a_signed_event_with_a_nul_in_its_text_is_refused_as_any_malformed_one(shop, kind, obj):
    """PostgreSQL stores no NUL in text: such a value reaching a query was a 500, which Stripe retries for days."""
    res = post_event(shop, event(kind, obj))
    assert res.status_int == 400 and res.json == {"error": "invalid webhook delivery"}


def test_unknown_types_and_foreign_sessions_are_acknowledged_and_ignored(shop, caplog):
    before = sum(shop.standin.calls.values())
    with caplog.at_level(logging.INFO):
        res = post_event(shop, event("customer.created", {"id": "cus_123", "object": "customer"}))
        assert res.status_int == 200 and res.json["outcome"].startswith("ignored")
        foreign = {"id": "cs_test_not_ours", "object": "checkout.session", "status": "complete",
                   "payment_status": "paid", "metadata": {}, "client_reference_id": None}
        res = post_event(shop, event("checkout.session.completed", foreign))
        assert res.status_int == 200 and res.json["outcome"] == "ignored: not a session of this shop"
        charge = {"id": "ch_x", "object": "charge", "payment_intent": "pi_not_ours", "amount_refunded": 5,
                  "amount": 10, "metadata": {}}
        assert post_event(shop, event("charge.refunded", charge)).json["outcome"].startswith("ignored")
    assert sum(shop.standin.calls.values()) == before  # nothing of ours: no API calls
    dispute = {"id": "dp_x", "object": "dispute", "charge": "ch_x", "payment_intent": "pi_not_ours", "status": "lost"}
    assert post_event(shop, event("charge.dispute.created", dispute)).json["outcome"].startswith("ignored")
    assert sum(shop.standin.calls.values()) == before + 1  # a dispute names no order: Stripe is asked whose it is
    assert "cs_test_not_ours" in caplog.text and handoff(shop) == []


def test_a_signed_thin_event_is_acknowledged_and_the_log_says_what_the_endpoint_needs(shop, caplog):
    # An event destination set to thin payloads sends these: https://docs.stripe.com/event-destinations
    thin = {"id": "evt_test_65R9Ijk8bdzE2UpH5MFd", "object": "v2.core.event", "livemode": False,
            "type": "v1.billing.meter.error_report_triggered", "created": "2024-09-17T06:20:52.246Z",
            "related_object": {"id": "mtr_test_61R9", "type": "billing.meter", "url": "/v1/billing/meters/mtr_test_61R9"}}
    with caplog.at_level(logging.INFO):
        res = post_event(shop, thin)
    assert res.status_int == 200 and res.json["outcome"] == "ignored: a thin event"
    assert "needs snapshot events" in caplog.text
    assert post_event(shop, thin, secret="whsec_other").status_int == 400  # verified first, as every delivery


def test_exception_inside_fulfilment_answers_500_and_the_retry_fulfils_once(shop):
    calls = failing_fulfil(shop, OSError("disk full"))
    sid = buy(shop)
    first = dict(shop.standin.deliver_pending())
    completed = pending(shop, "checkout.session.completed")[0]["id"]
    assert first[completed] == 500
    assert order(shop, sid)["status"] == "open" and order(shop, sid)["fulfilled_at"] is None
    assert not shop.shop.orders.ledger.seen_event(completed) and handoff(shop) == []
    second = dict(shop.standin.deliver_pending())  # Stripe's retry
    assert second == {completed: 200}
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1 and len(calls) == 2
    assert shop.standin.deliver_pending() == []


def test_error_response_is_json_without_a_traceback(shop):
    failing_fulfil(shop, ZeroDivisionError("division by zero"))
    buy(shop)
    evt = pending(shop, "checkout.session.completed")[0]
    res = post_event(shop, evt)
    assert res.status_int == 500 and res.json == {"error": "could not apply the event; retry"}
    assert "ZeroDivisionError" not in res.text and "Traceback" not in res.text


def test_stripe_unreachable_while_applying_answers_503_then_the_retry_succeeds(shop):
    sid = buy(shop)
    shop.standin.faults.add(SESSION_GET, "500", times=3)  # the first try and both SDK retries fail
    completed = pending(shop, "checkout.session.completed")[0]["id"]
    assert dict(shop.standin.deliver_pending())[completed] == 503
    assert order(shop, sid)["status"] == "open"
    assert dict(shop.standin.deliver_pending())[completed] == 200
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1


# -- the life cycle: delayed payments, expiry, refunds, disputes -----------------------------------------------------

def test_delayed_payment_success(shop):
    sid = buy(shop, card=ASYNC_OK)
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "awaiting_payment" and handoff(shop) == []
    assert "Your payment is processing" in shop.get(f"/success?session_id={sid}").text
    assert shop.standin.settle_async(sid) == 1
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    assert "Thank you for your order" in shop.get(f"/success?session_id={sid}").text


def test_delayed_payment_failure(shop):
    sid = buy(shop, card=ASYNC_FAIL)
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "awaiting_payment"
    shop.standin.settle_async(sid)
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "payment_failed" and handoff(shop) == []
    page = shop.get(f"/success?session_id={sid}")
    assert "did not go through" in page.text and "Thank you" not in page.text


@pytest.mark.parametrize("card, final, lines", [(ASYNC_OK, "paid", 1), (ASYNC_FAIL, "payment_failed", 0)])
def test_async_outcome_before_completed_ends_in_the_right_state(shop, card, final, lines):
    sid = buy(shop, card=card)
    shop.standin.settle_async(sid)
    results = shop.standin.deliver_pending(reverse=True)  # the async event first, completed last
    kinds = [shop.standin.get(e)["type"] for e, _ in results]
    assert kinds[-1] == "checkout.session.completed" and kinds[0].startswith("checkout.session.async_payment")
    assert order(shop, sid)["status"] == final and len(handoff(shop)) == lines


def test_expiry(shop):
    sid = start(shop)
    shop.shop.orders.stripe.v1.checkout.sessions.expire(sid)
    before = shop.standin.calls[SESSION_GET]
    assert [s for _, s in shop.standin.deliver_pending()] == [200]
    assert shop.standin.calls[SESSION_GET] == before  # expiry is final: the event's snapshot is enough
    assert order(shop, sid)["status"] == "expired"
    assert "This checkout has expired" in shop.get(f"/success?session_id={sid}").text


def test_an_expired_snapshot_names_no_promotion_code_by_its_id(shop):
    """Its discounts are not expanded: the page and /admin show the code as typed, or none, never a promo_ id."""
    sid = start(shop)
    snapshot = {**shop.shop.orders.stripe.v1.checkout.sessions.expire(sid).to_dict(),
                "discounts": [{"coupon": None, "promotion_code": "promo_1Nu7Lw2eZvKYlo2C"}],
                "total_details": {"amount_discount": 150, "amount_shipping": 0, "amount_tax": 0}}
    assert post_event(shop, event("checkout.session.expired", snapshot)).status_int == 200
    assert order(shop, sid)["status"] == "expired" and order(shop, sid)["promotion_code"] is None
    assert "promo_" not in shop.get(f"/success?session_id={sid}").text


@pytest.mark.parametrize("field", [
    {"customer_details": {"email": "a@example.com", "tax_ids": "xy"}}, {"payment_intent": "pi_\0"}, {"currency": 5},
    {"consent": {"terms_of_service": "accepted\0"}}, {"discounts": [{"promotion_code": {"code": "A\0B"}}]},
    {"total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": "x"}}])
def test_an_expired_snapshot_with_a_field_no_database_stores_is_refused_and_changes_nothing(shop, field):
    """The snapshot is recorded as it comes: a NUL was a 500 on PostgreSQL, a text tax an integer column's text."""
    sid = start(shop)
    snapshot = {**shop.shop.orders.stripe.v1.checkout.sessions.expire(sid).to_dict(), **field}
    res = post_event(shop, event("checkout.session.expired", snapshot))
    assert res.status_int == 400 and order(shop, sid)["status"] == "open"


@pytest.mark.parametrize("field, email", [({"shipping_cost": "x"}, None), ({"line_items": [1]}, None),
                                          ({"customer_details": {"email": "a\0@example.com"}}, "a\ufffd@example.com")])
def test_an_expired_snapshot_is_recorded_from_the_fields_the_shop_checks_only(shop, field, email):
    """A field the shop neither checks nor records, of a type Stripe never sends, was a 500 that Stripe retried for
    days; an email is recorded made storable."""
    sid = start(shop)
    snapshot = {**shop.shop.orders.stripe.v1.checkout.sessions.expire(sid).to_dict(), **field}
    res = post_event(shop, event("checkout.session.expired", snapshot))
    assert res.status_int == 200 and res.json["outcome"] == "expired" and order(shop, sid)["status"] == "expired"
    assert order(shop, sid)["currency"] == "usd" and order(shop, sid)["customer_email"] == email


@pytest.mark.parametrize("email", ["a\0b@example.com", "a\ud800b@example.com", "a" * 6000 + "@example.com"])
@pytest.mark.parametrize("by", ["webhook", "success page"])
def test_a_paid_session_whose_email_no_database_stores_as_it_is_is_fulfilled_once(shop, email, by):
    """A Stripe that took such an email (a stand-in of examples): the paid order was never fulfilled; its events
    were refused, and on PostgreSQL its confirmation page was a 500."""
    sid = buy(shop)
    with shop.standin.store.tx(write=True) as tx:
        session = tx.get(sid)
        session["customer_details"]["email"] = email
        tx.put(session)
    if by == "webhook":
        snapshot = shop.shop.orders.stripe.v1.checkout.sessions.retrieve(sid).to_dict()
        res = post_event(shop, event("checkout.session.completed", snapshot))
        assert res.status_int == 200 and res.json["outcome"] == "fulfilled"
    else:
        assert "payment went through" in shop.get(f"/success?session_id={sid}").text
    stored = email.replace("\0", "\ufffd").replace("\ud800", "\ufffd")
    assert order(shop, sid)["status"] == "paid" and order(shop, sid)["customer_email"] == stored
    assert [r["customer_email"] for r in handoff(shop)] == [stored]
    assert {s for _, s in shop.standin.deliver_pending()} == {200}  # the queued completed event: nothing more to do
    assert len(handoff(shop)) == 1


def test_an_expired_snapshot_in_another_currency_than_its_orders_records_nothing(shop):
    """Not this order's session (a Stripe of fixed examples): its amounts would be recorded in the wrong money."""
    sid = start(shop)
    snapshot = {**shop.shop.orders.stripe.v1.checkout.sessions.expire(sid).to_dict(), "currency": "eur"}
    assert post_event(shop, event("checkout.session.expired", snapshot)).status_int == 500
    assert order(shop, sid)["status"] == "open"


def test_expired_event_after_payment_does_not_unpay(shop):
    sid = buy(shop)
    shop.standin.deliver_pending()
    snapshot = {**shop.standin.get(sid), "status": "expired", "payment_status": "unpaid"}
    res = post_event(shop, event("checkout.session.expired", snapshot))
    assert res.status_int == 200 and res.json["outcome"] == "no change"
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    notes = [(h["source"], h["note"]) for h in shop.shop.orders.ledger.history(order(shop, sid)["id"])]
    assert notes[-1][0].endswith("checkout.session.expired") and notes[-1][1] == "no change"


def test_completed_after_expired_for_a_paid_session_ends_paid(shop):
    sid = buy(shop)
    snapshot = {**shop.standin.get(sid), "status": "expired", "payment_status": "unpaid"}
    assert post_event(shop, event("checkout.session.expired", snapshot)).status_int == 200
    assert order(shop, sid)["status"] == "expired"
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1


def _refund(shop, sid, amount=None):
    params = {"payment_intent": shop.standin.get(sid)["payment_intent"]}
    if amount is not None:
        params["amount"] = amount
    return shop.shop.orders.stripe.v1.refunds.create(params)


def test_partial_then_full_refund(shop):
    sid = buy(shop)
    shop.standin.deliver_pending()
    total = order(shop, sid)["amount_total"]
    _refund(shop, sid, 500)
    before = sum(shop.standin.calls.values())
    shop.standin.deliver_pending()
    assert sum(shop.standin.calls.values()) == before  # charge events cost no API call
    o = order(shop, sid)
    assert (o["status"], o["amount_refunded"]) == ("partially_refunded", 500)
    page = shop.get(f"/success?session_id={sid}").html  # the receipt says so
    assert page.find("dt", string="Status").find_next_sibling("dd").text == "Partly refunded"
    assert page.find("th", string="Refunded").find_next_sibling("td").text == "−$5.00"
    net = page.find("th", string="Paid after refunds").find_next_sibling("td").text
    assert net.startswith(f"${(total - 500) / 100:.2f}") and "$5.00 of it has been refunded" in page.text
    _refund(shop, sid)
    shop.standin.deliver_pending()
    o = order(shop, sid)
    assert (o["status"], o["amount_refunded"]) == ("refunded", total)
    page = shop.get(f"/success?session_id={sid}").html
    assert page.find("dt", string="Status").find_next_sibling("dd").text == "Refunded"
    assert "refunded in full" in page.text and "order is confirmed" not in page.text
    assert len(handoff(shop)) == 1


@pytest.mark.parametrize("field, value", [("amount_refunded", "500"), ("amount_refunded", 12.75),
                                          ("amount_refunded", 10 ** 30), ("amount_refunded", -1),
                                          ("amount", True), ("status", {}), ("payment_intent", ["pi_x"])])
def test_a_signed_charge_event_with_a_field_stripe_never_sends_is_refused(shop, field, value, caplog):
    sid = buy(shop)
    shop.standin.deliver_pending()
    _refund(shop, sid, 500)
    (refunded,) = pending(shop, "charge.refunded")
    with caplog.at_level(logging.INFO):
        res = post_event(shop, _with(refunded, **{field: value}))
    assert res.status_int == 400 and res.json == {"error": "invalid webhook delivery"}
    assert "event fields of the wrong type" in caplog.text and "Traceback" not in caplog.text
    assert (order(shop, sid)["status"], order(shop, sid)["amount_refunded"]) == ("paid", 0)
    shop.standin.deliver_pending()  # Stripe's own event still applies
    assert (order(shop, sid)["status"], order(shop, sid)["amount_refunded"]) == ("partially_refunded", 500)


def test_refund_events_out_of_order_keep_the_largest_refunded_amount(shop):
    sid = buy(shop)
    shop.standin.deliver_pending()
    total = order(shop, sid)["amount_total"]
    _refund(shop, sid, 300)
    _refund(shop, sid)
    shop.standin.deliver_pending(reverse=True)  # the full refund first, the partial one after
    o = order(shop, sid)
    assert (o["status"], o["amount_refunded"]) == ("refunded", total)


def test_refund_that_overtakes_the_payment_is_retried_until_the_order_is_paid(shop):
    sid = buy(shop)
    _refund(shop, sid, 200)
    first = {shop.standin.get(e)["type"]: s for e, s in shop.standin.deliver_pending(reverse=True)}
    assert first["charge.refunded"] == 503 and first["checkout.session.completed"] == 200
    assert order(shop, sid)["status"] == "paid"
    again = {shop.standin.get(e)["type"]: s for e, s in shop.standin.deliver_pending()}
    assert again == {"charge.refunded": 200}
    o = order(shop, sid)
    assert (o["status"], o["amount_refunded"]) == ("partially_refunded", 200)


def test_a_dispute_that_overtakes_the_payment_is_retried_until_the_order_is_paid(shop):
    """A dispute carries no metadata: the shop asks Stripe whose session made the payment, and waits for it."""
    sid = buy(shop, card=DISPUTED)
    first = {shop.standin.get(e)["type"]: s for e, s in shop.standin.deliver_pending(reverse=True)}
    assert first["charge.dispute.created"] == 503 and first["checkout.session.completed"] == 200
    again = {shop.standin.get(e)["type"]: s for e, s in shop.standin.deliver_pending()}
    assert again == {"charge.dispute.created": 200}
    o = order(shop, sid)
    assert (o["status"], o["dispute_status"], len(handoff(shop))) == ("disputed", "needs_response", 1)


@pytest.mark.parametrize("won", [True, False])
def test_dispute_created_then_closed(shop, won):
    sid = buy(shop, card=DISPUTED)
    dispute = pending(shop, "charge.dispute.created")[0]["data"]["object"]["id"]
    shop.standin.deliver_pending()
    o = order(shop, sid)
    assert (o["status"], o["dispute_status"]) == ("disputed", "needs_response")
    assert len(handoff(shop)) == 1  # it was paid (and fulfilled) before the dispute
    shop.standin.close_dispute(dispute, won=won)
    shop.standin.deliver_pending()
    o = order(shop, sid)
    assert (o["status"], o["dispute_status"]) == ("disputed", "won" if won else "lost")


def test_dispute_closed_before_created_keeps_the_outcome(shop):
    sid = buy(shop, card=DISPUTED)
    dispute = pending(shop, "charge.dispute.created")[0]["data"]["object"]["id"]
    completed = pending(shop, "checkout.session.completed")[0]["id"]
    assert shop.standin.redeliver(completed) == 200  # the payment is known first
    shop.standin.close_dispute(dispute, won=False)
    results = shop.standin.deliver_pending(reverse=True)
    kinds = [shop.standin.get(e)["type"] for e, _ in results]
    assert kinds.index("charge.dispute.closed") < kinds.index("charge.dispute.created")
    assert all(status == 200 for _, status in results)
    o = order(shop, sid)
    assert (o["status"], o["dispute_status"], o["fulfilled_at"] is not None) == ("disputed", "lost", True)


@pytest.mark.parametrize("final", ["won", "lost", "warning_closed", "prevented"])
def test_a_closed_dispute_s_outcome_is_never_undone_by_a_late_event(shop, final):
    o = paid(shop)
    dispute = {"id": "du_late", "object": "dispute", "payment_intent": o["payment_intent"]}
    assert post_event(shop, event("charge.dispute.closed", {**dispute, "status": final})).status_int == 200
    assert post_event(shop, event("charge.dispute.created", {**dispute, "status": "needs_response"})).status_int == 200
    assert (order(shop, o["session_id"])["status"], order(shop, o["session_id"])["dispute_status"]) == ("disputed",
                                                                                                       final)


# -- the shopper's side ----------------------------------------------------------------------------------------------

CONTINUE = "Continue your payment"


def test_continue_your_payment_is_offered_until_the_order_is_paid(shop):
    sid = start(shop)
    assert CONTINUE in shop.get("/cart").text
    shop.standin.pay(sid)
    shop.standin.deliver_pending()
    assert CONTINUE not in shop.get("/cart").text


def test_continue_your_payment_says_what_it_pays_when_the_cart_has_changed_since(shop):
    shop.add("walden")
    shop.session_id(shop.checkout())  # then Back from the payment page
    page = shop.get("/cart").text
    assert CONTINUE in page and "not your cart as it is now" not in page  # the open checkout is this cart
    shop.add("moby-dick")
    page = shop.get("/cart").text
    assert CONTINUE in page and "still open for 1 × Walden, which is not your cart as it is now" in page


def test_a_new_checkout_expires_the_one_left_open_so_it_cannot_be_paid_as_well(shop):
    first = start(shop)  # then "Back" from the payment page, and Checkout again
    second = start(shop)
    assert order(shop, first)["status"] == "expired" and shop.standin.get(first)["status"] == "expired"
    shop.standin.pay(second)
    shop.standin.deliver_pending()
    assert CONTINUE not in shop.get("/cart").text
    paying_the_first = shop.get(f"/offline-checkout/{first}", status=410)
    assert "no longer active, and nothing was charged" in paying_the_first.text
    assert [order(shop, sid)["status"] for sid in (first, second)] == ["expired", "paid"]


def test_a_new_checkout_after_paying_in_a_tab_closed_before_its_events_is_a_new_payment(shop, caplog):
    first = buy(shop)  # paid; the tab closed before the confirmation, and no event has arrived yet
    with caplog.at_level(logging.INFO, logger="shop"):
        second = start(shop, product="moby-dick")  # another book: a checkout of its own, not the paid one again
    assert [r.levelname for r in caplog.records if "could not expire" in r.message] == ["INFO"]  # no fault
    assert second != first and shop.standin.get(second)["status"] == "open"
    assert [order(shop, sid)["status"] for sid in (first, second)] == ["paid", "open"]  # learnt on the way
    assert [o["status"] for o in shop.shop.orders.ledger.list()].count("expired") == 1  # the try that learnt it


def test_paying_in_another_tab_meanwhile_counts_the_new_checkout_once_against_the_limit(make_shopper):
    shopper = make_shopper(checkout_limit=2)
    first = buy(shopper)  # the browser's first checkout this minute, paid in another tab; no event yet
    shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": "moby-dick"}, status=303)  # its second
    assert order(shopper, first)["status"] == "paid"


@pytest.mark.parametrize("unknown, expires_in, payable", [
    ("cs_live_" + "x" * 40, 3600, False),  # made in the other mode: this shop's keys never pay it
    ("cs_test_" + "x" * 40, -60, False),  # past its expiry
    ("cs_test_" + "x" * 40, 3600, True)])  # the key of another Stripe account, say: it may still be paid there
def test_an_open_checkout_stripe_does_not_know_blocks_the_browser_only_while_it_may_be_paid(shop, unknown, expires_in,
                                                                                            payable):
    first = start(shop)
    with shop.shop.orders.ledger.db.tx() as c:
        c.execute("UPDATE orders SET session_id = ?, session_expires_at = ? WHERE session_id = ?",
                  (unknown, int(time.time()) + expires_in, first))
    again = shop.post("/checkout", {"csrf_token": shop.csrf(), "product_id": "moby-dick"}, expect_errors=True)
    if payable:  # refused: a second payable checkout beside it is worse than a retry later
        assert again.status_int == 409 and "earlier checkout could not be closed" in again.text
        assert order(shop, unknown)["status"] == "open"
    else:
        assert again.status_int == 303 and order(shop, unknown)["status"] == "expired"
        assert order(shop, shop.session_id(again))["status"] == "open"


def test_continue_your_payment_is_hidden_once_expired(shop):
    sid = start(shop)
    shop.shop.orders.stripe.v1.checkout.sessions.expire(sid)
    shop.standin.deliver_pending()
    assert CONTINUE not in shop.get("/cart").text


def test_continue_your_payment_is_hidden_when_expires_at_has_passed_without_an_event(shop):
    sid = start(shop)
    o = order(shop, sid)
    assert o["session_expires_at"] > time.time()
    shop.shop.orders.ledger.transition(o["id"], ("open",), "open", "test", session_expires_at=int(time.time()) - 1)
    assert CONTINUE not in shop.get("/cart").text
    assert order(shop, sid)["status"] == "open"  # the expiry event (or reconcile) still settles the order


@pytest.mark.parametrize("intent", [["pi_1"], 42, None, {"id": 7}, "pi_not_ours"])
@pytest.mark.parametrize("kind", ["charge.refunded", "charge.dispute.created"])
def test_signed_charge_events_with_odd_payment_intents_are_ignored_or_refused_not_500(shop, kind, intent):
    response = post_event(shop, event(kind, {"id": "ch_odd", "object": "charge", "payment_intent": intent,
                                             "metadata": {}, "amount_refunded": 5}))
    if intent is None or isinstance(intent, str):  # a charge without a PaymentIntent, or another one's: not ours
        assert response.status_int == 200 and "ignored" in response.json["outcome"]
    else:  # a type Stripe never sends there
        assert response.status_int == 400 and response.json == {"error": "invalid webhook delivery"}


def test_a_refunded_total_above_what_was_captured_is_held_to_it(shop):
    o = paid(shop)
    total = o["amount_total"]
    charge = {"id": "ch_big", "object": "charge", "payment_intent": o["payment_intent"], "metadata": {},
              "amount": total, "amount_captured": total, "amount_refunded": 2 * total}
    assert post_event(shop, event("charge.refunded", charge)).json["outcome"] == "refund recorded"
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("refunded", total)


def test_a_charge_claiming_more_than_the_order_took_refunds_the_order_total_at_most(shop):
    o = paid(shop)
    total = o["amount_total"]
    charge = {"id": "ch_huge", "object": "charge", "payment_intent": o["payment_intent"], "metadata": {},
              "amount": 100 * total, "amount_captured": 100 * total, "amount_refunded": 50 * total}
    assert post_event(shop, event("charge.refunded", charge)).json["outcome"] == "refund recorded"
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("refunded", total)


@pytest.mark.parametrize("status", ["Won", "lost<script>", "needs response", "x" * 51, ""])
def test_a_dispute_status_that_is_no_stripe_status_is_refused(shop, status):
    o = paid(shop)
    dispute = {"id": "dp_odd", "object": "dispute", "payment_intent": o["payment_intent"], "status": status}
    assert post_event(shop, event("charge.dispute.created", dispute)).status_int == 400
    assert order(shop, o["session_id"])["dispute_status"] is None


def test_an_expired_event_whose_snapshot_is_not_expired_is_checked_with_stripe(shopper):
    """Expiry events are applied from their own snapshot only when it says expired; otherwise Stripe decides."""
    session_id = start(wire(shopper))
    odd = {"id": session_id, "object": "checkout.session", "status": "complete", "payment_status": "unpaid"}
    calls = shopper.standin.calls[SESSION_GET]
    res = post_event(shopper, event("checkout.session.expired", odd))
    assert res.status_int == 200 and res.json["outcome"] == "no change"  # Stripe says it is still open
    assert shopper.standin.calls[SESSION_GET] == calls + 1
    assert order(shopper, session_id)["status"] == "open"


def test_a_session_that_leaves_out_its_amounts_keeps_the_orders_own(shopper):
    session_id = start(shopper)
    before = order(shopper, session_id)
    snapshot = {"id": session_id, "object": "checkout.session", "status": "complete", "payment_status": "unpaid",
                "metadata": {"order_id": before["id"]}}
    shopper.shop.orders.sync(session_id, snapshot, source="test")
    after = order(shopper, session_id)
    assert after["status"] == "awaiting_payment"
    assert [after[k] for k in ("amount_subtotal", "amount_total")] == [before[k] for k in ("amount_subtotal",
                                                                                          "amount_total")]


def test_a_paid_session_naming_another_order_than_the_ledgers_fulfils_neither(shop, caplog):
    """The ledger ties a session to one order, Stripe's session names another: the shop does not act on either."""
    mine = start(shop)
    theirs = start(type(shop)(shop.app))
    mine_id, theirs_id = order(shop, mine)["id"], order(shop, theirs)["id"]
    with shop.shop.orders.ledger.db.tx() as c:  # a session attached to the wrong order
        c.execute("UPDATE orders SET session_id = NULL WHERE id = ?", (theirs_id,))
        c.execute("UPDATE orders SET session_id = ? WHERE id = ?", (theirs, mine_id))
    shop.standin.pay(theirs)
    with caplog.at_level(logging.INFO, logger="shop.webhooks"):
        shop.standin.deliver_pending()
    assert "ignored: order mismatch" in caplog.text
    ledger = shop.shop.orders.ledger
    assert ledger.get(mine_id)["status"] == "open" and ledger.get(mine_id)["fulfilled_at"] is None
    assert ledger.get(theirs_id)["fulfilled_at"] is None and handoff(shop) == []
