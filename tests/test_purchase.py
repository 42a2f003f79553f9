"""The whole purchase through the real app and the offline stand-in, amounts checked against the catalog."""

import re

import pytest

from shop import PUBLIC
from standin import ASYNC_FAIL, ASYNC_OK, tax
from tests.conftest import BASE, ROOT, edit_catalog, pay, wire
from webshop.catalog import format_money, load_catalog


def catalog():
    return load_catalog(ROOT / "catalog.json", PUBLIC)


def expected_amounts(cart, country, option=0):
    """Subtotal, shipping, tax and total as Checkout computes them, from the catalog alone."""
    cat = catalog()
    rate = tax.rate(country)
    lines = [cat.product(pid).price * qty for pid, qty in cart.items()]
    shipping = cat.shipping_options[option].amount
    amount_tax = sum(tax.tax_for(a, rate, cat.tax_behavior) for a in lines) + tax.tax_for(shipping, rate, cat.tax_behavior)
    subtotal = sum(lines)
    return subtotal, shipping, amount_tax, subtotal + shipping + amount_tax


def test_home_lists_every_product_with_price_and_forms(shopper):
    page = shopper.get("/")
    cat = catalog()
    for product in cat.products:
        assert product.name in page.text
        assert format_money(product.price, cat.currency) in page.text
        assert f'src="/static/{product.image}"' in page.text
    assert page.text.count('action="/cart"') == len(cat.products)
    assert page.text.count('action="/checkout"') == len(cat.products)
    assert "Offline test mode" in page.text
    assert "<script" not in page.text


@pytest.mark.parametrize("start", ["cart", "buy now"])
def test_prices_and_amounts_sent_with_the_form_are_ignored_for_the_catalogs(shopper, start):
    cat = catalog()
    book = cat.products[0]
    forged = {"price": "1", "unit_amount": "1", "amount": "1", "amount_total": "1", "currency": "jpy",
              "line_items[0][price_data][unit_amount]": "1"}
    if start == "cart":
        shopper.post("/cart", {"csrf_token": shopper.csrf(), "action": "add", "product_id": book.id, "quantity": "2",
                               **forged}, status=303)
        to_stripe = shopper.checkout(**forged)
    else:
        to_stripe = shopper.checkout(product_id=book.id, quantity="2", **forged)
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    assert [(i["product_id"], i["quantity"], i["unit_amount"]) for i in order["items"]] == [(book.id, 2, book.price)]
    assert order["amount_subtotal"] == 2 * book.price and order["currency"] == cat.currency
    session = shopper.standin.get(shopper.session_id(to_stripe))
    assert session["amount_subtotal"] == 2 * book.price and session["currency"] == cat.currency


def test_full_purchase(shopper):
    cat = catalog()
    a, b, c = (p.id for p in cat.products[:3])
    shopper.add(a)
    shopper.add(b, 2)
    shopper.add(c)
    shopper.set_quantity(b, 3)
    shopper.remove(c)
    cart_page = shopper.get("/cart")
    assert cat.product(c).name not in cart_page.text
    subtotal = cat.product(a).price + 3 * cat.product(b).price
    assert format_money(subtotal, cat.currency) in cart_page.text
    assert "Shipping and tax are calculated at checkout" in cart_page.text

    to_stripe = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=303)
    assert to_stripe.location.startswith(f"{BASE}/offline-checkout/cs_test_")
    session_id = shopper.session_id(to_stripe)
    order = shopper.shop.orders.ledger.by_session(session_id)
    assert order["status"] == "open" and order["amount_subtotal"] == subtotal
    assert [(i["product_id"], i["quantity"], i["unit_amount"]) for i in order["items"]] == [
        (a, 1, cat.product(a).price), (b, 3, cat.product(b).price)]

    paid = pay(shopper, to_stripe)
    assert paid.status_int == 303
    assert paid.location == f"{BASE}/success?session_id={session_id}"
    success = shopper.get(paid.location)
    text = success.text
    assert "Thank you" in text
    assert 'Cart <span class="count">(0)</span>' in text  # the header already shows the emptied cart
    subtotal, shipping, amount_tax, total = expected_amounts({a: 1, b: 3}, "DE")
    assert amount_tax > 0
    for amount in (subtotal, shipping, amount_tax, total):
        assert format_money(amount, cat.currency) in text
    assert re.search(r"Payment reference</dt><dd><code>pi_", text)
    assert "reader@example.com" in text
    assert shopper.cart_cookie() in (None, "")
    order = shopper.shop.orders.ledger.get(order["id"])
    assert order["status"] == "paid" and order["amount_total"] == total and order["fulfilled_at"]


@pytest.mark.parametrize("card, reason", [("4000000000000002", "generic_decline"),
                                          ("4000000000009995", "insufficient_funds")])
def test_declined_cards_leave_the_session_open(shopper, card, reason):
    shopper.add(catalog().products[0].id)
    to_stripe = shopper.checkout()
    declined = pay(shopper, to_stripe, card=card)
    assert declined.status_int == 402
    assert "declined" in declined.text.lower()
    session = shopper.shop.orders.stripe.v1.checkout.sessions.retrieve(shopper.session_id(to_stripe))
    assert session.status == "open" and session.payment_status == "unpaid"
    unpaid = shopper.get(f"/success?session_id={session.id}")
    assert "This checkout has not been paid yet" in unpaid.text and "Total due" in unpaid.text
    tax = unpaid.html.find("th", string="Tax").find_next_sibling("td").text
    assert tax == format_money(session.total_details.amount_tax, "usd") != "$0.00"  # from the address given
    assert shopper.shop.orders.ledger.by_session(session.id)["status"] == "open"
    # the shopper can still pay with a good card
    assert pay(shopper, to_stripe).status_int == 303


def test_cancel_returns_to_the_cart_intact(shopper):
    cat = catalog()
    shopper.add(cat.products[1].id, 2)
    before = shopper.cart_cookie()
    to_stripe = shopper.checkout()
    page = shopper.get(to_stripe.location)
    back = re.search(r'href="([^"]*/cart\?canceled=1)"', page.text).group(1)
    assert back == f"{BASE}/cart?canceled=1"
    cart_page = shopper.get("/cart?canceled=1")
    assert "You left the payment page without paying. Your cart is just as you left it." in cart_page.text
    assert cat.products[1].name in cart_page.text
    assert shopper.cart_cookie() == before


def test_buy_now_checks_out_one_product_and_leaves_the_cart_alone(shopper):
    cat = catalog()
    shopper.add(cat.products[0].id)
    before = shopper.cart_cookie()
    to_stripe = shopper.checkout(product_id=cat.products[4].id, quantity="1")
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    assert [i["product_id"] for i in order["items"]] == [cat.products[4].id]
    assert shopper.cart_cookie() == before


def test_the_buy_now_button_as_rendered_checks_out_the_quantity_above_it(shopper):
    cat = catalog()
    page = shopper.get("/")
    product = cat.products[2]
    (form,) = [f for f in page.forms.values() if f["product_id"].value == product.id]
    buy_now = form.html.find("button", formaction=True)
    assert buy_now.text.startswith("Buy now") and buy_now["formaction"] == "/checkout" and form.action == "/cart"
    form.action, form["quantity"] = buy_now["formaction"], "2"  # what the browser does for that button
    to_stripe = form.submit(status=303)
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(product.id, 2)]
    assert order["amount_subtotal"] in (None, 2 * product.price)
    assert not shopper.cart_cookie()  # "Buy now" leaves the cart alone


def test_empty_cart_checkout_goes_back_with_a_message(shopper):
    response = shopper.checkout()
    assert response.location.endswith("/cart?empty=1")
    page = response.follow().text
    assert page.count("Your cart is empty") == 1 and "nothing to check out yet" in page and "Browse the books" in page


@pytest.mark.parametrize("session_id", ["", "nope", "cs_test_", "cs_test_<script>", "cs_live_" + "a" * 300,
                                        "cs_test_doesnotexist123"])
def test_malformed_or_unknown_session_ids_are_404(shopper, session_id):
    page = shopper.get("/success", {"session_id": session_id}, status=404)
    assert "could not find that order" in page.text
    assert "<script>" not in page.text


def test_foreign_session_id_is_404_even_if_stripe_knows_it(shopper):
    """A session created by someone else on the same Stripe account is not this shop's order."""
    foreign = shopper.shop.orders.stripe.v1.checkout.sessions.create({
        "mode": "payment", "success_url": "https://elsewhere.example/ok", "cancel_url": "https://elsewhere.example/no",
        "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 100,
                                                      "product_data": {"name": "Other"}}}]})
    shopper.get("/success", {"session_id": foreign.id}, status=404)


def test_unpaid_session_does_not_say_thank_you(shopper):
    shopper.add(catalog().products[0].id)
    session_id = shopper.session_id(shopper.checkout())
    page = shopper.get("/success", {"session_id": session_id})
    assert "Thank you" not in page.text and "not been paid" in page.text
    assert shopper.cart_cookie()


def test_urls_come_from_base_url_not_the_host_header(shopper):
    shopper.add(catalog().products[0].id)
    token = shopper.csrf()
    cookie = "; ".join(f"{k}={v}" for k, v in shopper.cookies.items())
    response = shopper.post("/checkout", {"csrf_token": token}, status=303,
                            headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Cookie": cookie})
    assert response.location.startswith(BASE + "/")
    session = shopper.shop.orders.stripe.v1.checkout.sessions.retrieve(shopper.session_id(response))
    assert session.success_url.startswith(BASE + "/success?session_id=")
    assert session.cancel_url == BASE + "/cart?canceled=1"
    assert "evil" not in str(session)


def test_zero_decimal_currency_end_to_end(make_shopper, catalog_copy):
    """A JPY catalog: prices shown as ¥1,500 and sent to Stripe as 1500 (no cents)."""
    with edit_catalog(catalog_copy) as data:
        data["shop"]["currency"] = "jpy"
        data["products"][0]["price"] = 1500
        for option in data["shipping"]["options"]:
            option["amount"] = 800
    shopper = make_shopper(catalog=str(catalog_copy))
    product_id = data["products"][0]["id"]
    assert "¥1,500" in shopper.get("/").text
    shopper.add(product_id, 2)
    assert "¥3,000" in shopper.get("/cart").text
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id, address={"line1": "1-1 Chiyoda", "city": "Tokyo", "postal_code": "100-0001",
                                             "country": "US", "state": "CA"})
    session = shopper.shop.orders.stripe.v1.checkout.sessions.retrieve(session_id, {"expand": ["line_items"]})
    assert session.currency == "jpy" and session.amount_subtotal == 3000
    assert session.line_items.data[0].price.unit_amount == 1500
    page = shopper.get(f"/success?session_id={session_id}").text
    assert "¥3,000" in page and f"¥{session.amount_total:,}" in page


@pytest.mark.parametrize("currency, price, shown", [("cop", 4500000, "45,000.00 COP"), ("kwd", 4500, "4.500 KWD")])
def test_any_currency_the_catalog_takes_can_be_paid_offline(make_shopper, catalog_copy, currency, price, shown):
    """Checked by catalog.json's rules, so the offline stand-in must take it too (it once knew only 32)."""
    with edit_catalog(catalog_copy) as data:
        data["shop"]["currency"] = currency
        data["products"] = [dict(data["products"][0], price=price)]
        for option in data["shipping"]["options"]:
            option["amount"] = 1000
    shopper = make_shopper(catalog=str(catalog_copy))
    assert shown in shopper.get("/").text
    session_id = shopper.session_id(shopper.checkout(product_id=data["products"][0]["id"]))
    shopper.standin.pay(session_id)
    session = shopper.shop.orders.stripe.v1.checkout.sessions.retrieve(session_id)
    assert (session.currency, session.payment_status, session.amount_subtotal) == (currency, "paid", price)
    assert shown in shopper.get(f"/success?session_id={session_id}").text


def test_paying_empties_the_cart_only_when_the_cart_was_the_order(shopper):
    a, b, c = (p.id for p in catalog().products[:3])
    shopper.add(a, 2)
    shopper.add(b)
    cart = shopper.cart_cookie()
    buy_now = shopper.checkout(product_id=c, quantity="1")  # "Buy now": one book, the cart is another matter
    assert "Thank you" in shopper.get(pay(shopper, buy_now).location).text
    assert shopper.cart_cookie() == cart and "(3)" in shopper.get("/cart").text
    whole = shopper.checkout()
    confirmation = pay(shopper, whole).location
    assert "Thank you" in shopper.get(confirmation).text and not shopper.cart_cookie()
    shopper.add(c)
    shopper.get(confirmation)  # an old confirmation opened again keeps the cart made since
    assert shopper.cart_cookie() == f"{c}:1"


@pytest.mark.parametrize("card, said", [("4242424242424242", "A receipt goes to"), (ASYNC_OK, "we will email you")])
def test_the_confirmation_promises_an_email_only_to_an_address_the_shop_mails(shopper, card, said):
    """An address that is not plain ASCII gets no email (mail.py): the page must not say one is coming."""
    for email, promised in (("reader@example.com", True), ("jürgen@example.com", False)):
        session_id = shopper.session_id(shopper.checkout(product_id=catalog().products[0].id, quantity="1"))
        shopper.standin.pay(session_id, card=card, email=email)
        page = shopper.get(f"/success?session_id={session_id}")
        assert (said in page.text) is promised and email in page.text


def test_a_processing_payment_empties_the_cart_it_paid_for(shopper):
    a = catalog().products[0].id
    shopper.add(a, 2)
    confirmation = pay(shopper, shopper.checkout(), card=ASYNC_OK).location
    page = shopper.get(confirmation)
    assert "Your payment is processing" in page.text and "(0)" in page.html.find("span", class_="count").text
    assert "There is no need to pay again." in page.text
    assert "Your cart is empty" in shopper.get("/cart").text  # nothing left to pay a second time by mistake


def test_a_delayed_payment_that_fails_puts_its_books_back_in_the_emptied_cart(shopper):
    a, b = (p.id for p in catalog().products[:2])
    shopper.add(a, 2)
    shopper.add(b)
    cart = shopper.cart_cookie()
    confirmation = pay(shopper, shopper.checkout(), card=ASYNC_FAIL).location
    assert "(0)" in shopper.get(confirmation).html.find("span", class_="count").text  # processing: hidden
    shopper.standin.settle_async(confirmation.rsplit("=", 1)[1])
    wire(shopper).standin.deliver_pending()  # the failure's event reaches the shop
    failed = shopper.get(confirmation)
    assert "Your payment did not go through" in failed.text and "Its books are back in your cart." in failed.text
    assert failed.html.find("tr", class_="total").th.text == "Total"  # nothing is due: it was never charged
    assert shopper.cart_cookie() == cart and "(3)" in shopper.get("/cart").text
    shopper.add(a)
    assert "back in your cart" not in shopper.get(confirmation).text  # said once
    shopper.set_quantity(a, 0)
    shopper.set_quantity(b, 0)
    again = shopper.get(confirmation).text
    assert "books are back" not in again and not shopper.cart_cookie()  # and only once
    other = type(shopper)(shopper.app)  # another browser with the link learns of the failure, and gets no cart
    assert "back in your cart" not in other.get(confirmation).text and not other.cart_cookie()


def test_an_unpaid_checkout_without_stripe_tax_shows_its_tax_and_an_expired_one_no_total_due(make_shopper,
                                                                                               catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["tax"] = {"mode": "none"}
    shopper = make_shopper(catalog=str(catalog_copy))
    lapsed = shopper.session_id(shopper.checkout(product_id="walden"))
    shopper.shop.orders.stripe.v1.checkout.sessions.expire(lapsed)
    expired = shopper.get(f"/success?session_id={lapsed}").text
    assert "This checkout expired before it was paid" in expired and "Total due" not in expired
    session_id = shopper.session_id(shopper.checkout(product_id="walden"))
    page = shopper.get(f"/success?session_id={session_id}")
    assert page.html.find("th", string="Tax").find_next_sibling("td").text == "$0.00" and "Total due" in page.text


@pytest.mark.parametrize("behavior, tax_row, total", [("exclusive", "worked out when you pay", "Total before tax"),
                                                      ("inclusive", "included, worked out when you pay", "Total due")])
def test_an_unpaid_checkout_with_stripe_tax_shows_its_tax_as_the_session_will_work_it_out(make_shopper, catalog_copy,
                                                                                          behavior, tax_row, total):
    with edit_catalog(catalog_copy) as data:
        data["tax"] = {"mode": "automatic", "behavior": behavior}
    shopper = make_shopper(catalog=str(catalog_copy))
    session_id = shopper.session_id(shopper.checkout(product_id="walden"))
    with edit_catalog(catalog_copy) as data:  # the merchant changes the catalog: the session still works tax out
        data["tax"] = {"mode": "none"}
    page = shopper.get(f"/success?session_id={session_id}")
    assert page.html.find("th", string="Tax").find_next_sibling("td").text == tax_row
    assert page.html.find("tr", class_="total").th.text == total


@pytest.mark.parametrize("tax, hint", [
    ({"mode": "automatic", "behavior": "exclusive"}, "Shipping and tax are calculated at checkout"),
    ({"mode": "automatic", "behavior": "inclusive"}, "Prices include tax. Shipping is added at checkout"),
    ({"mode": "none"}, "Shipping is added at checkout")])
def test_the_cart_says_how_tax_is_charged_as_the_catalog_sets_it(make_shopper, catalog_copy, tax, hint):
    with edit_catalog(catalog_copy) as data:
        data["tax"] = tax
    shopper = make_shopper(catalog=str(catalog_copy))
    shopper.add("walden")
    (note,) = [p.text for p in shopper.get("/cart").html.find_all("p", class_="hint") if "at checkout" in p.text]
    assert note.startswith(hint)


def test_a_paid_order_with_tax_in_its_prices_shows_the_tax_as_included_and_a_total_that_adds_up(make_shopper,
                                                                                                 catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["tax"] = {"mode": "automatic", "behavior": "inclusive"}
    shopper = make_shopper(catalog=str(catalog_copy))
    shopper.add("walden")
    confirmation = shopper.get(pay(shopper, shopper.checkout()).location)
    tax = confirmation.html.find("th", string="Tax (included)").find_next_sibling("td").text
    order = shopper.shop.orders.ledger.get(shopper.shop.orders.ledger.list()[0]["id"])
    assert tax == format_money(order["amount_tax"], "usd") != "$0.00"
    assert order["amount_total"] == order["amount_subtotal"] + order["amount_shipping"]  # the tax is in the prices


def test_a_cart_paid_without_coming_back_from_stripe_is_empty_when_the_shopper_returns(shopper):
    """The tab closed after paying: the confirmation page that empties the cart was never seen, so the cart page
    does it, and says so, rather than inviting a second payment for the same books."""
    a, b = catalog().products[:2]
    shopper.add(a.id, 2)
    shopper.add(b.id)
    sid = shopper.session_id(shopper.checkout())
    shopper.standin.pay(sid)
    wire(shopper).standin.deliver_pending()  # the webhook fulfils the order
    assert "Cart <span class=\"count\">(0)</span>" in shopper.get("/").text
    created = shopper.standin.calls["POST /v1/checkout/sessions"]
    again = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=303)  # no second payment page
    assert again.location == "/cart" and shopper.standin.calls["POST /v1/checkout/sessions"] == created
    page = shopper.get("/cart")
    assert f"You have paid for 2 × {a.name}, 1 × {b.name}, so they are no longer in your cart." in page.text
    assert page.html.find("a", string="See your order")["href"] == f"/success?session_id={sid}"
    assert not shopper.cart_cookie() and "Update" not in page.text
    assert "You have paid" not in shopper.get("/cart").text  # said once
    shopper.add(a.id)  # the same book again, on purpose: a new cart, kept
    assert shopper.cart_cookie() == f"{a.id}:1" and "Update" in shopper.get("/cart").text


def test_a_cart_changed_after_its_checkout_loses_only_what_was_paid_and_another_browsers_nothing(make_shopper):
    shopper, other = make_shopper(), make_shopper()
    a, b = catalog().products[:2]
    shopper.add(a.id)
    sid = shopper.session_id(shopper.checkout())
    marked = shopper.cookies["cart"]
    shopper.add(b.id)  # in another tab, before paying for the first
    shopper.standin.pay(sid)
    wire(shopper).standin.deliver_pending()
    assert "You have paid for" in shopper.get("/cart").text and shopper.cart_cookie() == f"{b.id}:1"
    other.add(b.id)
    other.set_cookie("cart", marked)  # another browser's marked cookie: that order is not this browser's
    page = other.get("/cart")
    assert "You have paid" not in page.text and page.html.find("th", string=a.name) and "Update" in page.text


def test_a_cart_whose_bank_payment_is_processing_is_empty_when_the_shopper_returns(shopper):
    a = catalog().products[0]
    shopper.add(a.id)
    to_stripe = shopper.checkout()
    assert pay(shopper, to_stripe, card=ASYNC_OK).status_int == 303  # not followed back to the shop
    wire(shopper).standin.deliver_pending()
    page = shopper.get("/cart")
    assert f"Your payment for 1 × {a.name} is processing, so it is not in your cart now" in page.text
    assert "Update" not in page.text and shopper.cart_cookie() == f"{a.id}:1"  # hidden, kept in case it fails


def test_checkout_from_the_cart_tab_just_after_paying_in_stripes_tab_opens_no_second_payment(shopper):
    """The webhook has not come yet: the shop learns of the payment when it expires that checkout, and stops."""
    a = catalog().products[0]
    shopper.add(a.id)
    sid = shopper.session_id(shopper.checkout())
    shopper.standin.pay(sid)  # in Stripe's tab; no webhook yet
    created = shopper.standin.calls["POST /v1/checkout/sessions"]
    again = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=303)
    assert again.location == "/cart" and shopper.standin.calls["POST /v1/checkout/sessions"] == created
    page = shopper.get("/cart")
    assert f"You have paid for 1 × {a.name}, so it is no longer in your cart." in page.text


def test_a_failed_bank_payment_whose_shopper_never_came_back_leaves_the_cart_as_it_was(shopper):
    a = catalog().products[0]
    shopper.add(a.id, 2)
    cart = shopper.cart_cookie()
    to_stripe = shopper.checkout()
    assert pay(shopper, to_stripe, card=ASYNC_FAIL).status_int == 303  # not followed back to the shop
    wire(shopper).standin.deliver_pending()
    page = shopper.get("/cart")
    assert f"Your payment for 2 × {a.name} is processing" in page.text and "Update" not in page.text
    shopper.standin.settle_async(shopper.session_id(to_stripe))
    shopper.standin.deliver_pending()  # it failed
    page = shopper.get("/cart")
    assert "processing" not in page.text and "Update" in page.text and shopper.cart_cookie() == cart


def test_an_old_confirmation_opened_again_leaves_a_new_cart_of_the_same_books_alone(shopper):
    a = catalog().products[0]
    shopper.add(a.id)
    confirmation = pay(shopper, shopper.checkout()).location
    shopper.get(confirmation)
    assert not shopper.cart_cookie()
    shopper.add(a.id)  # the same book again, for a friend
    shopper.get(confirmation)  # the old receipt, from the history
    assert shopper.cart_cookie() == f"{a.id}:1" and 'class="count">(1)<' in shopper.get("/").text


def test_a_stale_cart_page_of_a_cart_paid_in_a_closed_tab_says_it_was_paid_when_used(shopper):
    a, b = catalog().products[:2]
    shopper.add(a.id, 2)
    shopper.add(b.id)
    sid = shopper.session_id(shopper.checkout())
    shopper.standin.pay(sid)
    wire(shopper).standin.deliver_pending()
    token = shopper.csrf()
    for fields in ({"action": "set", "product_id": a.id, "quantity": "3"}, {"action": "remove", "product_id": b.id}):
        assert shopper.post("/cart", {"csrf_token": token, **fields}, status=303).location == "/cart"
    page = shopper.get("/cart")
    assert f"You have paid for 2 × {a.name}, 1 × {b.name}, so they are no longer in your cart." in page.text
    assert "Your cart is just as you left it" not in shopper.get("/cart?canceled=1").text  # empty now


def count(page):
    return page.html.find("span", class_="count").text


def test_back_then_update_with_no_change_then_continue_your_payment_empties_the_paid_cart(shopper):
    a = catalog().products[0]
    shopper.add(a.id)
    to_stripe = shopper.checkout()
    shopper.set_quantity(a.id, 2)
    shopper.set_quantity(a.id, 1)  # Back, a change undone: still the cart that went to checkout
    page = shopper.get("/cart")
    assert "You have a checkout that is still open." in page.text and "not your cart" not in page.text
    confirmation = shopper.get(pay(shopper, to_stripe).location)
    assert count(confirmation) == "(0)" and not shopper.cart_cookie()


def test_a_buy_now_of_the_carts_own_books_is_not_offered_as_the_carts_checkout(shopper):
    a = catalog().products[0]
    shopper.add(a.id)
    shopper.checkout(product_id=a.id, quantity="1")
    notice = shopper.get("/cart").html.find("a", string="Continue your payment").parent.text
    assert "which is not your cart as it is now" in notice  # paying it leaves the cart as it is


def test_a_buy_now_confirmation_leaves_a_cart_hidden_by_another_processing_payment(shopper):
    a, c = catalog().products[0], catalog().products[2]
    shopper.add(a.id, 2)
    to_stripe = shopper.checkout()
    pay(shopper, to_stripe, card=ASYNC_FAIL)
    wire(shopper).standin.deliver_pending()
    buy_now = shopper.checkout(product_id=c.id, quantity="1")
    assert "Thank you" in shopper.get(pay(shopper, buy_now).location).text
    shopper.standin.settle_async(shopper.session_id(to_stripe))
    shopper.standin.deliver_pending()  # the cart's bank payment failed: its books are in it again
    assert shopper.cart_cookie() == f"{a.id}:2"


def test_an_add_after_paying_in_a_closed_tab_first_says_the_cart_was_paid(shopper):
    a, c = catalog().products[0], catalog().products[2]
    shopper.add(a.id)
    shopper.standin.pay(shopper.session_id(shopper.checkout()))
    wire(shopper).standin.deliver_pending()
    page = shopper.add(c.id).follow()  # a new cart, and the page says where the other books went
    assert f"You have paid for 1 × {a.name}, so it is no longer in your cart." in page.text
    assert shopper.cart_cookie() == f"{c.id}:1" and page.html.find("th", string=c.name)
    assert "You have paid" not in shopper.get("/cart").text  # said once
    forged = shopper.get(f"/cart?paid={'ord_' + '0' * 24}")  # an order that is not this browser's: nothing said
    assert "You have paid" not in forged.text


def test_the_browser_id_is_renewed_with_the_cart_so_it_outlives_the_orders_the_cart_names(shopper):
    shopper.get("/")
    sid = shopper.cookies["sid"]
    written = shopper.add(catalog().products[0].id).headers.getall("Set-Cookie")
    assert any(c.startswith(f"sid={sid};") and "Max-Age=2592000" in c for c in written)


def test_an_order_that_the_dearest_shipping_would_take_over_stripes_largest_amount_is_refused(make_shopper,
                                                                                             catalog_copy):
    with edit_catalog(catalog_copy) as data:
        fees = sorted(o["amount"] for o in data["shipping"]["options"])
        data["products"][0]["price"] = 99_999_999 - fees[0]  # fine with the cheapest shipping, too much with another
    shopper = make_shopper(catalog=str(catalog_copy))
    shopper.add(data["products"][0]["id"])
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=409)
    assert "A payment can be at most $999,999.99" in page.text
    assert shopper.standin.calls["POST /v1/checkout/sessions"] == 0


def test_an_order_over_the_largest_amount_stripe_takes_is_refused_before_stripe_is_asked(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["price"] = 60_000_000  # $600,000.00: two come to more than Stripe's $999,999.99
    shopper = make_shopper(catalog=str(catalog_copy))
    shopper.add(data["products"][0]["id"], 2)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=409)
    assert "A payment can be at most $999,999.99, and this order comes to more." in page.text
    assert shopper.standin.calls["POST /v1/checkout/sessions"] == 0 and shopper.cart_cookie()
