"""The cookie cart: ids and quantities only, re-validated against the catalog on every read."""

import pytest

from shop import PUBLIC
from tests.conftest import edit_catalog
from webshop import storefront as carts
from webshop.catalog import load_catalog
from webshop.settings import ROOT


@pytest.fixture(scope="module")
def cat():
    return load_catalog(ROOT / "catalog.json", PUBLIC)


def test_cookie_holds_only_ids_and_quantities(shopper, cat):
    product = cat.products[0]
    shopper.add(product.id, 2)
    assert shopper.cart_cookie() == f"{product.id}:2"
    assert str(product.price) not in shopper.cart_cookie()


@pytest.mark.parametrize("raw, expected", [
    ("walden:2", {"walden": 2}),
    ("walden:0", {}),  # none of it
    ("walden:0.walden:2", {"walden": 2}),
    ("walden:500", {"walden": 99}),
    ("walden:2.walden:3", {"walden": 5}),
    ("no-such-book:1.walden:1", {"walden": 1}),
    ("walden:-1", {}),
    ("walden:1:1299", {}),
    ("<script>:1", {}),
    ("x" * 5000, {}),
    ("", {}),
])
def test_parse_drops_unknown_and_clamps(cat, raw, expected):
    assert carts.parse_cart(raw, cat) == expected


def test_tampered_cookie_cannot_change_a_price(shopper, cat):
    product = cat.products[0]
    shopper.set_cookie("cart", f"{product.id}:1:1")  # an attempt to smuggle a price in is not a cart
    assert "Your cart is empty" in shopper.get("/cart").text
    assert shopper.checkout().location.endswith("/cart?empty=1")
    shopper.set_cookie("cart", f"{product.id}:2")
    to_stripe = shopper.checkout()
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    assert order["amount_subtotal"] == 2 * product.price


def test_posted_price_fields_are_ignored(shopper, cat):
    product = cat.products[2]
    response = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": product.id, "quantity": "1",
                                          "price": "1", "unit_amount": "1", "currency": "jpy",
                                          "success_url": "https://evil.example/"}, status=303)
    session = shopper.shop.orders.stripe.v1.checkout.sessions.retrieve(shopper.session_id(response),
                                                              {"expand": ["line_items"]})
    assert session.amount_subtotal == product.price and session.currency == cat.currency
    assert session.line_items.data[0].price.unit_amount == product.price
    assert "evil" not in session.success_url


@pytest.mark.parametrize("fields, message", [
    ({"action": "add", "product_id": "no-such-book"}, "not in the catalog"),
    ({"action": "add", "product_id": "walden", "quantity": "abc"}, "whole number"),
    ({"action": "add", "product_id": "walden", "quantity": "100"}, "whole number"),
    ({"action": "add", "product_id": "walden", "quantity": "-3"}, "whole number"),
    ({"action": "explode", "product_id": "walden"}, "Unknown cart action"),
    ({"action": "add"}, "not in the catalog"),
])
def test_bad_cart_forms_are_400_with_a_message(shopper, fields, message):
    page = shopper.post("/cart", {"csrf_token": shopper.csrf(), **fields}, status=400)
    assert message in page.text


def test_set_quantity_zero_removes_the_line(shopper, cat):
    shopper.add(cat.products[0].id, 3)
    shopper.add(cat.products[1].id, 1)
    shopper.set_quantity(cat.products[0].id, 0)
    assert shopper.cart_cookie() == f"{cat.products[1].id}:1"
    shopper.remove(cat.products[1].id)
    assert not shopper.cart_cookie()
    assert "Your cart is empty" in shopper.get("/cart").text


def test_quantities_add_up_and_stop_at_99(shopper, cat):
    pid = cat.products[0].id
    assert "Added" in shopper.add(pid, 60).follow().text
    held = shopper.add(pid, 60).follow()  # the shopper is told, not left to count
    assert shopper.cart_cookie() == f"{pid}:99"
    assert f"Your cart now holds 99 of “{cat.products[0].name}”: that is as many as you can buy." in held.text


def test_the_largest_cart_fits_its_cookie(make_shopper, catalog_copy):
    """50 products with 64-character ids, 99 of each: every line is kept (a cookie a browser keeps whole)."""
    with edit_catalog(catalog_copy) as data:
        first = data["products"][0]
        ids = [f"{i:02d}-" + "x" * 61 for i in range(carts.MAX_LINES + 1)]
        data["products"] = [dict(first, id=pid, name=f"Book {i}") for i, pid in enumerate(ids)]
    shopper = make_shopper(catalog=str(catalog_copy))
    for pid in ids[:carts.MAX_LINES]:
        shopper.add(pid, carts.MAX_QUANTITY)
    assert shopper.get("/cart").text.count('name="action" value="remove"') == carts.MAX_LINES
    refused = shopper.post("/cart", {"csrf_token": shopper.csrf(), "action": "add", "product_id": ids[-1]},
                           status=400)
    assert f"at most {carts.MAX_LINES} different products" in refused.text
    shopper.checkout()  # the cookie now also names the order it went to checkout as
    assert len(shopper.cookies["cart"]) == carts.MAX_COOKIE <= 4000
    assert len(carts.parse_cart(shopper.cookies["cart"], shopper.shop.catalog())) == carts.MAX_LINES
    assert shopper.get("/cart").text.count('name="action" value="remove"') == carts.MAX_LINES


def test_redirects_stay_on_the_origin_and_never_name_the_host_the_request_names(shopper, cat):
    token = shopper.csrf()

    def post(path, **fields):  # the browser's own cookies, sent to a Host that is not the shop's
        cookies = "; ".join(f"{k}={v}" for k, v in shopper.cookies.items())
        headers = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Cookie": cookies}
        return shopper.post(path, {"csrf_token": token, **fields}, headers=headers, status=303)
    added = post("/cart", action="add", product_id=cat.products[0].id)
    assert added.headers["Location"] == f"/cart?added={cat.products[0].id}"
    assert any(c.startswith("cart=") for c in added.headers.getall("Set-Cookie"))  # the redirect carries the cart
    assert post("/cart", action="remove", product_id=cat.products[0].id).headers["Location"] == "/cart"
    assert post("/checkout").headers["Location"] == "/cart?empty=1"


def test_the_added_notice_names_only_what_the_cart_holds(shopper, cat):
    first, second = cat.products[0], cat.products[1]
    shopper.add(first.id)
    assert f"Added “{first.name}” to your cart." in shopper.get(f"/cart?added={first.id}").text
    page = shopper.get(f"/cart?added={second.id}").text  # a link made up to claim another book was added
    assert "Added" not in page


def test_the_empty_checkout_notice_is_not_shown_over_a_cart_that_holds_books(shopper):
    empty = shopper.get(shopper.checkout().location)  # Checkout pressed on an empty cart: the notice says why
    assert "Your cart is empty, so there is nothing to check out yet." in empty.text
    shopper.add(shopper.shop.catalog().products[0].id)
    assert "Your cart is empty" not in shopper.get("/cart?empty=1").text
