"""Coupons and promotion codes in the stand-in: the API's requests and objects, uniqueness, lists and lapsing."""
import json
import re
import time

import pytest
import stripe

import test_standin_api as api
from test_standin_shape import against_spec, compare, stripe_refs  # noqa: F401 (a fixture)
from tests import stripe_params

standin, client, app, shop_params = api.standin, api.client, api.app, api.shop_params  # shared with those tests
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


def wire(obj):
    return json.loads(obj.last_response.body)


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
