"""Coupons, promotion codes, terms of service consent, tax ID collection and Checkout Session lifetimes in the
stand-in: the API's requests and objects, the payment page's refusals, and the totals of a discounted payment."""
import re
import time
import typing

import pytest
import stripe

from standin import PayError
from tests import stripe_params
from tests.standin_helpers import against_spec, compare, fill, shop_params, wire

DE = {"line1": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117", "country": "DE"}
# spec3.json (2023) knows promotion codes with a top-level `coupon`; since API version 2025-09-30.clover it is
# `promotion: {type: "coupon", coupon: <id>}` (stripe.PromotionCode.Promotion, and Stripe's 2026 fixture).
NEWER_THAN_SPEC = {"promotion_code.coupon: required by the spec, missing"}


def sent(fn, params):
    """`params`, after checking them against the SDK's typed parameters for `fn` (today's API)."""
    assert stripe_params.check(params, stripe_params.params_class(fn)) == [], params
    return params


def make_coupon(client, **params):
    if isinstance(params.get("percent_off"), int):
        params["percent_off"] = float(params["percent_off"])  # the SDK types it as a float
    return client.v1.coupons.create(sent(client.v1.coupons.create, {"duration": "once", **params}))


def make_code(client, coupon, code, **params):
    create = client.v1.promotion_codes.create
    return create(sent(create, {"promotion": {"type": "coupon", "coupon": coupon}, "code": code, **params}))


def promo_params(**over):
    """The shop's session parameters with promotion codes, terms and tax IDs switched on."""
    return shop_params(**{
        "allow_promotion_codes": True, "consent_collection": {"terms_of_service": "required"},
        "custom_text": {"terms_of_service_acceptance": {
            "message": "I agree to the [Terms of Service](https://shop.example/terms?v=2&x=1)"}},
        "tax_id_collection": {"enabled": True}, **over})


def age(standin, object_id, **fields):
    """Rewrite stored fields (as if time had passed) and let the stand-in notice."""
    with standin.store.tx(write=True) as tx:
        obj = tx.get(object_id)
        obj.update(fields)
        tx.put(obj)
    standin.sweep()


# -- coupons ----------------------------------------------------------------------------------------------------------
def test_a_coupon_keeps_its_id_and_has_stripes_shape(client, stripe_refs):
    fixtures, schemas = stripe_refs
    coupon = make_coupon(client, id="SPRING-10", percent_off=12.5, name="Spring", metadata={"shop": "catalog"})
    body = wire(coupon)
    assert compare(body, fixtures["coupon"], "coupon", schemas) == []
    assert against_spec(body, schemas["coupon"], schemas, "coupon") == []
    assert (body["id"], body["percent_off"], body["amount_off"], body["duration"]) == ("SPRING-10", 12.5, None, "once")
    assert (body["valid"], body["times_redeemed"], body["metadata"]) == (True, 0, {"shop": "catalog"})
    assert wire(client.v1.coupons.retrieve("SPRING-10")) == body
    fixed = wire(make_coupon(client, amount_off=500, currency="USD", redeem_by=int(time.time()) + 3600))
    assert re.fullmatch(r"[A-Za-z0-9]{8}", fixed["id"]) and (fixed["amount_off"], fixed["currency"]) == (500, "usd")
    assert against_spec(fixed, schemas["coupon"], schemas, "coupon") == []
    events = client.v1.events.list({"type": "coupon.created"}).data
    assert [e.data.object.id for e in events] == [fixed["id"], "SPRING-10"]


def test_creating_an_existing_coupon_id_is_resource_already_exists(client):
    make_coupon(client, id="TEN", percent_off=10)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        make_coupon(client, id="TEN", percent_off=20)
    err = exc.value
    assert (err.http_status, err.code, err.param) == (400, "resource_already_exists", "id")
    assert err.user_message == "Coupon already exists."
    assert client.v1.coupons.retrieve("TEN").percent_off == 10


@pytest.mark.parametrize("params, param, code", [
    ({"percent_off": 10, "amount_off": 100, "currency": "usd"}, None, None),
    ({}, None, "parameter_missing"),
    ({"amount_off": 100}, "currency", "parameter_missing"),
    ({"percent_off": 0}, "percent_off", None),
    ({"percent_off": 100.5}, "percent_off", None),
    ({"percent_off": 10, "redeem_by": 1}, "redeem_by", None),
    ({"percent_off": 10, "duration": "repeating"}, "duration_in_months", "parameter_missing"),
    ({"percent_off": 10, "name": "x" * 41}, "name", None),
])
def test_coupon_errors(client, params, param, code):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        make_coupon(client, **params)
    assert (exc.value.http_status, exc.value.param, exc.value.code) == (400, param, code)


def test_an_unknown_coupon_is_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.coupons.retrieve("NOPE")
    assert (exc.value.http_status, exc.value.code) == (404, "resource_missing")
    assert exc.value.user_message == "No such coupon: 'NOPE'"


# -- promotion codes --------------------------------------------------------------------------------------------------
def test_a_promotion_code_has_the_2026_shape(client, stripe_refs):
    fixtures, schemas = stripe_refs
    make_coupon(client, id="TEN", percent_off=10)
    expires = int(time.time()) + 86400
    promo = wire(make_code(client, "TEN", "Read-10", expires_at=expires, max_redemptions=5,
                           restrictions={"minimum_amount": 2000, "minimum_amount_currency": "usd"},
                           metadata={"shop": "catalog"}))
    assert compare(promo, fixtures["promotion_code"], "promotion_code", schemas) == []
    assert set(against_spec(promo, schemas["promotion_code"], schemas, "promotion_code")) == NEWER_THAN_SPEC
    assert promo["id"].startswith("promo_") and promo["promotion"] == {"coupon": "TEN", "type": "coupon"}
    assert (promo["code"], promo["active"], promo["expires_at"], promo["max_redemptions"]) == ("Read-10", True,
                                                                                                expires, 5)
    assert promo["restrictions"] == {"first_time_transaction": False, "minimum_amount": 2000,
                                     "minimum_amount_currency": "usd"}
    assert "_code_key" not in promo and "coupon" not in promo
    assert wire(client.v1.promotion_codes.retrieve(promo["id"])) == promo
    expanded = client.v1.promotion_codes.retrieve(promo["id"], {"expand": ["promotion.coupon"]})
    assert expanded.promotion.coupon.object == "coupon" and expanded.promotion.coupon.percent_off == 10
    generated = client.v1.promotion_codes.create({"promotion": {"type": "coupon", "coupon": "TEN"}})
    assert re.fullmatch(r"[A-Z0-9]{8}", generated.code)
    assert [e.data.object.id for e in client.v1.events.list({"type": "promotion_code.created"}).data] == \
        [generated.id, promo["id"]]


def test_an_active_code_is_unique_whatever_its_case(client):
    make_coupon(client, id="TEN", percent_off=10)
    first = make_code(client, "TEN", "READ10")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        make_code(client, "TEN", "read10")
    assert exc.value.http_status == 400 and exc.value.param == "code"
    assert exc.value.user_message == "An active promotion code with `code: read10` already exists."
    inactive = make_code(client, "TEN", "Read10", active=False)  # inactive codes may share it
    update = client.v1.promotion_codes.update
    with pytest.raises(stripe.InvalidRequestError) as exc:
        update(inactive.id, sent(update, {"active": True}))
    assert "already exists" in exc.value.user_message
    update(first.id, sent(update, {"active": False}))
    assert update(inactive.id, {"active": True}).active is True


def test_promotion_code_errors(client):
    make_coupon(client, id="TEN", percent_off=10, max_redemptions=3, redeem_by=int(time.time()) + 3600)
    cases = [
        ({"promotion": {"type": "coupon", "coupon": "NOPE"}}, 404, "promotion[coupon]"),
        ({"promotion": {"type": "coupon"}}, 400, "promotion[coupon]"),
        ({"code": "BAD CODE!"}, 400, "code"),
        ({"max_redemptions": 4}, 400, "max_redemptions"),  # more than its coupon allows
        ({"expires_at": int(time.time()) + 7200}, 400, "expires_at"),  # after the coupon's redeem_by
        ({"expires_at": int(time.time()) - 10}, 400, "expires_at"),
        ({"restrictions": {"minimum_amount": 100}}, 400, "restrictions[minimum_amount_currency]"),
        ({"customer": "cus_nope"}, 404, "customer"),
    ]
    for params, status, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.promotion_codes.create({"promotion": {"type": "coupon", "coupon": "TEN"}, **params})
        assert (exc.value.http_status, exc.value.param) == (status, param), params
    with pytest.raises(stripe.InvalidRequestError) as exc:  # the pre-2025-09-30 parameter
        client.v1.promotion_codes.create({"coupon": "TEN", "code": "OLD"})
    assert exc.value.code == "parameter_unknown" and exc.value.param == "coupon"
    assert client.v1.promotion_codes.list().data == []


def test_list_filters_and_pages_promotion_codes(client):
    make_coupon(client, id="TEN", percent_off=10)
    make_coupon(client, id="FIVE", amount_off=500, currency="usd")
    ids = [make_code(client, coupon, code).id for coupon, code in
           (("TEN", "A-TEN"), ("FIVE", "B-FIVE"), ("TEN", "C-TEN"), ("FIVE", "D-FIVE"))]
    client.v1.promotion_codes.update(ids[0], {"active": False})
    lst = client.v1.promotion_codes.list
    page = lst(sent(lst, {"limit": 2}))
    assert [p.id for p in page.data] == ids[::-1][:2] and page.has_more and page.url == "/v1/promotion_codes"
    rest = lst({"limit": 2, "starting_after": page.data[-1].id})
    assert [p.id for p in rest.data] == ids[1::-1] and not rest.has_more
    assert [p.id for p in lst({"active": True, "limit": 100}).auto_paging_iter()] == ids[:0:-1]
    assert [p.id for p in lst({"active": False}).data] == [ids[0]]
    assert [p.id for p in lst({"code": "c-ten"}).data] == [ids[2]]
    assert [p.id for p in lst({"coupon": "FIVE"}).data] == [ids[3], ids[1]]
    assert lst({"coupon": "TEN", "active": True}).data[0].id == ids[2]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        lst({"starting_after": "promo_nope"})
    assert exc.value.http_status == 404


def test_update_sets_active_and_metadata_and_says_what_changed(client):
    make_coupon(client, id="TEN", percent_off=10)
    promo = make_code(client, "TEN", "READ10", metadata={"shop": "catalog", "batch": "1"})
    update = client.v1.promotion_codes.update
    changed = update(promo.id, sent(update, {"active": False, "metadata": {"batch": "", "note": "x"}}))
    assert changed.active is False and changed.metadata.to_dict() == {"shop": "catalog", "note": "x"}
    event, = client.v1.events.list({"type": "promotion_code.updated"}).data
    assert event.data.previous_attributes.to_dict() == {"active": True, "metadata": {"batch": "1", "note": None}}
    update(promo.id, {"metadata": ""})
    assert client.v1.promotion_codes.retrieve(promo.id).metadata.to_dict() == {}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        update(promo.id, {"code": "OTHER"})
    assert exc.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        update("promo_nope", {"active": True})
    assert exc.value.http_status == 404


def test_codes_lapse_at_expires_at_and_with_their_coupon(client, standin):
    make_coupon(client, id="TEN", percent_off=10, redeem_by=int(time.time()) + 3600)
    make_coupon(client, id="FIVE", amount_off=500, currency="usd")
    soon = make_code(client, "FIVE", "SOON", expires_at=int(time.time()) + 60)
    of_ten = make_code(client, "TEN", "OFTEN")
    assert standin.sweep() == 0
    assert standin.sweep(now=time.time() + 120) == 1  # SOON's hour is up
    assert client.v1.promotion_codes.retrieve(soon.id).active is False
    assert standin.sweep(now=time.time() + 3700) == 1  # TEN's redeem_by: it and its codes are done
    assert client.v1.coupons.retrieve("TEN").valid is False
    assert client.v1.promotion_codes.retrieve(of_ten.id).active is False
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.promotion_codes.update(of_ten.id, {"active": True})
    assert "cannot be reactivated" in exc.value.user_message
    # and a lapsed code no longer holds its code: a new one may take it
    assert make_code(client, "FIVE", "soon").active is True


# -- Checkout Session parameters --------------------------------------------------------------------------------------
def test_a_session_echoes_promotion_consent_and_tax_id_settings(client, stripe_refs):
    fixtures, schemas = stripe_refs
    expires = int(time.time()) + 31 * 60
    create = client.v1.checkout.sessions.create
    s = wire(create(sent(create, promo_params(expires_at=expires))))
    assert s["allow_promotion_codes"] is True and s["expires_at"] == expires and s["discounts"] == []
    assert s["consent_collection"] == {"payment_method_reuse_agreement": None, "promotions": None,
                                       "terms_of_service": "required"}
    assert s["custom_text"]["terms_of_service_acceptance"] == {
        "message": "I agree to the [Terms of Service](https://shop.example/terms?v=2&x=1)"}
    assert s["tax_id_collection"] == {"enabled": True, "required": "never"} and s["consent"] is None
    plain = wire(create(shop_params()))
    assert "tax_id_collection" not in plain and plain["consent_collection"] is None
    assert plain["allow_promotion_codes"] is None
    # Stripe's 2026 example session leaves tax_id_collection out; spec3 and the SDK's Session have it
    assert against_spec(s["tax_id_collection"], schemas["payment_pages_checkout_session_tax_id_collection"],
                        schemas, "tax_id_collection") == []
    assert "tax_id_collection" in stripe.checkout.Session.__annotations__
    echoed = ("allow_promotion_codes", "consent_collection", "custom_text", "discounts", "expires_at")
    problems = compare({k: s[k] for k in echoed}, {k: fixtures["checkout.session"][k] for k in echoed},
                       "checkout.session", schemas)
    # the fixture sets payment_method_reuse_agreement; the SDK types it Optional, and nothing here sets it
    assert problems == ["checkout.session.consent_collection.payment_method_reuse_agreement: null, fixture has "
                        "object (and not nullable in the spec)"]
    reuse = stripe.checkout.Session.ConsentCollection.__annotations__["payment_method_reuse_agreement"]
    assert type(None) in typing.get_args(reuse)
    assert against_spec(s, schemas["checkout.session"], schemas, "session") == []


@pytest.mark.parametrize("over, param", [
    ({"consent_collection": {"terms_of_service": "always"}}, "consent_collection[terms_of_service]"),
    ({"consent_collection": {"promotions": "auto"}}, "consent_collection[promotions]"),
    ({"custom_text": {"terms_of_service_acceptance": {"message": "x" * 1201}}},
     "custom_text[terms_of_service_acceptance][message]"),
    ({"custom_text": {"terms_of_service_acceptance": {"message": ""}}},
     "custom_text[terms_of_service_acceptance][message]"),
    ({"tax_id_collection": {"required": "never"}}, "tax_id_collection[enabled]"),
    ({"tax_id_collection": {"enabled": True, "required": "always"}}, "tax_id_collection[required]"),
])
def test_session_parameter_errors(client, over, param):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(shop_params(**over))
    assert exc.value.http_status == 400 and exc.value.param == param


@pytest.mark.parametrize("minutes, message", [
    (28, "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation."),
    (24 * 60 + 2, "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation."),
])
def test_expires_at_must_be_between_half_an_hour_and_a_day_away(client, minutes, message):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(shop_params(expires_at=int(time.time()) + minutes * 60))
    assert (exc.value.http_status, exc.value.param, exc.value.user_message) == (400, "expires_at", message)
    for ok in (31, 24 * 60 - 1):
        assert client.v1.checkout.sessions.create(shop_params(expires_at=int(time.time()) + ok * 60)).status == "open"


def test_a_stock_hold_session_expires_at_its_expires_at(client, standin):
    held = client.v1.checkout.sessions.create(shop_params(expires_at=int(time.time()) + 31 * 60))
    day = client.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError):  # a declined try leaves a PaymentIntent to cancel
        standin.pay(held.id, card="4000000000000002")
    assert standin.sweep(now=held.expires_at - 1) == 0
    assert standin.sweep(now=held.expires_at) == 1
    expired = client.v1.checkout.sessions.retrieve(held.id, {"expand": ["payment_intent"]})
    assert (expired.status, expired.url) == ("expired", None)
    assert (expired.payment_intent.status, expired.payment_intent.cancellation_reason) == ("canceled", "abandoned")
    assert [e.data.object.id for e in client.v1.events.list({"type": "checkout.session.expired"}).data] == [held.id]
    assert client.v1.checkout.sessions.retrieve(day.id).status == "open"
    with pytest.raises(PayError) as exc:
        standin.pay(held.id)
    assert exc.value.status == 410


# -- paying with a code -----------------------------------------------------------------------------------------------
def test_the_discount_comes_off_before_tax_and_is_spread_over_the_items(client, standin):
    make_coupon(client, id="TEN", percent_off=10)
    promo = make_code(client, "TEN", "READ10")
    s = client.v1.checkout.sessions.create(promo_params())
    paid = standin.pay(s.id, promotion_code=" read10 ", address=DE)
    # 2 x 12.50 + 9.99 = 34.99; 10% = 3.50 (half up), shared 2.50 : 1.00 by the items' 25.00 : 9.99
    items = client.v1.checkout.sessions.line_items.list(s.id).data
    assert [(i.amount_subtotal, i.amount_discount) for i in items] == [(2500, 250), (999, 100)]
    # German VAT (19%) on the discounted amounts: 22.50 -> 4.28, 8.99 -> 1.71, shipping 5.00 -> 0.95
    assert [i.amount_tax for i in items] == [428, 171] and [i.amount_total for i in items] == [2678, 1070]
    assert paid["total_details"] == {"amount_discount": 350, "amount_shipping": 500, "amount_tax": 428 + 171 + 95}
    assert paid["amount_subtotal"] == 3499 and paid["amount_total"] == 3499 - 350 + 500 + 694
    assert paid["discounts"] == [{"coupon": "TEN", "promotion_code": promo.id}]
    pi = client.v1.payment_intents.retrieve(paid["payment_intent"], {"expand": ["latest_charge"]})
    assert pi.amount == pi.amount_received == pi.latest_charge.amount == paid["amount_total"]


def test_an_amount_off_coupon_with_prices_that_include_tax(client, standin):
    make_coupon(client, id="FIVE", amount_off=500, currency="usd")
    make_code(client, "FIVE", "FIVE")
    lines = [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 3000, "tax_behavior": "inclusive",
                                            "product_data": {"name": "A"}}},
             {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 1000, "tax_behavior": "inclusive",
                                            "product_data": {"name": "B"}}}]
    s = client.v1.checkout.sessions.create(shop_params(line_items=lines, shipping_options=[],
                                                       allow_promotion_codes=True))
    paid = standin.pay(s.id, promotion_code="five", address=DE)
    items = client.v1.checkout.sessions.line_items.list(s.id).data
    # 5.00 off 40.00 shared 3.75 : 1.25; the 19% carved out of what is left: 26.25 -> 4.19, 8.75 -> 1.40
    assert [(i.amount_discount, i.amount_tax, i.amount_total) for i in items] == [(375, 419, 2625), (125, 140, 875)]
    assert paid["amount_total"] == 3500 and paid["total_details"]["amount_tax"] == 559


def test_times_redeemed_counts_completed_sessions_and_a_used_up_code_is_refused(client, standin):
    make_coupon(client, id="TEN", percent_off=10)
    promo = make_code(client, "TEN", "ONCE", max_redemptions=1)
    first, second = (client.v1.checkout.sessions.create(promo_params()) for _ in range(2))
    with pytest.raises(PayError):  # a declined payment redeems nothing
        standin.pay(first.id, promotion_code="ONCE", card="4000000000000002")
    assert client.v1.promotion_codes.retrieve(promo.id).times_redeemed == 0
    standin.pay(first.id, promotion_code="ONCE")
    used = client.v1.promotion_codes.retrieve(promo.id)
    assert (used.times_redeemed, used.active) == (1, False)
    assert client.v1.coupons.retrieve("TEN").times_redeemed == 1
    with pytest.raises(PayError) as exc:
        standin.pay(second.id, promotion_code="once")
    assert (exc.value.status, exc.value.field) == (400, "promotion_code")
    assert exc.value.message == 'The promotion code "ONCE" has reached its redemption limit.'
    assert standin.pay(second.id)["discounts"] == []  # without it the shopper can still pay


def test_a_used_up_coupon_takes_its_codes_with_it(client, standin):
    make_coupon(client, id="TWICE", percent_off=10, max_redemptions=2)
    make_code(client, "TWICE", "ONE")
    two = make_code(client, "TWICE", "TWO")
    for code in ("ONE", "TWO"):
        standin.pay(client.v1.checkout.sessions.create(promo_params()).id, promotion_code=code)
    coupon = client.v1.coupons.retrieve("TWICE")
    assert (coupon.times_redeemed, coupon.valid) == (2, False)
    assert client.v1.promotion_codes.retrieve(two.id).active is False
    with pytest.raises(PayError) as exc:
        standin.pay(client.v1.checkout.sessions.create(promo_params()).id, promotion_code="one")
    assert "redemption limit" in exc.value.message


def test_each_reason_a_code_is_refused(client, standin):
    make_coupon(client, id="TEN", percent_off=10)
    make_coupon(client, id="EUROS", amount_off=500, currency="eur")
    off = make_code(client, "TEN", "OFF")
    client.v1.promotion_codes.update(off.id, {"active": False})
    old = make_code(client, "TEN", "OLD", expires_at=int(time.time()) + 60)
    age(standin, old.id, expires_at=int(time.time()) - 1)
    make_code(client, "TEN", "BIG", restrictions={"minimum_amount": 5000, "minimum_amount_currency": "usd"})
    make_code(client, "EUROS", "EURO")
    s = client.v1.checkout.sessions.create(promo_params())
    for code, message in [
        ("NOPE", '"NOPE" is not a valid promotion code.'),
        ("off", 'The promotion code "OFF" is no longer active.'),
        ("old", 'The promotion code "OLD" has expired.'),
        ("big", 'The promotion code "BIG" needs an order of at least $50.00 (before shipping and tax).'),
        ("euro", 'The promotion code "EURO" cannot be used for payments in USD.'),
    ]:
        with pytest.raises(PayError) as exc:
            standin.pay(s.id, promotion_code=code)
        assert (exc.value.status, exc.value.field, exc.value.message) == (400, "promotion_code", message)
    assert client.v1.checkout.sessions.retrieve(s.id).status == "open"


def test_a_code_may_not_take_the_total_below_what_stripe_can_charge_but_to_nothing(client, standin):
    """Stripe completes a no-cost order without a card or a PaymentIntent (API 2023-08-16 and later):
    https://docs.stripe.com/payments/checkout/no-cost-orders"""
    params = promo_params(shipping_options=[], automatic_tax={"enabled": False})
    subtotal = client.v1.checkout.sessions.create(params).amount_subtotal
    make_coupon(client, id="ALMOST", amount_off=subtotal - 20, currency="usd")
    make_code(client, "ALMOST", "ALMOST")
    s = client.v1.checkout.sessions.create(params)
    with pytest.raises(PayError) as exc:  # 20 cents: less than Stripe can charge
        standin.pay(s.id, promotion_code="ALMOST")
    assert exc.value.field == "promotion_code" and "below the smallest amount that can be charged" in exc.value.message
    make_coupon(client, id="ALL", percent_off=100)
    make_code(client, "ALL", "FREE")
    with pytest.raises(PayError):  # a declined card first makes a PaymentIntent, canceled when the code makes it free
        standin.pay(s.id, card="4000000000000002")
    declined = s.payment_intent or client.v1.checkout.sessions.retrieve(s.id).payment_intent
    paid = standin.pay(s.id, promotion_code="FREE", card="", expiry="", cvc="")  # no card asked for
    assert (paid["status"], paid["payment_status"], paid["amount_total"]) == ("complete", "no_payment_required", 0)
    assert paid["payment_intent"] is None and paid["total_details"]["amount_discount"] == subtotal
    assert client.v1.payment_intents.retrieve(declined).status == "canceled"
    types = [e.type for e in client.v1.events.list({"limit": 100}).data]
    assert "checkout.session.completed" in types and "charge.succeeded" not in types


def test_codes_terms_and_tax_ids_only_where_the_session_asks_for_them(client, standin):
    make_coupon(client, id="TEN", percent_off=10)
    make_code(client, "TEN", "READ10")
    s = client.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, promotion_code="READ10")
    assert exc.value.message == "This checkout does not accept promotion codes."
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, tax_id=("eu_vat", "DE123456789"))
    assert exc.value.message == "This checkout does not collect tax IDs."
    paid = standin.pay(s.id, accept_terms=False)  # nothing to accept
    assert paid["consent"] is None and paid["customer_details"]["tax_ids"] == []


def test_consent_and_tax_ids_on_the_completed_session(client, standin, stripe_refs):
    fixtures, schemas = stripe_refs
    s = client.v1.checkout.sessions.create(promo_params())
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, accept_terms=False)
    assert (exc.value.status, exc.value.field) == (400, "terms")
    assert exc.value.message == "Please accept the terms of service to continue."
    for tax_id, field in ((("eu_vat", "DE1234"), "tax_id_value"), (("xx_vat", "123"), "tax_id_type"),
                          (("gb_vat", "DE123456789"), "tax_id_value")):
        with pytest.raises(PayError) as exc:
            standin.pay(s.id, tax_id=tax_id)
        assert exc.value.field == field
    standin.pay(s.id, address=DE, tax_id=("eu_vat", "DE 123 456 789"))
    done = wire(client.v1.checkout.sessions.retrieve(s.id))
    assert done["consent"] == {"promotions": None, "terms_of_service": "accepted"}
    assert done["customer_details"]["tax_ids"] == [{"type": "eu_vat", "value": "DE 123 456 789"}]
    assert against_spec(done, schemas["checkout.session"], schemas, "session") == []
    problems = compare({k: v for k, v in done.items() if k != "tax_id_collection"}, fixtures["checkout.session"],
                       "checkout.session", schemas)
    assert problems == ["checkout.session.consent_collection.payment_method_reuse_agreement: null, fixture has "
                        "object (and not nullable in the spec)"]
    event = client.v1.events.list({"type": "checkout.session.completed"}).data[0]
    assert event.data.object.consent.terms_of_service == "accepted"


def test_a_tax_id_can_be_required_where_supported(client, standin):
    s = client.v1.checkout.sessions.create(shop_params(tax_id_collection={"enabled": True,
                                                                          "required": "if_supported"}))
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, address=DE)
    assert (exc.value.field, exc.value.message) == ("tax_id_value", "Enter your tax ID.")
    paid = standin.pay(s.id, address=DE, tax_id=("eu_vat", "DE123456789"))
    assert paid["customer_details"]["tax_ids"] == [{"type": "eu_vat", "value": "DE123456789"}]


def test_a_discounted_item_and_session_keep_stripes_shape(client, standin, stripe_refs):
    fixtures, schemas = stripe_refs
    make_coupon(client, id="TEN", percent_off=10)
    make_code(client, "TEN", "READ10")
    s = client.v1.checkout.sessions.create(promo_params())
    standin.pay(s.id, promotion_code="READ10")
    item = wire(client.v1.checkout.sessions.line_items.list(s.id))["data"][0]
    assert item["amount_discount"] > 0
    assert compare(item, fixtures["item"], "item", schemas) == []
    assert against_spec(item, schemas["item"], schemas, "item") == []


# -- expand -----------------------------------------------------------------------------------------------------------
def test_the_shops_retrieve_expands_the_promotion_code_in_one_call(client, standin, app):
    make_coupon(client, id="TEN", percent_off=10, name="Ten percent")
    promo = make_code(client, "TEN", "READ10")
    s = client.v1.checkout.sessions.create(promo_params())
    standin.pay(s.id, promotion_code="read10")
    before = sum(standin.calls.values())
    retrieve = client.v1.checkout.sessions.retrieve
    r = retrieve(s.id, sent(retrieve, {"expand": ["line_items", "payment_intent", "discounts.promotion_code"]}))
    assert sum(standin.calls.values()) == before + 1
    d = r.to_dict()
    assert d["discounts"][0]["promotion_code"]["code"] == "READ10"
    assert d["discounts"][0]["promotion_code"]["id"] == promo.id and d["discounts"][0]["coupon"] == "TEN"
    assert d["payment_intent"]["amount"] == d["amount_total"] and len(d["line_items"]["data"]) == 2
    both = app.get(f"/v1/checkout/sessions/{s.id}?expand[]=discounts.coupon&expand[]=discounts.promotion_code"
                   ".promotion.coupon").json["discounts"][0]
    assert both["coupon"]["name"] == "Ten percent" and both["promotion_code"]["promotion"]["coupon"]["id"] == "TEN"
    assert "_code_key" not in both["promotion_code"]
    listed = client.v1.checkout.sessions.list({"expand": ["data.discounts.promotion_code"], "limit": 1}).data[0]
    assert listed.discounts[0].promotion_code.code == "READ10"
    plain = client.v1.checkout.sessions.create(shop_params())  # no discounts: nothing to expand, no error
    assert retrieve(plain.id, {"expand": ["discounts.promotion_code"]}).discounts == []
    refused = app.get(f"/v1/checkout/sessions/{s.id}?expand[]=discounts.nothing", status=400)
    assert refused.json["error"]["message"] == "This property cannot be expanded (discounts.nothing)."


# -- the payment page -------------------------------------------------------------------------------------------------
def test_the_page_shows_a_code_field_the_terms_box_and_tax_id_fields(client, pay_page):
    s = client.v1.checkout.sessions.create(promo_params())
    page = pay_page.get(f"/offline-checkout/{s.id}")
    text = page.text
    ids = set(re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', text))
    assert {"promotion_code", "terms", "tax_id_type", "tax_id_value"} <= ids
    assert ids - set(re.findall(r'<label for="([^"]+)"', text)) == set()
    assert 'I agree to the <a href="https://shop.example/terms?v=2&amp;x=1" target="_blank" rel="noopener">' \
           'Terms of Service</a>' in text
    assert re.search(r'<input type="checkbox" id="terms" name="terms" value="accepted" required', text)
    assert {"eu_vat", "gb_vat", "us_ein", "au_abn"} <= set(re.findall(r'<option value="([a-z]{2}_[a-z]+)"', text))
    assert "Tax ID (optional)" in text
    plain = pay_page.get(f"/offline-checkout/{client.v1.checkout.sessions.create(shop_params()).id}").text
    assert 'id="promotion_code"' not in plain and 'id="terms"' not in plain and 'id="tax_id_value"' not in plain


def test_the_terms_message_is_escaped_and_only_http_links_are_made(client, pay_page):
    message = 'Read <b>this</b> & [the terms](javascript:alert(1)) or [these](https://x.example/t"onclick=1)'
    s = client.v1.checkout.sessions.create(promo_params(custom_text={"terms_of_service_acceptance": {
        "message": message}}))
    text = pay_page.get(f"/offline-checkout/{s.id}").text
    assert "<b>" not in text and "Read &lt;b&gt;this&lt;/b&gt; &amp; [the terms](javascript:alert(1))" in text
    assert 'href="javascript' not in text and not re.search(r"<a [^>]*\sonclick", text)
    assert '<a href="https://x.example/t&quot;onclick=1" target="_blank" rel="noopener">these</a>' in text


def test_applying_a_good_code_shows_the_discount_and_keeps_the_form(client, pay_page, standin):
    make_coupon(client, id="TEN", percent_off=10)
    make_code(client, "TEN", "READ10")
    s = client.v1.checkout.sessions.create(promo_params())
    form = fill(pay_page.get(f"/offline-checkout/{s.id}"), promotion_code="read10", tax_id_value="DE123456789")
    applied = form.submit("action", value="apply_code")
    assert applied.status_int == 200 and "READ10 applied: 10% off" in applied.text
    assert "Discount (READ10)" in applied.text and "−$3.50" in applied.text
    # 34.99 - 3.50 + 5.00 shipping + 19% VAT on 31.49 and on 5.00 (5.98 + 0.95) = 43.43
    assert "Pay $43.43" in applied.text
    again = applied.forms["pay"]
    assert again["promotion_code"].value == "read10" and again["name"].value == "Ada Reader"
    assert again["tax_id_value"].value == "DE123456789" and again["tax_id_type"].value == "eu_vat"
    assert standin.get(s.id)["discounts"] == []  # nothing is paid or kept by applying
    again["card_number"] = "4242424242424242"
    again["card_cvc"] = "123"
    again["terms"] = "accepted"
    done = again.submit("action", value="pay")
    assert done.status_int == 303
    paid = client.v1.checkout.sessions.retrieve(s.id)
    assert paid.amount_total == 4343 and paid.total_details.amount_discount == 350
    assert paid.customer_details.tax_ids[0].value == "DE123456789"


@pytest.mark.parametrize("code, message", [
    ("NOPE", "&quot;nope&quot; is not a valid promotion code."),
    ("OFF", "is no longer active."),
    ("OLD", "has expired."),
    ("USED", "has reached its redemption limit."),
    ("BIG", "needs an order of at least $50.00"),
])
def test_the_page_refuses_a_code_saying_why(client, pay_page, standin, code, message):
    make_coupon(client, id="TEN", percent_off=10)
    client.v1.promotion_codes.update(make_code(client, "TEN", "OFF").id, {"active": False})
    old = make_code(client, "TEN", "OLD", expires_at=int(time.time()) + 60)
    age(standin, old.id, expires_at=int(time.time()) - 1)
    make_code(client, "TEN", "USED", max_redemptions=1)
    standin.pay(client.v1.checkout.sessions.create(promo_params()).id, promotion_code="USED")
    make_code(client, "TEN", "BIG", restrictions={"minimum_amount": 5000, "minimum_amount_currency": "usd"})
    s = client.v1.checkout.sessions.create(promo_params())
    page = pay_page.get(f"/offline-checkout/{s.id}")
    for action in ("apply_code", "pay"):
        form = fill(page, promotion_code=code.lower(), phone="+49 30 1234567")
        form["terms"] = "accepted"
        refused = form.submit("action", value=action, status=400)
        assert message in refused.text and "Discount (" not in refused.text
        assert refused.forms["pay"]["promotion_code"].value == code.lower()
        assert refused.forms["pay"]["phone"].value == "+49 30 1234567"
        field = refused.html.find("input", id="promotion_code")
        assert field.get("aria-invalid") == "true" and field.has_attr("autofocus")
    assert client.v1.checkout.sessions.retrieve(s.id).status == "open"


def test_a_code_swapped_for_one_that_cannot_be_used_and_paid_says_why_without_javascript(client, pay_page):
    """The shopper applied one code, typed another over it and pressed Pay: the total rose, and the reason is the
    code, not "with your changes" while the field still shows it."""
    make_coupon(client, id="TEN", percent_off=10)
    make_code(client, "TEN", "SPRING")
    make_code(client, "TEN", "BIG", restrictions={"minimum_amount": 5000, "minimum_amount_currency": "usd"})
    s = client.v1.checkout.sessions.create(promo_params())
    form = fill(pay_page.get(f"/offline-checkout/{s.id}"), promotion_code="SPRING")
    form["terms"] = "accepted"
    applied = form.submit("action", value="apply_code")
    assert "Discount (" in applied.text
    form = fill(applied, promotion_code="BIG")
    form["terms"] = "accepted"
    refused = form.submit("action", value="pay", status=400)
    assert "needs an order of at least $50.00" in refused.text and "With your changes" not in refused.text
    assert refused.html.find("input", id="promotion_code").get("aria-invalid") == "true"
    assert client.v1.checkout.sessions.retrieve(s.id).status == "open"


def test_the_terms_box_must_be_ticked_on_the_page(client, pay_page):
    s = client.v1.checkout.sessions.create(promo_params())
    refused = fill(pay_page.get(f"/offline-checkout/{s.id}")).submit("action", value="pay", status=400)
    assert "Please accept the terms of service to continue." in refused.text
    box = refused.html.find("input", id="terms")
    assert box.get("aria-invalid") == "true" and box.has_attr("autofocus") and not box.has_attr("checked")
    form = fill(refused)
    form["terms"] = "accepted"
    assert form.submit("action", value="pay").status_int == 303


def test_a_bad_tax_id_is_refused_on_the_page(client, pay_page):
    s = client.v1.checkout.sessions.create(promo_params())
    form = fill(pay_page.get(f"/offline-checkout/{s.id}"), tax_id_value="DE1234")
    form["terms"] = "accepted"
    refused = form.submit("action", value="pay", status=400)
    assert "Enter a valid European VAT number, such as DE123456789." in refused.text
    assert refused.forms["pay"]["tax_id_value"].value == "DE1234"


def test_an_applied_code_can_be_removed(client, pay_page):
    make_coupon(client, id="TEN", percent_off=10)
    make_code(client, "TEN", "READ10")
    s = client.v1.checkout.sessions.create(promo_params())
    applied = fill(pay_page.get(f"/offline-checkout/{s.id}"), promotion_code="READ10").submit("action",
                                                                                            value="apply_code")
    removed = applied.forms["pay"].submit("action", value="remove_code")
    assert removed.status_int == 200 and "Discount (" not in removed.text
    assert removed.forms["pay"]["promotion_code"].value == ""
    empty = removed.forms["pay"].submit("action", value="apply_code", status=400)
    assert "Enter a promotion code." in empty.text


def test_a_free_order_made_payable_by_another_shipping_option_asks_for_the_card(client, standin):
    rates = [{"shipping_rate_data": {"type": "fixed_amount", "display_name": name,
                                     "fixed_amount": {"amount": amount, "currency": "usd"}}}
             for name, amount in (("Pick up", 0), ("Post", 500))]
    s = client.v1.checkout.sessions.create(promo_params(shipping_options=rates, automatic_tax={"enabled": False}))
    make_coupon(client, id="ALL", percent_off=100)
    make_code(client, "ALL", "FREE")
    with pytest.raises(PayError) as exc:  # "Complete order" pressed after choosing the paid option
        standin.pay(s.id, promotion_code="FREE", shipping_option_index=1, card="", expiry="", cvc="")
    assert (exc.value.status, exc.value.field, exc.value.message) == (
        400, "card", "The total is now $5.00: enter your card to pay it.")
    assert standin.pay(s.id, promotion_code="FREE", shipping_option_index=1)["amount_total"] == 500


def test_card_details_typed_before_a_code_made_the_order_free_are_not_read(client, pay_page):
    """Expiry and CVC typed, no number, and a 100% code: the page shows no card fields for a free order, so what was
    typed in them is not checked (it was, as "Your card number is invalid." next to fields no longer shown)."""
    rates = [{"shipping_rate_data": {"type": "fixed_amount", "display_name": "Pick up",
                                     "fixed_amount": {"amount": 0, "currency": "usd"}}}]
    s = client.v1.checkout.sessions.create(promo_params(shipping_options=rates, automatic_tax={"enabled": False}))
    make_coupon(client, id="ALL", percent_off=100)
    make_code(client, "ALL", "FREE")
    form = fill(pay_page.get(f"/offline-checkout/{s.id}"), card="", promotion_code="FREE")
    form["terms"].checked = True
    form.submit("action", value="pay", status=303)
    paid = client.v1.checkout.sessions.retrieve(s.id)
    assert (paid.status, paid.amount_total, paid.payment_intent) == ("complete", 0, None)
