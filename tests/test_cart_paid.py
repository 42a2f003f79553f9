"""The cart and the checkout it went to: what the cart cookie's mark of that order does when the catalog changes,
a bank payment is processing, or the cart is changed and paid in another tab."""

import re
import sqlite3
import time

import pytest

from shop import CLOSERS

from standin import ASYNC_FAIL, ASYNC_OK, PayError
from webshop import payments
from webshop.ledger import iso_utc
from tests.conftest import edit_catalog, pay, same_browser, settled, slow_to_expire, together, wire


def count(page):
    return page.html.find("span", class_="count").text


def two_books(make_shopper, catalog_copy):
    """A shopper on a copy of the catalog with two books in the cart: (shopper, first book, second book)."""
    shopper = make_shopper(catalog=str(catalog_copy))
    a, b = shopper.shop.catalog().products[:2]
    shopper.add(a.id)
    shopper.add(b.id)
    return shopper, a, b


def reprice(catalog_copy, product, by=300):
    """The merchant changes a book's price."""
    with edit_catalog(catalog_copy) as data:
        next(p for p in data["products"] if p["id"] == product.id)["price"] = product.price + by


def repriced_while_waiting(shopper, catalog_copy, product, monkeypatch, then=lambda: None):
    """The next click waits on Stripe while the merchant reprices `product` and another request loads the edit."""
    create = payments.create_session

    def meanwhile(*args):
        reprice(catalog_copy, product)
        shopper.shop.catalog()
        then()
        return create(*args)
    monkeypatch.setattr(payments, "create_session", meanwhile)


def bought_now(shopper, product, browsers):
    """The sessions of so many new browsers that each clicked "Buy now" for the product, and left them open."""
    return [o.session_id(o.checkout(product_id=product.id)) for o in (type(shopper)(shopper.app)
                                                                      for _ in range(browsers))]


def withdraw(catalog_copy, product_id):
    """The merchant takes a book out of the catalog."""
    with edit_catalog(catalog_copy) as data:
        data["products"] = [p for p in data["products"] if p["id"] != product_id]


def test_paid_cart_is_emptied_even_when_one_of_its_books_left_the_catalog_before_payment(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    to_stripe = shopper.checkout()
    withdraw(catalog_copy, b.id)  # while the shopper is on Stripe's page
    confirmation = shopper.get(pay(shopper, to_stripe).location)
    assert "Thank you" in confirmation.text
    # the cart that went to checkout was paid: it must not still offer a:1 for a second payment
    assert count(confirmation) == "(0)", count(confirmation)
    assert not shopper.cart_cookie(), shopper.cart_cookie()


def test_a_cart_paid_in_a_closed_tab_is_still_known_as_paid_after_one_of_its_books_is_withdrawn(
        make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    shopper.standin.pay(shopper.session_id(shopper.checkout()))
    wire(shopper).standin.deliver_pending()
    withdraw(catalog_copy, b.id)
    page = shopper.get("/cart")
    assert "You have paid for" in page.text and count(page) == "(0)", count(page)


def test_a_processing_bank_payment_hides_its_cart_even_when_one_of_its_books_is_withdrawn(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    shopper.standin.pay(shopper.session_id(shopper.checkout()), card=ASYNC_OK)
    wire(shopper).standin.deliver_pending()  # awaiting_payment
    withdraw(catalog_copy, b.id)
    page = shopper.get("/cart")
    assert "is processing" in page.text and count(page) == "(0)", count(page)
    created = shopper.standin.calls["POST /v1/checkout/sessions"]
    assert shopper.checkout().location == "/cart"  # not a second payment page for a
    assert shopper.standin.calls["POST /v1/checkout/sessions"] == created


def bought(shopper, to_stripe):
    """{product id: quantity} of the order a checkout answer sent the shopper to pay."""
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    return {i["product_id"]: i["quantity"] for i in order["items"]}


def test_a_cart_changed_while_stripes_page_is_open_keeps_only_what_was_not_paid_for(shopper):
    """Back, one more copy and another book, then the open checkout for the one copy is paid: the cart keeps the
    second copy and the other book, never the copy just paid for."""
    a, b = shopper.shop.catalog().products[:2]
    shopper.add(a.id)
    to_stripe = shopper.checkout()
    shopper.set_quantity(a.id, 2)
    shopper.add(b.id)
    notice = shopper.get("/cart").html.find("a", string="Continue your payment").parent.text
    assert "which is not your cart as it is now" in notice
    confirmation = shopper.get(pay(shopper, to_stripe).location)
    assert "Thank you" in confirmation.text and count(confirmation) == "(2)", count(confirmation)
    assert bought(shopper, shopper.checkout()) == {a.id: 1, b.id: 1}


def test_a_cart_changed_and_paid_in_a_closed_tab_comes_back_without_the_books_paid_for(shopper):
    a, b = shopper.shop.catalog().products[:2]
    shopper.add(a.id)
    shopper.standin.pay(shopper.session_id(shopper.checkout()))  # and the tab closed: no confirmation page
    shopper.add(b.id)  # in the cart's tab, before the webhook
    wire(shopper).standin.deliver_pending()
    page = shopper.get("/cart")
    assert f"You have paid for 1 × {a.name}" in page.text and count(page) == "(1)", count(page)
    assert [row.th.text for row in page.html.select("tbody tr")] == [b.name]
    assert bought(shopper, shopper.checkout()) == {b.id: 1}


def test_adding_the_same_book_while_its_bank_payment_processes_starts_a_cart_that_shows(shopper):
    a = shopper.shop.catalog().products[0]
    shopper.add(a.id)
    shopper.standin.pay(shopper.session_id(shopper.checkout()), card=ASYNC_OK)
    wire(shopper).standin.deliver_pending()
    page = shopper.add(a.id).follow()  # the shopper wants another copy
    assert count(page) == "(1)", count(page)


def test_a_restored_cart_of_only_withdrawn_books_counts_zero_in_the_header(make_shopper, catalog_copy):
    shopper = make_shopper(catalog=str(catalog_copy))
    a = shopper.shop.catalog().products[0]
    shopper.add(a.id)
    to_stripe = shopper.checkout()
    sid = shopper.session_id(to_stripe)
    confirmation = shopper.get(pay(shopper, to_stripe, card=ASYNC_FAIL).location)
    assert count(confirmation) == "(0)"
    shopper.standin.settle_async(sid)
    wire(shopper).standin.deliver_pending()
    withdraw(catalog_copy, a.id)
    page = shopper.get(f"/success?session_id={sid}")
    assert "did not go through" in page.text
    assert count(page) == "(0)", count(page)


def test_checkout_just_after_paying_in_stripes_tab_goes_to_the_notice_even_after_a_book_is_withdrawn(
        make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    to_stripe = shopper.checkout()
    shopper.standin.pay(shopper.session_id(to_stripe))  # paid in Stripe's tab, no webhook yet
    withdraw(catalog_copy, b.id)
    again = shopper.checkout()  # from the cart's tab
    assert again.location == "/cart", again.location  # not a second payment page for a


@pytest.mark.parametrize("part, said", [(1, "refunded since"), (0.5, "partly refunded since")])
def test_the_cart_says_when_the_order_paid_in_a_closed_tab_was_refunded_since(shopper, part, said):
    a = shopper.shop.catalog().products[0]
    shopper.add(a.id)
    sid = shopper.session_id(shopper.checkout())
    shopper.standin.pay(sid)
    wire(shopper).standin.deliver_pending()
    order = shopper.shop.orders.ledger.by_session(sid)
    total = order["amount_total"]
    shopper.shop.orders.ledger.apply_refund(order["id"], int(total * part), total, "test")
    assert f"You have paid for 1 × {a.name} ({said})" in shopper.get("/cart").text


def test_a_cart_paid_meanwhile_is_not_called_just_as_you_left_it_on_cancel(shopper):
    a, b = shopper.shop.catalog().products[:2]
    shopper.add(a.id)
    shopper.standin.pay(shopper.session_id(shopper.checkout()))
    shopper.add(b.id)
    wire(shopper).standin.deliver_pending()
    page = shopper.get("/cart?canceled=1")  # the Cancel of another tab's payment page, say
    assert "You have paid for" in page.text and "just as you left it" not in page.text


def test_checkout_on_a_cart_page_left_open_after_the_cart_was_paid_in_another_tab_says_it_was_paid(shopper):
    shopper.add(shopper.shop.catalog().products[0].id)
    stale = shopper.get("/cart")  # this tab keeps the cart page
    paid_in_another_tab = pay(shopper, shopper.checkout())
    wire(shopper).get(paid_in_another_tab.location)  # the confirmation empties the cart
    checkout = next(f for f in stale.forms.values() if f.action == "/checkout")
    back = checkout.submit(status=303)
    assert "/cart?empty=1&paid=ord_" in back.location
    assert "You have paid for" in back.follow().text
    with shopper.shop.orders.ledger.db.tx() as c:  # an order paid an hour ago is no news: the cart is just empty
        c.execute("UPDATE orders SET fulfilled_at = ?", (iso_utc(time.time() - 3600),))
    assert checkout.submit(status=303).location.endswith("/cart?empty=1")


def test_a_book_withdrawn_from_the_cart_is_said_once_and_its_open_checkout_can_no_longer_be_paid(
        make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    to_stripe = shopper.checkout()  # and Back: the cart page offers to continue that payment
    other = type(shopper)(shopper.app)
    untouched = other.session_id(other.checkout(product_id=a.id))  # "Buy now" of the book still sold
    withdraw(catalog_copy, b.id)
    shopper.edited()
    page = shopper.get("/cart")
    assert f"Sorry, {b.name} is no longer sold, so it is not in your cart." in page.text
    assert "Continue your payment" not in page.text and count(page) == "(1)"
    assert "no longer sold" not in shopper.get("/cart").text  # said once
    assert shopper.standin.get(shopper.session_id(to_stripe))["status"] == "expired"  # at Stripe: never paid for b
    with pytest.raises(PayError):
        shopper.standin.pay(shopper.session_id(to_stripe))
    assert shopper.standin.get(untouched)["status"] == "open"
    assert shopper.standin.get(shopper.session_id(shopper.checkout()))["amount_subtotal"] == a.price


@pytest.mark.parametrize("change", [{"action": "remove"}, {"action": "set", "quantity": "3"}])
def test_a_change_to_a_book_withdrawn_since_the_cart_page_was_loaded_goes_back_to_the_cart(
        make_shopper, catalog_copy, change):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    token = shopper.csrf()
    withdraw(catalog_copy, b.id)
    shopper.edited()
    page = shopper.post("/cart", {"csrf_token": token, "product_id": b.id, **change}, status=303).follow()
    assert f"Sorry, {b.name} is no longer sold" in page.text and count(page) == "(1)"
    shopper.post("/cart", {"csrf_token": token, "product_id": "no-such-book", **change}, status=400)  # never sold


def test_a_book_repriced_while_its_checkout_is_open_is_never_paid_at_the_old_price(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    old = shopper.session_id(shopper.checkout())
    reprice(catalog_copy, b)
    shopper.edited()
    page = shopper.get("/cart")
    assert "Continue your payment" not in page.text and count(page) == "(2)"
    with pytest.raises(PayError):
        shopper.standin.pay(old)
    assert shopper.shop.orders.ledger.by_session(old)["status"] == "expired"
    new = shopper.standin.get(shopper.session_id(shopper.checkout()))
    assert new["amount_subtotal"] == a.price + b.price + 300


def test_back_from_a_checkout_an_edit_closed_the_cart_says_why_not_that_the_shopper_left(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    shopper.checkout()
    reprice(catalog_copy, b)
    shopper.edited()
    page = shopper.get("/cart?canceled=1")  # "Back" on Stripe's page, which says only that the checkout expired
    assert "The shop changed a price" in page.text and "You left the payment page" not in page.text
    shopper.checkout()  # at the new price, and left without paying: the usual words
    page = shopper.get("/cart?canceled=1")
    assert "You left the payment page" in page.text and "The shop changed a price" not in page.text


def test_a_click_waiting_on_stripe_when_its_book_is_repriced_goes_back_to_the_cart(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    repriced_while_waiting(shopper, catalog_copy, b, monkeypatch)
    answer = shopper.checkout()
    assert answer.status_int == 303 and answer.location.endswith("/cart")
    assert "canceled before you paid. Please check and try again" in shopper.get(answer.location).text
    assert "canceled before you paid" not in shopper.get("/cart").text  # said once
    made = shopper.shop.orders.stripe.v1.checkout.sessions.list({"limit": 10}).data
    assert [s.status for s in made] == ["expired"]


def test_a_click_whose_repriced_checkout_stripe_cannot_close_is_not_sent_to_pay_it(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    repriced_while_waiting(shopper, catalog_copy, b, monkeypatch, then=lambda: shopper.standin.faults.add(
        "POST /v1/checkout/sessions/{id}/expire", "500", times=100))  # and then Stripe fails
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    assert "not answering" in page.text
    settled(shopper.shop)
    cart = shopper.get("/cart")
    assert "Continue your payment" not in cart.text and count(cart) == "(2)"  # the old price is never offered


def test_an_edit_loaded_while_the_closer_is_busy_with_the_last_one_is_closed_for_too(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    first, second = (type(shopper)(shopper.app) for _ in range(2))
    for_b, for_a = first.session_id(first.checkout(product_id=b.id)), second.session_id(second.checkout(product_id=a.id))
    release, _, _ = slow_to_expire(shopper.shop, monkeypatch)
    reprice(catalog_copy, b)
    shopper.get("/")  # the closer starts on b's checkout, and Stripe is slow
    reprice(catalog_copy, a)
    shopper.get("/")  # the next edit is loaded while it is still at work
    release.set()
    settled(shopper.shop)
    assert [shopper.standin.get(s)["status"] for s in (for_b, for_a)] == ["expired", "expired"]


def test_an_edit_first_looked_at_while_the_database_was_away_is_worked_through_at_the_next_look(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    old = shopper.session_id(shopper.checkout())
    reprice(catalog_copy, b)
    ledger = shopper.shop.orders.ledger
    with monkeypatch.context() as away:
        down = sqlite3.OperationalError("unable to open database file")
        away.setattr(ledger, "checkpoint", lambda name: (_ for _ in ()).throw(down))
        with pytest.raises(sqlite3.OperationalError):
            shopper.shop.catalog()  # the watcher's look, say: it logs the error and looks again a second later
    shopper.shop.catalog()
    settled(shopper.shop)
    assert shopper.standin.get(old)["status"] == "expired"


def test_a_closer_that_found_stripe_down_tries_again_on_a_page_a_minute_later(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    other = type(shopper)(shopper.app)
    session_id = other.session_id(other.checkout(product_id=b.id))
    expire = "POST /v1/checkout/sessions/{id}/expire"
    shopper.standin.faults.add(expire, "500", times=3)  # the call and the SDK's two retries
    reprice(catalog_copy, b)
    shopper.edited()
    assert shopper.standin.get(session_id)["status"] == "open"
    shopper.edited()  # within the minute: not asked again
    assert shopper.standin.calls[expire] == 3
    shopper.shop.retry_closing = time.monotonic()  # a minute on
    shopper.edited()
    assert shopper.standin.get(session_id)["status"] == "expired"


def test_one_closer_per_process_asks_stripe_once_per_checkout_however_often_it_is_asked(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    sessions = bought_now(shopper, b, 3)
    release, _, _ = slow_to_expire(shopper.shop, monkeypatch)
    reprice(catalog_copy, b)
    shopper.shop.catalog()
    for _ in range(3):  # clicks under way when the edit landed each ask again
        shopper.shop.close_later()
    before = shopper.standin.calls["POST /v1/checkout/sessions/{id}/expire"]
    release.set()
    settled(shopper.shop)
    assert shopper.standin.calls["POST /v1/checkout/sessions/{id}/expire"] - before == len(sessions)
    assert [shopper.standin.get(s)["status"] for s in sessions] == ["expired"] * 3


def test_a_withdrawn_book_no_order_holds_is_named_by_the_shop_that_saw_it_go(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    withdraw(catalog_copy, b.id)
    assert f"Sorry, {b.name} is no longer sold, so it is not in your cart." in shopper.get("/cart").text
    started_after = make_shopper(catalog=str(catalog_copy))  # never saw the book, and no order holds it
    started_after.set_cookie("cart", f"{a.id}:1.{b.id}:1")
    assert "Sorry, one of your books is no longer sold" in started_after.get("/cart").text


def test_a_failed_bank_payment_shows_its_hidden_books_again_beside_what_was_added_meanwhile(shopper):
    a, b = shopper.shop.catalog().products[:2]
    shopper.add(a.id)
    to_stripe = shopper.checkout()
    sid = shopper.session_id(to_stripe)
    shopper.add(b.id)  # in the cart's tab, while Stripe's page is open
    processing = shopper.get(pay(shopper, to_stripe, card=ASYNC_FAIL).location)
    assert count(processing) == "(1)"  # a is being paid for: only b is left
    shopper.standin.settle_async(sid)
    wire(shopper).standin.deliver_pending()
    failed = shopper.get(f"/success?session_id={sid}")
    assert "Its books are back in your cart." in failed.text and count(failed) == "(2)", count(failed)
    assert "back in your cart" not in shopper.get(f"/success?session_id={sid}").text  # once


def failed_bank_payment(shopper, quantity=1):
    """The cart's checkout paid by a bank payment that fails, once the shopper has seen it processing: its session."""
    shopper.add(shopper.shop.catalog().products[0].id, quantity=quantity)
    to_stripe = shopper.checkout()
    sid = shopper.session_id(to_stripe)
    shopper.get(pay(shopper, to_stripe, card=ASYNC_FAIL).location)
    they = "they are" if quantity > 1 else "it is"
    assert f"is processing, so {they} not in your cart now" in shopper.get("/cart").text
    shopper.standin.settle_async(sid)
    wire(shopper).standin.deliver_pending()
    return sid


def test_a_failed_bank_payment_is_said_once_on_the_cart_page_when_its_confirmation_is_not_seen_again(shopper):
    a = shopper.shop.catalog().products[0]
    sid = failed_bank_payment(shopper, quantity=2)
    page = shopper.get("/cart")
    assert (f"Your payment for 2 × {a.name} did not go through, so nothing was charged and they are back in your "
            "cart.") in page.text and count(page) == "(2)"
    again = shopper.get("/cart")
    assert "did not go through" not in again.text and count(again) == "(2)"
    shopper.post("/cart", {"csrf_token": shopper.csrf(), "action": "remove", "product_id": a.id}, status=303)
    confirmation = shopper.get(f"/success?session_id={sid}")  # from the failure's email, say: said already
    assert "back in your cart" not in confirmation.text and count(shopper.get("/cart")) == "(0)"


def test_a_failed_bank_payment_is_said_once_however_many_of_its_pages_are_asked_for_at_once(shopper):
    sid = failed_bank_payment(shopper)
    browser = same_browser(shopper)
    pages = together(8, lambda i: browser().get("/cart" if i % 2 else f"/success?session_id={sid}"))
    assert sum("back in your cart" in p.text for p in pages) == 1


def test_a_failed_bank_payment_said_on_its_confirmation_is_not_said_again_on_the_cart_page(shopper):
    sid = failed_bank_payment(shopper)
    assert "Its books are back in your cart." in shopper.get(f"/success?session_id={sid}").text
    page = shopper.get("/cart")
    assert "did not go through" not in page.text and count(page) == "(1)"


@pytest.mark.parametrize("card", [ASYNC_FAIL, ASYNC_OK])
def test_a_bank_payment_settles_the_same_way_when_the_cart_changed_while_it_processed(shopper, card):
    a, b = shopper.shop.catalog().products[:2]
    shopper.add(a.id)
    to_stripe = shopper.checkout()
    sid = shopper.session_id(to_stripe)
    processing = shopper.get(pay(shopper, to_stripe, card=card).location)
    assert count(processing) == "(0)"
    page = shopper.add(b.id).follow()  # while the payment processes
    assert count(page) == "(1)" and [row.th.text for row in page.html.select("tbody tr")] == [b.name]
    shopper.standin.settle_async(sid)
    wire(shopper).standin.deliver_pending()
    settled = shopper.get(f"/success?session_id={sid}")
    rows = {row.th.text for row in shopper.get("/cart").html.select("tbody tr")}
    if card == ASYNC_FAIL:  # its books show again, beside what was added
        assert "Its books are back in your cart." in settled.text and count(settled) == "(2)", count(settled)
        assert rows == {a.name, b.name}
    else:
        assert "Thank you for your order" in settled.text and count(settled) == "(1)", count(settled)
        assert rows == {b.name} and shopper.cart_cookie() == f"{b.id}:1"


@pytest.mark.parametrize("hidden, added", [(99, 1), (60, 50)])
def test_copies_added_while_a_bank_payment_processes_are_never_lost_to_the_99_limit(shopper, hidden, added):
    a = shopper.shop.catalog().products[0]
    shopper.add(a.id, hidden)
    assert count(shopper.get(pay(shopper, shopper.checkout(), card=ASYNC_OK).location)) == "(0)"  # processing
    page = shopper.add(a.id, added).follow()
    assert count(page) == f"({added})", count(page)  # too many to keep beside the hidden ones: those go instead


@pytest.mark.parametrize("card", [None, ASYNC_OK])
def test_a_book_withdrawn_from_a_cart_whose_checkout_was_paid_meanwhile_is_said_once(make_shopper, catalog_copy, card):
    shopper = make_shopper(catalog=str(catalog_copy))
    a, b, c = shopper.shop.catalog().products[:3]
    shopper.add(a.id)
    shopper.standin.pay(shopper.session_id(shopper.checkout()), **({"card": card} if card else {}))  # tab closed
    shopper.add(b.id)
    shopper.add(c.id)
    wire(shopper).standin.deliver_pending()
    withdraw(catalog_copy, b.id)
    page = shopper.get("/cart")
    assert ("is processing" if card else "You have paid for") in page.text
    assert f"Sorry, {b.name} is no longer sold" in page.text and count(page) == "(1)", count(page)
    again = shopper.get("/cart")
    assert "no longer sold" not in again.text and count(again) == "(1)"


@pytest.mark.parametrize("other_book", [True, False])
def test_a_failed_buy_now_bank_payment_leaves_the_cart_alone(shopper, other_book):
    a, b = shopper.shop.catalog().products[:2]
    if other_book:
        shopper.add(b.id)
    to_stripe = shopper.checkout(product_id=a.id, quantity="1")
    sid = shopper.session_id(to_stripe)
    shopper.get(pay(shopper, to_stripe, card=ASYNC_FAIL).location)
    shopper.standin.settle_async(sid)
    wire(shopper).standin.deliver_pending()
    failed = shopper.get(f"/success?session_id={sid}")
    assert "did not go through" in failed.text and "back in your cart" not in failed.text
    assert shopper.cart_cookie() == (f"{b.id}:1" if other_book else None), shopper.cart_cookie()
    assert count(failed) == ("(1)" if other_book else "(0)")


def test_a_cart_paid_in_a_closed_tab_whose_only_book_was_withdrawn_still_says_what_was_paid(make_shopper, catalog_copy):
    shopper = make_shopper(catalog=str(catalog_copy))
    a = shopper.shop.catalog().products[0]
    shopper.add(a.id)
    shopper.standin.pay(shopper.session_id(shopper.checkout()))
    wire(shopper).standin.deliver_pending()
    withdraw(catalog_copy, a.id)
    page = shopper.get("/cart")
    assert f"You have paid for 1 × {a.name}" in page.text and "no longer sold" not in page.text


def test_a_second_instance_does_not_ask_stripe_about_checkouts_the_first_has_closed(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    sessions = bought_now(shopper, b, 3)
    second = make_shopper(catalog=str(catalog_copy))  # another instance (a gunicorn worker) on the same ledger
    release, asked, at_work = slow_to_expire(second.shop, monkeypatch)
    monkeypatch.setattr("shop.CLOSERS", 1)  # one call at a time, to see which it leaves out
    reprice(catalog_copy, b)
    second.get("/")
    assert at_work.wait(10)  # its closer has listed the three, and waits on Stripe at the first
    shopper.edited()  # meanwhile the first instance closes all three
    release.set()
    settled(second.shop)
    assert len(asked) == 1 and asked[0] in sessions
    assert [shopper.standin.get(s)["status"] for s in sessions] == ["expired"] * 3


def test_the_checkouts_of_an_old_price_are_closed_several_at_once_as_each_waits_on_stripe(
        make_shopper, catalog_copy, monkeypatch):
    """Every second one of them stays open, the old price is payable: 500 at 300 ms a call one by one were minutes."""
    shopper, a, b = two_books(make_shopper, catalog_copy)
    sessions = bought_now(shopper, b, CLOSERS + 1)
    release, asked, at_work = slow_to_expire(shopper.shop, monkeypatch)
    reprice(catalog_copy, b)
    shopper.get("/")
    assert at_work.wait(10)
    for _ in range(500):  # each call waits on Stripe: the closer does not wait for one to ask the next
        if len(asked) == CLOSERS:
            break
        time.sleep(0.01)
    assert len(asked) == CLOSERS  # and no more: Stripe's rate limit
    release.set()
    settled(shopper.shop)
    assert sorted(asked) == sorted(sessions)
    assert [shopper.standin.get(s)["status"] for s in sessions] == ["expired"] * len(sessions)


def test_stripe_down_while_the_old_prices_are_closed_is_one_warning_that_counts_the_rest(
        make_shopper, catalog_copy, caplog):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    bought_now(shopper, b, CLOSERS + 2)
    shopper.standin.faults.add("POST /v1/checkout/sessions/{id}/expire", "500", times=100)
    reprice(catalog_copy, b)
    shopper.edited()
    settled(shopper.shop)
    assert len(re.findall(r"could not expire cs_\w+ and \d+ more \(withdrawn or repriced\)", caplog.text)) == 1
    assert shopper.shop.retry_closing  # and a look a minute on tries again


def test_a_checkout_stripe_refuses_to_expire_though_open_is_tried_again_and_the_others_are_closed(
        make_shopper, catalog_copy, caplog):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    sessions = bought_now(shopper, b, CLOSERS + 2)
    shopper.standin.faults.add("POST /v1/checkout/sessions/{id}/expire", "400")  # one of them, once
    reprice(catalog_copy, b)
    shopper.edited()
    settled(shopper.shop)
    refused = re.findall(r"could not expire cs_\w+ \(withdrawn or repriced\): Stripe did not expire", caplog.text)
    assert len(refused) == 1
    assert sorted(shopper.standin.get(s)["status"] for s in sessions) == ["expired"] * (CLOSERS + 1) + ["open"]
    assert shopper.shop.retry_closing  # and a look a minute on tries it again


def test_an_edit_taken_back_while_the_closer_is_at_work_leaves_the_rest_of_its_checkouts_open(
        make_shopper, catalog_copy, monkeypatch):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    sessions = bought_now(shopper, b, 2)
    release, asked, at_work = slow_to_expire(shopper.shop, monkeypatch)
    monkeypatch.setattr("shop.CLOSERS", 1)  # one call at a time, to see which it leaves out
    reprice(catalog_copy, b)
    shopper.get("/")
    assert at_work.wait(10)  # the closer is at the first of the two, Stripe slow to answer
    reprice(catalog_copy, b, by=0)  # the merchant takes the new price back
    shopper.get("/")
    release.set()
    settled(shopper.shop)
    assert len(asked) == 1  # the one already under way; the other checkout is backed again, and stays
    assert sorted(shopper.standin.get(s)["status"] for s in sessions) == ["expired", "open"]



def test_cancel_on_an_older_checkout_after_a_newer_one_was_paid_says_the_order_is_paid(make_shopper, catalog_copy):
    """Its page, opened again from history, has expired and links back to the cart: 'You left the payment page
    without paying' would invite a second order."""
    shopper, a, b = two_books(make_shopper, catalog_copy)
    first = shopper.session_id(shopper.checkout())
    shopper.get("/cart?canceled=1")
    shopper.set_quantity(a.id, 2)
    paid = pay(wire(shopper), shopper.checkout()).follow()
    assert "Thank you" in paid.text and shopper.standin.get(first)["status"] == "expired"
    page = shopper.get("/cart?canceled=1")  # the first checkout's cancel link
    assert "without paying" not in page.text and "You have paid for 2 × " in page.text
    assert "See your order" in page.text


def test_cancel_on_a_cart_checkout_after_a_buy_now_was_paid_says_the_cart_is_as_it_was(make_shopper, catalog_copy):
    shopper, a, b = two_books(make_shopper, catalog_copy)
    shopper.checkout()  # the cart's checkout, then "Buy now" of another book, paid
    other = shopper.shop.catalog().products[2]
    assert "Thank you" in pay(wire(shopper), shopper.checkout(product_id=other.id)).follow().text
    page = shopper.get("/cart?canceled=1")  # the cart checkout's cancel link
    assert "You left the payment page without paying. Your cart is just as you left it." in page.text
    assert a.name in page.text and b.name in page.text
