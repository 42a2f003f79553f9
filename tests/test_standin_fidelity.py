"""Details of Stripe's API that clients and Stripe's own tooling rely on, as the stand-in keeps them."""
import io
import json

import pytest
import stripe

from standin import ASYNC_FAIL, ASYNC_OK, PayError, StandIn
from tests.standin_helpers import event_types, shop_params



def paid(client, standin, **pay):
    s = client.v1.checkout.sessions.create(shop_params())
    standin.pay(s.id, **pay)
    return client.v1.checkout.sessions.retrieve(s.id)


def test_an_idempotency_key_belongs_to_the_path_it_was_first_used_on(client, app):
    a = client.v1.checkout.sessions.create(shop_params())
    b = client.v1.checkout.sessions.create(shop_params())
    app.post(f"/v1/checkout/sessions/{a.id}/expire", headers={"Idempotency-Key": "k"})
    again = app.post(f"/v1/checkout/sessions/{a.id}/expire", headers={"Idempotency-Key": "k"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.json["id"] == a.id
    other = app.post(f"/v1/checkout/sessions/{b.id}/expire", headers={"Idempotency-Key": "k"}, status=400)
    assert other.json["error"]["type"] == "idempotency_error" and "same endpoint" in other.json["error"]["message"]
    assert client.v1.checkout.sessions.retrieve(b.id).status == "open"  # never another session's answer


def test_the_payment_page_url_is_there_only_while_the_session_is_open(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    assert s.url == f"http://127.0.0.1:8000/offline-checkout/{s.id}"
    standin.pay(s.id)
    assert client.v1.checkout.sessions.retrieve(s.id).url is None
    e = client.v1.checkout.sessions.create(shop_params())
    assert client.v1.checkout.sessions.expire(e.id).url is None


def test_expanding_gives_the_object_or_an_error_never_null(client, standin, app):
    s = paid(client, standin, cardholder="J Rosen")
    pm = client.v1.payment_intents.retrieve(s.payment_intent, {"expand": ["payment_method"]}).payment_method
    assert pm.object == "payment_method" and pm.id.startswith("pm_") and pm.type == "card"
    assert (pm.card.brand, pm.card.last4, pm.billing_details.name) == ("visa", "4242", "J Rosen")
    charge = client.v1.payment_intents.retrieve(s.payment_intent).latest_charge
    refused = app.get(f"/v1/charges/{charge}?expand[]=balance_transaction", status=400)  # not kept offline
    assert refused.json["error"]["message"] == "This property cannot be expanded (balance_transaction)."
    items = app.get(f"/v1/checkout/sessions/{s.id}?expand[]=line_items.data.price").json["line_items"]["data"]
    assert items[0]["price"]["object"] == "price"


def test_expansion_goes_four_levels_deep_and_no_further(client, standin, app):
    s = paid(client, standin)
    four = "payment_intent.latest_charge.payment_intent.latest_charge"
    r = app.get(f"/v1/checkout/sessions/{s.id}?expand[]={four}").json
    assert r["payment_intent"]["latest_charge"]["payment_intent"]["latest_charge"]["object"] == "charge"
    five = app.get(f"/v1/checkout/sessions/{s.id}?expand[]={four}.payment_intent", status=400).json["error"]
    assert five["message"] == f"You cannot expand more than 4 levels of a property. Property: {four}.payment_intent"


def test_a_decline_names_the_whole_payment_method(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError):
        standin.pay(s.id, card="4000000000009995")
    pi = client.v1.payment_intents.retrieve(client.v1.checkout.sessions.retrieve(s.id).payment_intent)
    error = pi.last_payment_error
    assert error.decline_code == "insufficient_funds" and error.doc_url.endswith("/card-declined")
    assert error.payment_method.id == pi.payment_method and error.payment_method.card.last4 == "9995"
    assert error.payment_method.billing_details.email == "jenny.rosen@example.com"


def test_refunds_are_on_a_charge_only_when_expanded(client, standin, app):
    s = paid(client, standin)
    pi = client.v1.payment_intents.retrieve(s.payment_intent)
    refund = client.v1.refunds.create({"payment_intent": pi.id, "amount": 100})
    assert "refunds" not in app.get(f"/v1/charges/{pi.latest_charge}").json  # API versions since 2022-11-15
    listed = app.get(f"/v1/charges/{pi.latest_charge}?expand[]=refunds").json["refunds"]
    assert listed == app.get(f"/v1/charges/{pi.latest_charge}/refunds").json
    assert [r["id"] for r in listed["data"]] == [refund.id]
    assert listed["url"] == f"/v1/charges/{pi.latest_charge}/refunds"
    app.get("/v1/charges/ch_nope/refunds", status=404)


def test_events_filter_by_a_type_wildcard_or_a_list_of_types(client, standin, app):
    s = paid(client, standin)
    client.v1.refunds.create({"payment_intent": s.payment_intent, "amount": 100})
    client.v1.checkout.sessions.expire(client.v1.checkout.sessions.create(shop_params()).id)

    def types(query):
        return sorted(e["type"] for e in app.get(f"/v1/events?{query}").json["data"])
    assert types("type=checkout.session.*") == ["checkout.session.completed", "checkout.session.expired"]
    assert types("type=charge.refunded") == ["charge.refunded"]
    assert types("types[]=refund.created&types[]=checkout.session.expired") == ["checkout.session.expired",
                                                                                 "refund.created"]
    assert types("type=checkout.*.expired") == []  # only a trailing * is a wildcard
    app.get("/v1/events?type=charge.refunded&types[]=refund.created", status=400)


def test_list_cursors_go_one_way_and_must_be_of_the_listed_kind(client, standin, app):
    a, b = (client.v1.checkout.sessions.create(shop_params()).id for _ in range(2))
    both = app.get(f"/v1/checkout/sessions?starting_after={b}&ending_before={a}", status=400).json["error"]
    assert both["message"] == "You may only specify one of these parameters: ending_before, starting_after."
    s = paid(client, standin)
    event = client.v1.events.list().data[0].id
    foreign = app.get(f"/v1/checkout/sessions?starting_after={event}", status=404).json["error"]
    assert foreign["code"] == "resource_missing" and foreign["param"] == "starting_after"
    assert app.get(f"/v1/checkout/sessions?starting_after={s.id}").json["data"][0]["id"] in (a, b)


def test_missing_objects_name_the_path_parameter(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.retrieve("pi_nope")
    assert (exc.value.http_status, exc.value.code, exc.value.param) == (404, "resource_missing", "intent")
    assert exc.value.user_message == "No such payment_intent: 'pi_nope'"


def test_a_json_body_is_refused_as_stripe_refuses_it(app):
    r = app.post("/v1/checkout/sessions", '{"mode": "payment"}', content_type="application/json", status=400)
    assert r.json["error"]["message"].startswith("Invalid request (check that your POST content type is "
                                                 "application/x-www-form-urlencoded).")


def test_search_is_not_taken_for_an_id(app):
    r = app.get("/v1/payment_intents/search?query=status:'succeeded'", status=404)
    assert r.json["error"]["message"].startswith("Unrecognized request URL (GET: /v1/payment_intents/search)")


@pytest.mark.parametrize("field, value, message", [
    ("cvc", "١٢٣", "Your card's security code is incomplete."),
    ("expiry", "١٢/٣٤", "Your card's expiration date is invalid or in the past."),
    ("card", "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", "Your card number is invalid."),
])
def test_the_payment_page_takes_ascii_digits_only(client, standin, field, value, message):
    s = client.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, **{field: value})
    assert (exc.value.status, exc.value.message) == (400, message)
    assert client.v1.checkout.sessions.retrieve(s.id).status == "open"


def test_array_indexes_are_ascii_digits(app):
    body = "mode=payment&line_items[\u0661][quantity]=1".encode()
    r = app.post("/v1/checkout/sessions", body, content_type="application/x-www-form-urlencoded", status=400)
    assert r.json["error"]["message"] == "Invalid array" and r.json["error"]["param"] == "line_items"


def test_a_total_past_eight_digits_is_refused(client):
    items = [{"quantity": 999_999, "price_data": {"currency": "usd", "unit_amount": 99_999_999,
                                                  "product_data": {"name": "Everything"}}}]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(shop_params(line_items=items))
    assert (exc.value.http_status, exc.value.code, exc.value.param) == (400, "amount_too_large", "line_items")


def test_a_card_payment_emits_what_checkout_emits(client, standin):
    s = paid(client, standin)
    assert event_types(client) == ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
                              "checkout.session.completed"]
    succeeded = client.v1.events.list({"type": "payment_intent.succeeded"}).data[0].data.object
    assert (succeeded.id, succeeded.status, succeeded.amount_received) == (s.payment_intent, "succeeded",
                                                                           s.amount_total)


def test_a_decline_then_expiry_emit_the_failure_and_the_cancellation(client, standin):
    s = client.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError):
        standin.pay(s.id, card="4000000000000002")
    client.v1.checkout.sessions.expire(s.id)
    assert event_types(client) == ["payment_intent.created", "charge.failed", "payment_intent.payment_failed",
                              "payment_intent.canceled", "checkout.session.expired"]
    canceled = client.v1.events.list({"type": "payment_intent.canceled"}).data[0].data.object
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")


@pytest.mark.parametrize("card, outcome", [(ASYNC_OK, ["charge.succeeded", "payment_intent.succeeded",
                                                       "checkout.session.async_payment_succeeded"]),
                                           (ASYNC_FAIL, ["charge.failed", "payment_intent.payment_failed",
                                                         "checkout.session.async_payment_failed"])])
def test_a_delayed_payment_emits_processing_then_its_outcome(client, standin, card, outcome):
    s = paid(client, standin, card=card)
    standin.settle_async(s.id)
    assert event_types(client) == ["payment_intent.created", "charge.pending", "payment_intent.processing",
                              "checkout.session.completed", *outcome]


def test_the_webhook_endpoint_gets_only_what_it_subscribes_to(tmp_path):
    delivered = []
    only = StandIn(tmp_path / "d", webhook_url="http://shop.test/webhook", load_env_faults=False,
                   enabled_events=["checkout.session.completed"])
    every = StandIn(tmp_path / "e", webhook_url="http://shop.test/webhook", load_env_faults=False)
    for s in (only, every):
        s.deliver = lambda url, body, headers: delivered.append(json.loads(body)["type"]) or 200
        c = stripe.StripeClient("sk_test_x", http_client=s.http_client())
        paid(c, s)
        s.deliver_pending()
        assert len(c.v1.events.list().data) == 4  # every event is kept and listed either way
        s.close()
    assert delivered == ["checkout.session.completed", "payment_intent.created", "charge.succeeded",
                         "payment_intent.succeeded", "checkout.session.completed"]


def test_an_expandable_field_that_is_null_stays_null(client, standin, app):
    s = paid(client, standin)
    pi = client.v1.payment_intents.retrieve(s.payment_intent)
    bare = client.v1.checkout.sessions.create(shop_params(shipping_options=[], shipping_address_collection=None))
    unshipped = app.get(f"/v1/checkout/sessions/{bare.id}?expand[]=shipping_cost.shipping_rate").json
    assert unshipped["shipping_cost"] is None
    charge = app.get(f"/v1/charges/{pi.latest_charge}?expand[]=application&expand[]=transfer_data.destination"
                     "&expand[]=failure_balance_transaction").json
    assert (charge["application"], charge["transfer_data"], charge["failure_balance_transaction"]) == (None, None, None)
    intent = app.get(f"/v1/payment_intents/{pi.id}?expand[]=application&expand[]=on_behalf_of").json
    assert (intent["application"], intent["on_behalf_of"]) == (None, None)
    app.get(f"/v1/payment_intents/{pi.id}?expand[]=amount", status=400)  # not an expandable field at all


def test_a_stripe_version_from_the_future_is_refused(app):
    assert app.get("/v1/checkout/sessions", headers={"Stripe-Version": stripe.api_version}).json["object"] == "list"
    assert app.get("/v1/checkout/sessions", headers={"Stripe-Version": "2024-06-20"}).json["object"] == "list"
    future = app.get("/v1/checkout/sessions", headers={"Stripe-Version": "2099-01-01"}, status=400).json["error"]
    assert future["message"] == "Invalid Stripe API version: 2099-01-01"


def test_a_body_past_the_limit_is_refused_without_being_read_whole(app):
    big = app.post("/v1/checkout/sessions", b"mode=payment&metadata[x]=" + b"a" * (2 << 20),
                   content_type="application/x-www-form-urlencoded", status=400)
    assert big.json["error"]["message"] == "Request body too large."
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/checkout/sessions", "CONTENT_LENGTH": "twelve",
               "HTTP_AUTHORIZATION": "Bearer sk_test_x", "wsgi.input": io.BytesIO(b"mode=payment")}
    answer = []
    body = b"".join(app.app(environ, lambda status, headers: answer.append(status)))
    assert answer == ["400 Bad Request"] and json.loads(body)["error"]["message"] == "Invalid Content-Length header."


def test_a_line_items_page_before_a_cursor_says_whether_more_come_before_it(client):
    items = [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 100 + i,
                                            "product_data": {"name": f"B{i}"}}} for i in range(25)]
    s = client.v1.checkout.sessions.create(shop_params(line_items=items))
    ids = [i.id for i in client.v1.checkout.sessions.line_items.list(s.id, {"limit": 100}).data]
    page = client.v1.checkout.sessions.line_items.list(s.id, {"limit": 5, "ending_before": ids[20]})
    assert [i.id for i in page.data] == ids[15:20] and page.has_more is True
    first = client.v1.checkout.sessions.line_items.list(s.id, {"limit": 5, "ending_before": ids[5]})
    assert [i.id for i in first.data] == ids[0:5] and first.has_more is False
