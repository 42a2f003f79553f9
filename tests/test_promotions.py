"""Promotion codes, terms of service and tax IDs from catalog.json, as Checkout (the stand-in) takes them."""

import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import stripe

from standin import PayError
from webshop import merchant, payments
from tests.conftest import ROOT, edit_catalog, free_port, handoff, settled, slow_to_expire, wire

SPRING = {"code": "spring10", "percent_off": 10, "expires": "2099-01-31", "max_redemptions": 2,
          "minimum_amount": 2000}


@pytest.fixture
def shop_with(make_shopper, catalog_copy):
    """make(**top-level catalog fields) -> a shopper on that catalog; edit(**fields) changes it under the shop."""
    def edit(**top):
        with edit_catalog(catalog_copy) as data:
            data.update(top)

    def make(**top):
        edit(**top)
        shopper = wire(make_shopper(catalog=str(catalog_copy)))
        shopper.edit = edit
        return shopper
    return make


def active_codes(shopper):
    codes = shopper.shop.orders.stripe.v1.promotion_codes.list({"active": True, "limit": 100})
    return {c.code: c for c in codes.data}


def buy(shopper, products, **pay):
    """Check out `products` ({id: quantity}) and pay; the session id, or PayError from the payment page."""
    for product_id, quantity in products.items():
        shopper.add(product_id, quantity)
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id, **pay)
    shopper.standin.deliver_pending()
    return session_id


def test_the_catalogs_promotions_become_active_codes_at_stripe_and_follow_its_edits(shop_with):
    shopper = shop_with(promotions=[SPRING, {"code": "FIVE-OFF", "amount_off": 500}])
    codes = active_codes(shopper)
    assert set(codes) == {"SPRING10", "FIVE-OFF"}
    assert codes["SPRING10"].max_redemptions == 2
    assert codes["SPRING10"].restrictions.minimum_amount == 2000
    # Creating a shop again (a restart, another instance) makes nothing twice.
    again = shop_with(promotions=[SPRING, {"code": "FIVE-OFF", "amount_off": 500}])
    assert set(active_codes(again)) == {"SPRING10", "FIVE-OFF"}
    shopper.edit(promotions=[{**SPRING, "percent_off": 20}])  # edited: a new coupon; removed: deactivated
    shopper.get("/")
    codes = active_codes(shopper)
    assert set(codes) == {"SPRING10"}
    coupon = shopper.standin.get(codes["SPRING10"].promotion.coupon)
    assert coupon["percent_off"] == 20
    session = shopper.standin.get(shopper.session_id(shopper.checkout(product_id="walden")))
    assert session["allow_promotion_codes"] is True


def test_promotions_removed_while_the_shop_was_stopped_are_deactivated_when_it_starts(shop_with):
    assert set(active_codes(shop_with(promotions=[SPRING]))) == {"SPRING10"}
    restarted = shop_with(promotions=[])  # every promotion removed before the next start
    assert active_codes(restarted) == {}
    again = shop_with(promotions=[])  # started again unchanged: Stripe is not asked (a slow one would delay it)
    assert again.standin.calls["GET /v1/promotion_codes"] == 0


def test_a_code_an_edit_removed_while_stripe_was_down_is_deactivated_a_minute_later_unasked(shop_with):
    shopper = shop_with(promotions=[SPRING])
    shopper.standin.faults.add("GET /v1/promotion_codes", "500", times=3)  # the call and the SDK's two retries
    shopper.edit(promotions=[])
    shopper.edited()
    assert set(active_codes(shopper)) == {"SPRING10"}  # still usable: Stripe did not answer
    asked = shopper.standin.calls["GET /v1/promotion_codes"]
    shopper.edited()  # within the minute: not asked again
    assert shopper.standin.calls["GET /v1/promotion_codes"] == asked
    shopper.shop.retry_closing = time.monotonic()  # a minute on, with no edit since
    shopper.edited()
    assert active_codes(shopper) == {}


def test_the_codes_of_an_edit_are_made_by_the_closer_thread_not_by_the_page_that_loads_it(shop_with, monkeypatch):
    shopper, threads = shop_with(promotions=[SPRING]), []
    sync = payments.sync_promotions
    monkeypatch.setattr(payments, "sync_promotions", lambda *a: threads.append(threading.current_thread()) or sync(*a))
    shopper.edit(promotions=[])
    shopper.edited()  # a slow Stripe would hold this page only as long as the closer's first few seconds
    assert threads and threading.current_thread() not in threads and active_codes(shopper) == {}


def test_an_edit_closes_a_repriced_checkout_before_it_waits_on_stripe_for_its_codes(shop_with, monkeypatch):
    shopper, release = shop_with(promotions=[]), threading.Event()
    old = shopper.session_id(shopper.checkout(product_id="walden"))
    sync = payments.sync_promotions
    monkeypatch.setattr(payments, "sync_promotions", lambda *a: release.wait(10) and sync(*a))  # a slow Stripe
    monkeypatch.setattr("shop.CLOSE_WAIT", 0.5)
    with edit_catalog(shopper.shop.config.catalog) as data:
        data["promotions"] = [SPRING]
        next(p for p in data["products"] if p["id"] == "walden")["price"] += 100
    shopper.get("/")  # answered while the codes are still being made
    try:
        assert shopper.shop.orders.ledger.by_session(old)["status"] == "expired"
    finally:
        release.set()
    settled(shopper.shop)
    assert set(active_codes(shopper)) == {"SPRING10"}


def test_the_codes_of_an_edit_loaded_while_an_earlier_one_is_closing_wait_for_its_own_checkouts(shop_with,
                                                                                                 monkeypatch):
    shopper = shop_with(promotions=[])
    other = type(shopper)(shopper.app)  # another browser: a browser's newer checkout would replace its older
    shopper.checkout(product_id="walden")
    moby = other.session_id(other.checkout(product_id="moby-dick"))
    ledger, sync, seen = shopper.shop.orders.ledger, payments.sync_promotions, []
    monkeypatch.setattr(payments, "sync_promotions", lambda client, catalog: seen.append(
        (catalog.promotions, ledger.by_session(moby)["status"])) or sync(client, catalog))
    release, _, at_work = slow_to_expire(shopper.shop, monkeypatch)

    def reprice(product_id, **top):
        with edit_catalog(shopper.shop.config.catalog) as data:
            data.update(top)
            next(p for p in data["products"] if p["id"] == product_id)["price"] += 100
        shopper.get("/")
    reprice("walden")  # its checkout is being closed (Stripe slow to expire it) when the next edit comes
    assert at_work.wait(10)
    reprice("moby-dick", promotions=[SPRING])
    release.set()
    settled(shopper.shop)
    assert seen and all(status == "expired" for promotions, status in seen if promotions)
    assert set(active_codes(shopper)) == {"SPRING10"}


@pytest.mark.parametrize("error, again", [(stripe.InvalidRequestError("No such coupon", None), False),
                                          (stripe.APIConnectionError("unreachable"), True)])
def test_codes_stripe_refused_wait_for_the_next_edit_codes_it_did_not_answer_are_tried_a_minute_on(
        shop_with, monkeypatch, caplog, error, again):
    shopper = shop_with(promotions=[])
    monkeypatch.setattr(shopper.shop.orders.stripe.v1.coupons, "create", lambda *a, **k: (_ for _ in ()).throw(error))
    shopper.edit(promotions=[SPRING])
    shopper.edited()
    assert active_codes(shopper) == {} and "promotion codes not brought in line" in caplog.text
    assert (shopper.shop.retry_closing is not None) is again


def test_another_key_on_the_same_database_gets_the_codes_made_in_its_own_account(shop_with, make_shopper,
                                                                                  catalog_copy, spawn, tmp_path):
    assert set(active_codes(shop_with(promotions=[SPRING]))) == {"SPRING10"}  # offline, as before going live
    port = free_port()
    url = f"http://127.0.0.1:{port}"  # another account: a stand-in of its own, reached with a key, over HTTP
    spawn([sys.executable, "-m", "standin", "--port", str(port), "--data-dir", str(tmp_path / "account"),
           "--public-url", url], port)
    other = make_shopper(catalog=str(catalog_copy), stripe_secret_key="sk_test_" + "a" * 24, stripe_api_base=url,
                         stripe_webhook_secret="whsec_" + "a" * 32)
    assert set(active_codes(other)) == {"SPRING10"}


def test_a_code_typed_on_stripes_page_discounts_before_tax_and_is_shown_and_handed_off(shop_with):
    shopper = shop_with(promotions=[SPRING])
    session_id = buy(shopper, {"moby-dick": 2}, promotion_code="spring10")
    session = shopper.standin.get(session_id)
    assert session["total_details"]["amount_discount"] == 320  # 10% of 2 × $15.99, rounded
    page = shopper.get(f"/success?session_id={session_id}")
    assert "Discount (SPRING10)" in page.text and "$3.20" in page.text
    rows = [th.text.split(" (")[0] for th in page.html.select("tfoot th")]
    assert rows == ["Subtotal", "Discount", "Shipping", "Tax", "Total charged"], rows  # as on Stripe's page
    order = shopper.shop.orders.ledger.by_session(session_id)
    assert (order["amount_discount"], order["promotion_code"]) == (320, "SPRING10")
    (record,) = handoff(shopper)
    assert (record["amount_discount"], record["promotion_code"]) == (320, "SPRING10")
    assert record["amount_total"] == session["amount_total"]


@pytest.mark.parametrize("code, products, reason", [
    ("NOPE", {"moby-dick": 2}, "not a valid"),
    ("SPRING10", {"walden": 1}, "at least $20.00"),  # $11.99 is under the minimum
])
def test_unknown_or_below_minimum_codes_are_refused_on_the_payment_page(shop_with, code, products, reason):
    shopper = shop_with(promotions=[SPRING])
    with pytest.raises(PayError) as refused:
        buy(shopper, products, promotion_code=code)
    assert reason in str(refused.value).lower()


def test_an_exhausted_code_is_refused(shop_with):
    shopper = shop_with(promotions=[{**SPRING, "max_redemptions": 1}])
    buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")
    with pytest.raises(PayError):
        buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")


@pytest.mark.parametrize("edit", [{"expires": "2099-02-28"}, {"extra": True}])
def test_a_used_up_code_stays_used_up_when_the_promotions_are_edited(shop_with, edit):
    shopper = shop_with(promotions=[{**SPRING, "max_redemptions": 2}])
    buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")
    # its expiry moved (a new coupon at Stripe), or another promotion added: 1 of the 2 redemptions is left
    changed = {**SPRING, "max_redemptions": 2, **{k: v for k, v in edit.items() if k != "extra"}}
    shopper.edit(promotions=[changed] + ([{"code": "OTHER5", "amount_off": 500}] if "extra" in edit else []))
    shopper.get("/")
    buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")
    with pytest.raises(PayError):
        buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")
    shopper.edit(promotions=[changed, {"code": "LATER", "percent_off": 5}])
    shopper.get("/")
    assert "SPRING10" not in active_codes(shopper)  # used up: not made again
    with pytest.raises(PayError):
        buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")


def test_a_code_redeemed_while_an_edit_replaces_it_counts_against_the_new_codes_limit(shop_with, monkeypatch):
    """A shopper paid with the old code after the shop listed the codes and before it closed that one (Stripe was
    slow): the redemption was counted nowhere, and the new code allowed one more than max_redemptions."""
    shopper = shop_with(promotions=[{**SPRING, "max_redemptions": 3}])
    buy(shopper, {"moby-dick": 2}, promotion_code="SPRING10")
    other = type(shopper)(shopper.app)  # another shopper, on Stripe's page meanwhile
    other.add("moby-dick", 2)
    waiting = other.session_id(other.checkout())
    codes = shopper.shop.orders.stripe.v1.promotion_codes
    close = codes.update

    def paid_first(*args, **kwargs):  # the other shopper presses Pay just before the old code is closed
        shopper.standin.pay(waiting, promotion_code="SPRING10")
        return close(*args, **kwargs)
    monkeypatch.setattr(codes, "update", paid_first)
    shopper.edit(promotions=[{**SPRING, "max_redemptions": 3, "percent_off": 20}])
    shopper.get("/")
    assert active_codes(shopper)["SPRING10"].max_redemptions == 1  # 3, less the 2 redeemed
    assert shopper.standin.get(waiting)["total_details"]["amount_discount"] > 0


def test_an_expired_promotion_is_not_made_active_and_check_and_the_log_say_so(shop_with, catalog_copy, caplog):
    caplog.set_level("INFO", logger="shop")
    shopper = shop_with(promotions=[{**SPRING, "expires": "2020-01-31"}])
    assert active_codes(shopper) == {}
    assert "promotion SPRING10 is not offered: expired" in caplog.text
    check = subprocess.run([sys.executable, "shop.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={"CATALOG": str(catalog_copy), "DATA_DIR": str(catalog_copy.parent / "data"),
                                "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0, check.stdout + check.stderr  # kept in the catalog, as a merchant may
    assert "warning: promotion SPRING10 ended on 2020-01-31 (at 23:59:59 UTC): not offered" in check.stdout
    check = subprocess.run([sys.executable, "shop.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={"CATALOG": str(catalog_copy), "DATA_DIR": str(catalog_copy.parent / "data"),
                                "PATH": "/usr/bin:/bin", "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_MAX_RETRIES": "0",
                                "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"})  # other problems besides
    assert check.returncode == 1 and "STRIPE_WEBHOOK_SECRET: not set" in check.stdout
    assert "warning: promotion SPRING10 ended on 2020-01-31" in check.stdout


def test_terms_consent_and_tax_ids_are_asked_for_and_recorded(shop_with):
    shopper = shop_with(checkout={"terms_url": "https://example.com/terms", "collect_tax_ids": True})
    shopper.add("walden")
    session_id = shopper.session_id(shopper.checkout())
    session = shopper.standin.get(session_id)
    assert session["consent_collection"]["terms_of_service"] == "required"
    assert "https://example.com/terms" in session["custom_text"]["terms_of_service_acceptance"]["message"]
    assert session["tax_id_collection"]["enabled"] is True
    with pytest.raises(PayError):
        shopper.standin.pay(session_id, accept_terms=False)
    shopper.standin.pay(session_id, tax_id=("eu_vat", "DE123456789"))
    shopper.standin.deliver_pending()
    order = shopper.shop.orders.ledger.by_session(session_id)
    assert order["terms_accepted"] == "accepted"
    assert order["tax_ids"] == [{"type": "eu_vat", "value": "DE123456789"}]
    (record,) = handoff(shopper)
    assert record["terms_accepted"] == "accepted" and record["tax_ids"] == order["tax_ids"]


def test_promotion_and_checkout_fields_are_checked_with_their_paths(shop_with, catalog_copy):
    from webshop.catalog import problems
    with edit_catalog(catalog_copy) as data:
        data["promotions"] = [{"code": "X", "percent_off": 10}, {"code": "BOTH", "percent_off": 5, "amount_off": 5}]
        data["checkout"] = {"terms_url": "javascript:alert(1)"}
    found = problems(catalog_copy, catalog_copy.parent.parent / "public")
    assert any(p.startswith("catalog.json: promotions[0].code: must be 3-40 letters") for p in found)
    assert "catalog.json: promotions[1]: needs exactly one of percent_off or amount_off" in found
    assert any(p.startswith("catalog.json: checkout.terms_url: must be an https:// address") for p in found)


@pytest.mark.parametrize("count, ok", [(1, True), (1_000_000, True), (None, True), (0, False), (-1, False)])
def test_max_redemptions_is_at_least_one_as_stripe_requires(catalog_copy, count, ok):
    """0 is no limit Stripe takes: it would have made a code of unlimited use."""
    from webshop.catalog import problems
    with edit_catalog(catalog_copy) as data:
        data["promotions"] = [{"code": "NOMORE", "percent_off": 50, "max_redemptions": count}]
    found = problems(catalog_copy, ROOT / "public")
    assert found == ([] if ok else ["catalog.json: promotions[0].max_redemptions: must be a whole number from 1 to "
                                    f"1000000, got {count}"])


@pytest.mark.parametrize("percent, ok", [(10, True), (12.5, True), (0.01, True), (100, True), (1e-300, False),
                                         (0.001, False), (12.345, False), (0, False), (100.01, False), (True, False)])
def test_percent_off_is_what_stripe_takes(catalog_copy, percent, ok):
    from webshop.catalog import problems
    with edit_catalog(catalog_copy) as data:
        data["promotions"] = [{"code": "SALE", "percent_off": percent}]
    found = problems(catalog_copy, ROOT / "public")
    assert found == ([] if ok else ["catalog.json: promotions[0].percent_off: must be a number from 0.01 to 100 with "
                                    f"at most two decimals, like 12.5, got {json.dumps(percent)}"])


def test_a_code_of_100_percent_with_free_shipping_is_a_no_cost_order_handed_off_once(shop_with, capsys):
    """Stripe completes it without a card or a PaymentIntent (payment_status no_payment_required)."""
    from webshop.settings import ShopError
    shopper = shop_with(promotions=[{"code": "FREEBOOK", "percent_off": 100}], tax={"mode": "none"},
                        shipping={"countries": ["US"], "options": [
                            {"id": "pickup", "name": "Pick up in the shop", "amount": 0, "min_days": 1, "max_days": 2}]})
    session_id = buy(shopper, {"walden": 1}, promotion_code="FREEBOOK", card="", expiry="", cvc="")
    page = shopper.get(f"/success?session_id={session_id}")
    assert "Thank you for your order" in page.text and "Nothing was charged, and your order is confirmed." in page.text
    assert page.html.find("tr", class_="total").td.text.startswith("$0.00")
    (record,) = handoff(shopper)
    assert (record["amount_total"], record["payment_intent"], record["promotion_code"]) == (0, None, "FREEBOOK")
    order = shopper.shop.orders.ledger.by_session(session_id)
    assert order["status"] == "paid" and order["amount_discount"] == order["amount_subtotal"] > 0
    with pytest.raises(ShopError) as refused:
        shopper.shop.orders.refund(order["id"])
    assert refused.value.message == f"Nothing was charged for order {order['id']}, so there is nothing to refund."
    # Cancelled by the merchant: `refund ID --restock` gives its copies back, though there is no payment to refund
    merchant.refund(shopper.shop.orders, SimpleNamespace(id=order["id"], amount=None, restock=True, again=False))
    assert capsys.readouterr().out == f"Order {order['id']} cost nothing; its copies are back in stock now.\n"
    assert shopper.shop.orders.ledger.get(order["id"])["restocked"] == 1
