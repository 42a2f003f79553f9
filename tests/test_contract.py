"""Every request the shop sends to Stripe matches the `stripe` package's typed parameter classes."""

import inspect

import pytest
import stripe

from tests import stripe_params
from tests.conftest import ROOT, pay
from webshop import merchant, payments

RECORDED = []


@pytest.fixture
def recorded(monkeypatch):
    """Record (service method, params) for every Stripe call the shop makes."""
    RECORDED.clear()
    real = payments.call

    def recording(what, fn, *args, **kwargs):
        bound = inspect.signature(fn).bind(*args, **kwargs)
        RECORDED.append((fn, bound.arguments.get("params") or {}))
        return real(what, fn, *args, **kwargs)

    monkeypatch.setattr(payments, "call", recording)
    return RECORDED


def test_validator_catches_unknown_keys_wrong_literals_and_missing_keys():
    client = stripe.StripeClient("sk_test_x")
    cls = stripe_params.params_class(client.v1.checkout.sessions.create)
    problems = stripe_params.check({"mode": "paymnt", "line_items": [{"quantity": "1"}], "colour": "red",
                                    "automatic_tax": {}}, cls)
    assert any("mode: 'paymnt' is not one of" in p for p in problems)
    assert any("quantity: expected an integer" in p for p in problems)
    assert any("colour: unknown parameter" in p for p in problems)
    assert any("automatic_tax.enabled: required key missing" in p for p in problems)


def test_every_call_of_a_purchase_matches_the_sdk_types(shopper, recorded):
    before = sum(shopper.standin.calls.values())  # the start-up's look at the promotion codes
    shopper.add("walden", 2)
    shopper.add("moby-dick")
    to_stripe = shopper.checkout()
    paid = pay(shopper, to_stripe)
    shopper.get(paid.location)
    shopper.checkout(product_id="frankenstein", quantity="1")
    assert len(recorded) >= 3
    for fn, params in recorded:
        cls = stripe_params.params_class(fn)
        assert stripe_params.check(params, cls) == [], (fn.__qualname__, params)
    # and the stand-in served exactly the calls the shop made: none bypassed payments.call
    assert sum(shopper.standin.calls.values()) - before == len(recorded)


def test_checkout_params_cover_what_the_shop_promises(shopper, recorded):
    shopper.add("walden")
    shopper.checkout()
    (fn, params), = [(f, p) for f, p in recorded if f.__name__ == "create"]
    assert params["mode"] == "payment" and params["locale"] == "auto"
    assert params["automatic_tax"] == {"enabled": True}
    assert params["phone_number_collection"] == {"enabled": True}
    assert params["client_reference_id"] == params["metadata"]["order_id"]
    assert params["payment_intent_data"]["metadata"]["order_id"] == params["client_reference_id"]
    item = params["line_items"][0]
    # Checkout shows PNG/JPEG, so the PNG beside each SVG cover is what Stripe gets
    assert item["price_data"]["product_data"]["images"] == ["http://shop.test/static/img/books/walden.png"]
    assert item["price_data"]["tax_behavior"] in ("exclusive", "inclusive")
    assert params["shipping_address_collection"]["allowed_countries"]
    rate = params["shipping_options"][0]["shipping_rate_data"]
    assert rate["delivery_estimate"]["minimum"]["unit"] == "business_day"
    assert params["success_url"] == "http://shop.test/success?session_id={CHECKOUT_SESSION_ID}"


def test_an_svg_without_a_png_beside_it_is_sent_as_is(tmp_path):
    import shutil

    from webshop.catalog import load_catalog
    public = tmp_path / "public"
    shutil.copytree(ROOT / "public" / "img", public / "img")
    (public / "img" / "books" / "walden.png").unlink()
    catalog = load_catalog(ROOT / "catalog.json", public)
    assert catalog.product("walden").checkout_image == "img/books/walden.svg"
    assert catalog.product("moby-dick").checkout_image == "img/books/moby-dick.png"


def test_merchant_calls_match_the_sdk_types(shopper, recorded, data_dir, monkeypatch, capsys):
    """Refund, reconcile and expire send well-typed requests too."""
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:9")  # nothing listens: events stay queued
    shopper.add("walden")
    paid = pay(shopper, shopper.checkout())
    shopper.get(paid.location)
    order = shopper.shop.orders.ledger.list(status="paid")[0]
    shopper.add("moby-dick")
    open_order = shopper.shop.orders.ledger.by_session(shopper.session_id(shopper.checkout()))
    assert merchant.main(["refund", order["id"], "--amount", "100"]) == 0
    assert merchant.main(["reconcile"]) == 0
    assert merchant.main(["expire", open_order["id"]]) == 0
    names = {fn.__name__ for fn, _ in recorded}
    assert {"create", "retrieve", "list", "expire"} <= names
    for fn, params in recorded:
        assert stripe_params.check(params, stripe_params.params_class(fn)) == [], (fn.__qualname__, params)
