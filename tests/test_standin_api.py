"""The stand-in's Stripe API through the official SDK (in-process client) and as raw WSGI."""
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import stripe
import webtest

from standin import PayError, StandIn
from tests.conftest import ROOT, STANDIN_KEY as KEY
from tests.standin_helpers import event_types, shop_params

def test_create_with_shop_params_has_checkout_totals(client):
    s = client.v1.checkout.sessions.create(shop_params())
    assert s.id.startswith("cs_test_") and len(s.id) > 40
    assert s.url == f"http://127.0.0.1:8000/offline-checkout/{s.id}"
    assert (s.status, s.payment_status, s.mode, s.currency) == ("open", "unpaid", "payment", "usd")
    assert s.amount_subtotal == 2 * 1250 + 999
    assert s.shipping_cost.amount_subtotal == 500 and s.shipping_cost.shipping_rate.startswith("shr_")
    assert [o.shipping_amount for o in s.shipping_options] == [500, 1500]
    assert s.shipping_options[0].shipping_rate == s.shipping_cost.shipping_rate
    assert s.total_details.to_dict() == {"amount_discount": 0, "amount_shipping": 500, "amount_tax": 0}
    assert s.amount_total == 3499 + 500  # no tax before the address is known
    assert s.automatic_tax.enabled and s.automatic_tax.status == "requires_location_inputs"
    assert s.expires_at - s.created == 24 * 3600
    assert s.metadata.to_dict() == {"order_id": "ord_123"} and s.client_reference_id == "ord_123"
    assert s.customer_email == "jenny@example.com" and s.payment_intent is None
    assert s.collected_information is None and "shipping_details" not in s


@pytest.mark.parametrize("currency, minimum", [("usd", 50), ("gbp", 30), ("myr", 200), ("jpy", 50), ("huf", 17500)])
def test_a_total_below_stripes_minimum_charge_is_refused(client, currency, minimum):
    """https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts"""
    def total(amount):
        return {"mode": "payment", "success_url": "http://127.0.0.1:8000/success", "line_items": [
            {"quantity": 1, "price_data": {"currency": currency, "unit_amount": amount,
                                           "product_data": {"name": "Pamphlet"}}}]}
    assert client.v1.checkout.sessions.create(total(minimum)).amount_total == minimum
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(total(minimum - 1))
    assert (exc.value.code, exc.value.param) == ("amount_too_small", "line_items")


def test_pay_then_retrieve_with_expansions(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    standin.pay(s.id, address={"line1": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117",
                               "country": "DE"}, shipping_option_index=1)
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["line_items", "payment_intent.latest_charge"]})
    assert (r.status, r.payment_status) == ("complete", "paid")
    # DE test rate 19%, exclusive: items 2500 -> 475, 999 -> 190 (189.81 half-up); express shipping 1500 -> 285
    assert r.total_details.amount_tax == 475 + 190 + 285
    assert r.shipping_cost.amount_subtotal == 1500 and r.shipping_cost.amount_tax == 285
    assert r.amount_total == 3499 + 1500 + 950 and r.automatic_tax.status == "complete"
    assert r.collected_information.shipping_details.address.city == "Berlin"
    assert r.customer_details.email == "jenny.rosen@example.com" and r.customer_details.address.country == "DE"
    items = r.line_items.data
    assert [i.description for i in items] == ["Dune", "Emma"]
    assert items[0].object == "item" and items[0].price.product.startswith("prod_")
    assert (items[0].amount_subtotal, items[0].amount_tax, items[0].amount_total) == (2500, 475, 2975)
    pi = r.payment_intent
    assert pi.object == "payment_intent" and pi.status == "succeeded" and pi.amount_received == r.amount_total
    assert pi.metadata.to_dict() == {"order_id": "ord_123"}
    ch = pi.latest_charge
    assert ch.id.startswith("ch_") and ch.paid and ch.status == "succeeded" and ch.amount == r.amount_total
    card = ch.payment_method_details.card
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 12, 2034)
    stored = (standin.store.path and Path(standin.store.path).read_bytes())
    assert b"4242424242424242" not in stored  # only last4 is ever kept
    assert client.v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge"]}).latest_charge.id == ch.id
    assert client.v1.charges.retrieve(ch.id).payment_intent == pi.id


@pytest.mark.parametrize("card", ["4000002500003155", "4000002760003184", "4000000000003220"])
def test_3d_secure_cards_pay_once_authentication_is_completed(client, standin, card):
    s = client.v1.checkout.sessions.create(shop_params())
    paid = standin.pay(s.id, card=card)  # authentication="complete" by default
    assert (paid["status"], paid["payment_status"]) == ("complete", "paid")
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent.latest_charge"]})
    charge = r.payment_intent.latest_charge
    assert r.payment_intent.status == "succeeded" and charge.status == "succeeded" and charge.paid
    secure = charge.payment_method_details.card.three_d_secure
    assert (secure.authentication_flow, secure.result, secure.result_reason, secure.version) == (
        "challenge", "authenticated", None, "2.2.0")
    assert event_types(client) == ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
                     "checkout.session.completed"]


def test_failed_authentication_leaves_the_session_open_and_no_charge(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, card="4000002760003184", authentication="fail")
    message = ("We are unable to authenticate your payment method. Please choose a different payment method and "
               "try again.")
    assert (exc.value.status, exc.value.message, exc.value.decline_code) == (402, message, None)
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent"]})
    assert (r.status, r.payment_status) == ("open", "unpaid")
    pi = r.payment_intent
    assert (pi.status, pi.latest_charge, pi.amount_received) == ("requires_payment_method", None, 0)
    error = pi.last_payment_error
    assert (error.type, error.code) == ("invalid_request_error", "payment_intent_authentication_failure")
    assert error.message.startswith("The provided payment method has failed authentication.")  # for developers
    assert error.payment_method.card.last4 == "3184"
    assert event_types(client) == ["payment_intent.created", "payment_intent.payment_failed"]
    # trying again with the same card, this time authenticated, pays on the same PaymentIntent
    assert standin.pay(s.id, card="4000002760003184")["payment_intent"] == pi.id
    with pytest.raises(ValueError):
        standin.pay(client.v1.checkout.sessions.create(shop_params()).id, authentication="maybe")


def test_inclusive_prices_carve_tax_out(client, standin):
    items = [{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 1190, "tax_behavior": "inclusive",
                                            "product_data": {"name": "Book"}}}]
    ship = [{"shipping_rate_data": {"display_name": "Post", "fixed_amount": {"amount": 595, "currency": "eur"},
                                    "tax_behavior": "inclusive"}}]
    s = client.v1.checkout.sessions.create(shop_params(line_items=items, shipping_options=ship))
    standin.pay(s.id, address={"line1": "a", "city": "b", "postal_code": "1", "country": "DE"})
    r = client.v1.checkout.sessions.retrieve(s.id)
    assert r.amount_total == 1190 + 595  # unchanged by inclusive tax
    assert r.total_details.amount_tax == 190 + 95


def test_no_automatic_tax_means_no_tax(client, standin):
    s = client.v1.checkout.sessions.create(shop_params(automatic_tax={"enabled": False}))
    standin.pay(s.id, address={"line1": "a", "city": "b", "postal_code": "1", "country": "GB"})
    r = client.v1.checkout.sessions.retrieve(s.id)
    assert r.total_details.amount_tax == 0 and r.amount_total == 3999 and r.automatic_tax.status is None


def test_line_items_list_paginates(client):
    items = [{"quantity": i + 1, "price_data": {"currency": "usd", "unit_amount": 100 * (i + 1),
                                                "product_data": {"name": f"Book {i}"}}} for i in range(3)]
    s = client.v1.checkout.sessions.create(shop_params(line_items=items))
    page1 = client.v1.checkout.sessions.line_items.list(s.id, {"limit": 2})
    assert [i.description for i in page1.data] == ["Book 0", "Book 1"] and page1.has_more
    page2 = client.v1.checkout.sessions.line_items.list(s.id, {"limit": 2, "starting_after": page1.data[-1].id})
    assert [i.description for i in page2.data] == ["Book 2"] and not page2.has_more
    assert page2.data[0].amount_subtotal == 900 and page2.url.endswith(f"/{s.id}/line_items")
    every = list(client.v1.checkout.sessions.line_items.list(s.id, {"limit": 1}).auto_paging_iter())
    assert len(every) == 3


def test_expire_and_expired_sessions_cannot_be_paid(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    e = client.v1.checkout.sessions.expire(s.id)
    assert e.status == "expired"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.expire(s.id)
    assert exc.value.http_status == 400 and exc.value.user_message == (  # Stripe's words
        'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of '
        '`expired`.')
    with pytest.raises(PayError) as pay:
        standin.pay(s.id)
    assert pay.value.status == 410
    events = client.v1.events.list({"type": "checkout.session.expired"}).data
    assert [ev.data.object.id for ev in events] == [s.id]


def test_lapsed_sessions_expire_lazily(client, standin):
    expires = int(time.time()) + 1900  # a second may tick between here and `created`: compare to what we asked
    s = client.v1.checkout.sessions.create(shop_params(expires_at=expires))
    assert s.expires_at == expires
    assert standin.sweep(now=s.expires_at - 1) == 0
    assert standin.sweep(now=s.expires_at + 1) == 1
    assert client.v1.checkout.sessions.retrieve(s.id).status == "expired"


@pytest.mark.parametrize("call", ["retrieve", "list", "create"])
def test_any_api_call_first_expires_sessions_that_lapsed(client, standin, call):
    s = client.v1.checkout.sessions.create(shop_params())
    with standin.store.tx(write=True) as tx:  # its hour has passed (as if the clock moved on)
        stored = tx.get(s.id)
        stored["expires_at"] = int(time.time()) - 1
        tx.put(stored)
    if call == "retrieve":
        assert client.v1.checkout.sessions.retrieve(s.id).status == "expired"
    elif call == "list":
        assert [x.status for x in client.v1.checkout.sessions.list({"limit": 1}).data] == ["expired"]
    else:
        client.v1.checkout.sessions.create(shop_params())
    assert [e.data.object.id for e in client.v1.events.list({"type": "checkout.session.expired"}).data] == [s.id]
    assert standin.sweep() == 0


def test_list_sessions_filters_and_pages(client, standin):
    ids = [client.v1.checkout.sessions.create(shop_params()).id for _ in range(4)]
    paid = standin.pay(ids[1])
    page = client.v1.checkout.sessions.list({"limit": 2})
    assert [s.id for s in page.data] == ids[::-1][:2] and page.has_more
    rest = client.v1.checkout.sessions.list({"limit": 10, "starting_after": page.data[-1].id})
    assert [s.id for s in rest.data] == ids[::-1][2:] and not rest.has_more
    assert [s.id for s in client.v1.checkout.sessions.list({"status": "complete"}).data] == [ids[1]]
    by_pi = client.v1.checkout.sessions.list({"payment_intent": paid["payment_intent"]}).data
    assert [s.id for s in by_pi] == [ids[1]]
    assert len(client.v1.checkout.sessions.list({"created": {"gte": int(time.time()) - 60}}).data) == 4
    assert client.v1.checkout.sessions.list({"created": {"gt": int(time.time()) + 60}}).data == []
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.list({"starting_after": "cs_test_nope"})
    assert exc.value.code == "resource_missing"


def test_idempotent_replay_and_conflict(client, standin, app):
    a = client.v1.checkout.sessions.create(shop_params(), {"idempotency_key": "order-ord_123"})
    b = client.v1.checkout.sessions.create(shop_params(), {"idempotency_key": "order-ord_123"})
    assert a.id == b.id
    assert b.last_response.headers["idempotent-replayed"] == "true"
    assert len(client.v1.checkout.sessions.list().data) == 1
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.checkout.sessions.create(shop_params(client_reference_id="other"),
                                           {"idempotency_key": "order-ord_123"})
    assert exc.value.http_status == 400 and "same parameters" in exc.value.user_message
    raw = app.post("/v1/checkout/sessions/" + a.id + "/expire", headers={"Idempotency-Key": "order-ord_123"},
                   status=400)
    assert raw.json["error"]["type"] == "idempotency_error" and "same endpoint" in raw.json["error"]["message"]


def test_validation_errors_are_not_saved_for_the_key(client):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(shop_params(success_url="nope"), {"idempotency_key": "k1"})
    # nothing was saved for k1, so different (valid) params with the same key are not a conflict
    ok = client.v1.checkout.sessions.create(shop_params(), {"idempotency_key": "k1"})
    assert ok.status == "open"


@pytest.mark.parametrize("override, status, code, param, message", [
    ({"colour": "red"}, 400, "parameter_unknown", "colour", "Received unknown parameter: colour"),
    ({"line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 5, "colour": "x",
                                                    "product_data": {"name": "x"}}}]},
     400, "parameter_unknown", "line_items[0][price_data][colour]", None),
    ({"line_items": [{"price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "x"}}}]},
     400, "parameter_missing", "line_items[0][quantity]", "Missing required param: line_items[0][quantity]."),
    ({"line_items": [{"quantity": "two", "price_data": {"currency": "usd", "unit_amount": 500,
                                                         "product_data": {"name": "x"}}}]},
     400, "parameter_invalid_integer", "line_items[0][quantity]", "Invalid integer: two"),
    ({"mode": "banana"}, 400, None, "mode", "Invalid mode: must be one of payment, setup, or subscription"),
    ({"success_url": "javascript:alert(1)"}, 400, "url_invalid", "success_url", None),
    ({"cancel_url": "/relative"}, 400, "url_invalid", "cancel_url", None),
    ({"line_items": [{"quantity": 0, "price_data": {"currency": "usd", "unit_amount": 500,
                                                     "product_data": {"name": "x"}}}]}, 400, None,
     "line_items[0][quantity]", None),
    ({"line_items": [{"quantity": 1000000, "price_data": {"currency": "usd", "unit_amount": 500,
                                                           "product_data": {"name": "x"}}}]}, 400, None,
     "line_items[0][quantity]", None),
    ({"line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": -1,
                                                     "product_data": {"name": "x"}}}]}, 400, None,
     "line_items[0][price_data][unit_amount]", None),
    ({"line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 500,
                                                     "product_data": {"name": "x"}}},
                     {"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 500,
                                                     "product_data": {"name": "y"}}}]},
     400, None, "line_items[1][price_data][currency]", None),
    ({"line_items": [{"quantity": 1, "price": "price_123"}]}, 404, "resource_missing", "line_items[0][price]",
     "No such price: 'price_123'"),
    ({"expires_at": 1}, 400, None, "expires_at", None),
    ({"expires_at": 2 ** 40}, 400, None, "expires_at", None),
    ({"shipping_address_collection": {"allowed_countries": ["QQ"]}}, 400, None,
     "shipping_address_collection[allowed_countries][0]", None),
    ({"customer_email": "not-an-email"}, 400, "email_invalid", "customer_email", None),
    ({"client_reference_id": ""}, 400, "parameter_invalid_empty", "client_reference_id", None),
    ({"automatic_tax": {"enabled": "maybe"}}, 400, None, "automatic_tax[enabled]", "Invalid boolean: maybe"),
    ({"line_items": []}, 400, "parameter_missing", "line_items", None),
])
def test_create_errors_match_stripe(client, override, status, code, param, message):
    with pytest.raises(stripe.StripeError) as exc:
        client.v1.checkout.sessions.create(shop_params(**override))
    err = exc.value
    assert err.http_status == status
    body = err.json_body["error"]
    assert body["type"] == "invalid_request_error"
    assert body.get("code") == code and body.get("param") == param
    if message:
        assert body["message"] == message
    assert err.headers["request-id"].startswith("req_")


def test_missing_session_is_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing" and exc.value.param == "session"
    assert exc.value.user_message == "No such checkout.session: 'cs_test_nope'"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve("pi_nope")


def test_auth_is_required(standin):
    no_key = webtest.TestApp(standin.wsgi_api)
    r = no_key.get("/v1/checkout/sessions", status=401)
    assert r.json["error"]["type"] == "invalid_request_error" and "API key" in r.json["error"]["message"]
    live = stripe.StripeClient("sk_live_abcdefghijklmnop", http_client=standin.http_client())
    with pytest.raises(stripe.AuthenticationError) as exc:
        live.v1.checkout.sessions.list()
    assert "abcdefghijklmnop" not in exc.value.user_message
    basic = no_key.get("/v1/checkout/sessions", headers={"Authorization": "Basic c2tfdGVzdF94eXo6"})  # sk_test_xyz:
    assert basic.json["object"] == "list"
    rk = stripe.StripeClient("rk_test_restricted", http_client=standin.http_client())
    assert rk.v1.checkout.sessions.list().object == "list"


def test_raw_form_parsing_and_headers(app):
    body = ("mode=payment&line_items[0][quantity]=1&line_items[0][price_data][currency]=usd"
            "&line_items[0][price_data][unit_amount]=700&line_items[0][price_data][product_data][name]=A%26B"
            "&success_url=https%3A%2F%2Fshop.example%2Fok&expand[]=line_items")
    r = app.post("/v1/checkout/sessions", body, content_type="application/x-www-form-urlencoded",
                 headers={"Stripe-Version": stripe.api_version})
    assert r.headers["Content-Type"] == "application/json" and r.headers["Request-Id"].startswith("req_")
    assert r.headers["Stripe-Version"] == stripe.api_version
    assert r.json["line_items"]["data"][0]["description"] == "A&B"
    sid = r.json["id"]
    by_index = app.get(f"/v1/checkout/sessions/{sid}?expand[0]=line_items&expand[1]=payment_intent")
    assert by_index.json["line_items"]["object"] == "list" and by_index.json["payment_intent"] is None
    assert "line_items" not in app.get(f"/v1/checkout/sessions/{sid}").json


@pytest.mark.parametrize("body, param", [
    (b"mode=payment&mode[x]=1", "mode[x]"),
    (b"mode[x]=1&mode=payment", "mode"),
    (b"\xff\xfe=\xff", None),
    (b"line_items=abc&mode=payment", "line_items"),
    (b"mode=payment&line_items[0]=x", "line_items[0]"),
    (b"expand=line_items&mode=payment", "expand"),
    (b"a[b=1", None),
])
def test_malformed_bodies_get_stripe_400s(app, body, param):
    r = app.post("/v1/checkout/sessions", body, content_type="application/x-www-form-urlencoded", status=400)
    err = r.json["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if param:
        assert err.get("param") == param


def test_unknown_routes_and_bad_expansions(app, client):
    r = app.get("/v1/customers", status=404)
    assert "Unrecognized request URL (GET: /v1/customers)" in r.json["error"]["message"]
    app.delete("/v1/checkout/sessions", status=404)
    s = client.v1.checkout.sessions.create(shop_params())
    bad = app.get(f"/v1/checkout/sessions/{s.id}?expand[]=metadata", status=400)
    assert bad.json["error"]["message"] == "This property cannot be expanded (metadata)."
    app.get("/v1/checkout/sessions?limit=0", status=400)
    app.get("/v1/checkout/sessions?limit=101", status=400)
    app.get("/v1/checkout/sessions", headers={"Stripe-Version": "yesterday"}, status=400)


def test_calls_counts_endpoint_templates(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    client.v1.checkout.sessions.retrieve(s.id)
    client.v1.checkout.sessions.retrieve(s.id)
    client.v1.checkout.sessions.line_items.list(s.id)
    assert standin.calls["POST /v1/checkout/sessions"] == 1
    assert standin.calls["GET /v1/checkout/sessions/{id}"] == 2
    assert standin.calls["GET /v1/checkout/sessions/{id}/line_items"] == 1


def test_refunds(client, standin):
    s = standin.pay(client.v1.checkout.sessions.create(shop_params()).id)
    pi = client.v1.payment_intents.retrieve(s["payment_intent"])
    total = pi.amount
    r1 = client.v1.refunds.create({"payment_intent": pi.id, "amount": 1000, "reason": "requested_by_customer",
                                   "metadata": {"order_id": "ord_123"}})
    assert r1.id.startswith("re_") and r1.status == "succeeded" and r1.charge == pi.latest_charge
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.refunds.create({"charge": pi.latest_charge, "amount": total})
    assert exc.value.user_message == (f"Refund amount (${total / 100:.2f}) is greater than unrefunded amount on "
                                      f"charge (${(total - 1000) / 100:.2f})")
    r2 = client.v1.refunds.create({"charge": pi.latest_charge})
    assert r2.amount == total - 1000
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.amount_refunded == total and ch.refunded and "refunds" not in ch  # listed only when expanded
    ch = client.v1.charges.retrieve(pi.latest_charge, {"expand": ["refunds"]})
    assert [r.id for r in ch.refunds.data] == [r2.id, r1.id]
    listed = json.loads(client.raw_request("get", f"/v1/charges/{pi.latest_charge}/refunds").body)
    assert [r["id"] for r in listed["data"]] == [r2.id, r1.id] and listed["url"] == f"/v1/charges/{ch.id}/refunds"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.refunds.create({"payment_intent": pi.id})
    assert exc.value.code == "charge_already_refunded"
    assert client.v1.refunds.retrieve(r1.id).metadata.to_dict() == {"order_id": "ord_123"}
    assert [r.id for r in client.v1.refunds.list({"payment_intent": pi.id}).data] == [r2.id, r1.id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.refunds.create({})
    assert exc.value.code == "parameter_missing"


def test_state_survives_a_restart(tmp_path):
    a = StandIn(tmp_path / "d", load_env_faults=False)
    ca = stripe.StripeClient(KEY, http_client=a.http_client())
    sid = ca.v1.checkout.sessions.create(shop_params(), {"idempotency_key": "k"}).id
    a.close()
    b = StandIn(tmp_path / "d", load_env_faults=False)
    cb = stripe.StripeClient(KEY, http_client=b.http_client())
    assert cb.v1.checkout.sessions.retrieve(sid).status == "open"
    assert cb.v1.checkout.sessions.create(shop_params(), {"idempotency_key": "k"}).id == sid
    assert a.webhook_secret == b.webhook_secret and a.webhook_secret.startswith("whsec_")
    b.close()


def test_concurrent_threads_share_one_store(standin):
    ids, errors = [], []

    def work():
        c = stripe.StripeClient(KEY, http_client=standin.http_client())
        try:
            for _ in range(5):
                ids.append(c.v1.checkout.sessions.create(shop_params()).id)
        except Exception as e:  # pragma: no cover - shown on failure
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(set(ids)) == 30
    c = stripe.StripeClient(KEY, http_client=standin.http_client())
    assert len(list(c.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter())) == 30


def test_processes_sharing_a_data_dir(tmp_path):
    script = (
        "import sys, stripe; sys.path.insert(0, sys.argv[2]); from standin import StandIn\n"
        "s = StandIn(sys.argv[1], load_env_faults=False)\n"
        "c = stripe.StripeClient('sk_test_x', http_client=s.http_client())\n"
        "p = dict(mode='payment', success_url='http://x.test/ok', line_items=[dict(quantity=1, price_data="
        "dict(currency='usd', unit_amount=500, product_data=dict(name='n')))])\n"
        "for i in range(10): c.v1.checkout.sessions.create(p, {'idempotency_key': f'k{i % 5}'} if i < 5 else None)\n"
    )
    data = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(data), str(ROOT)]) for _ in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    s = StandIn(data, load_env_faults=False)
    c = stripe.StripeClient(KEY, http_client=s.http_client())
    # 5 keyed creates are shared by all three processes; 5 unkeyed ones each
    assert len(list(c.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter())) == 5 + 3 * 5
    s.close()


def test_json_bodies_are_pretty_and_parseable(app):
    r = app.get("/v1/events")
    assert json.loads(r.body) == {"object": "list", "data": [], "has_more": False, "url": "/v1/events"}


def test_ids_are_base62_of_the_asked_length_and_do_not_repeat():
    from standin.objects import new_id
    ids = [new_id("cs_test_a1", 56) for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"cs_test_a1[A-Za-z0-9]{56}", i) for i in ids)
    seen = set("".join(new_id("", 24) for _ in range(500)))
    assert len(seen) == 62  # every character of the alphabet turns up
