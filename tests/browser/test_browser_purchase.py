"""A real Chromium buys books: home → cart → the stand-in's payment page → success, on desktop and phone."""

import re

import pytest

from tests.browser.conftest import DESKTOP, PHONE
from tests import standin_helpers
from tests.browser.shopping import (DECLINED_CARD, GOOD_CARD, PAY_PAGE, SHOPPER, add_to_cart, catalog, expect,
                                    expected_total, fill_payment, money, pay_button, product_card,
                                    set_quantity)

pytestmark = pytest.mark.browser
SIZES = {"desktop": DESKTOP, "phone": PHONE}


def two_books():
    first, second = catalog()["products"][:2]
    return first, second


@pytest.mark.parametrize("size", ["desktop", "phone"])
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_buy_two_books(open_tab, size, javascript):
    tab = open_tab(SIZES[size], javascript=javascript)
    page = tab.page
    phone = size == "phone"
    first, second = two_books()
    option_index = 1  # express: a non-default option, so the choice on the payment page must count
    option = catalog()["shipping"]["options"][option_index]
    publish = javascript  # the README shows the pages as most shoppers see them

    def step(name, doc=None, stable=True, first_screen=False):
        shot = tab.shot(name)
        if phone:
            tab.no_sideways_scroll()
        if publish and doc:
            if first_screen:  # the README shows what the shopper sees first, not the whole long page
                shot = tab.shot(f"{name}-first-screen", full_page=False)
            tab.publish(shot, f"{doc}-{size}", stable=stable)

    tab.goto("/")
    expect(page.get_by_role("button", name=f"Add to cart {first['name']}", exact=True)).to_be_visible()
    step("home", doc="home", first_screen=True)

    add_to_cart(page, first["name"])
    step("cart-one-book")
    tab.goto("/")
    add_to_cart(page, second["name"])
    step("cart-two-books")

    set_quantity(page, first["name"], 3)
    cart = {first["id"]: 3, second["id"]: 1}
    expected = expected_total(cart, SHOPPER["country"], option_index)
    expect(page.locator(".subtotal")).to_have_text(money(expected["subtotal"]))
    expect(page.get_by_role("link", name=re.compile(r"^Cart"))).to_contain_text("(4)")
    step("cart-quantity-changed", doc="cart")

    page.get_by_role("button", name="Checkout", exact=True).click()
    expect(page).to_have_url(PAY_PAGE)
    expect(page.get_by_text("Test mode").first).to_be_visible()
    step("payment-page")

    fill_payment(page, GOOD_CARD, shipping=option["name"])
    step("payment-filled")
    pay_button(page).click()

    expect(page).to_have_url(re.compile(r"/success\?session_id=cs_test_"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you for your order")
    total_row = page.locator("tr.total")
    expect(total_row).to_contain_text(money(expected["total"]))
    summary = page.locator("table.summary")
    for label in ("subtotal", "shipping", "tax"):
        expect(summary.locator("tr", has=page.get_by_role("rowheader", name=label.capitalize(), exact=True))) \
            .to_contain_text(money(expected[label]))
    expect(summary).to_contain_text(first["name"])
    expect(summary).to_contain_text(second["name"])
    step("success", doc="success", stable=False)
    tab.goto("/cart")
    expect(page.get_by_text("Your cart is empty.")).to_be_visible()  # a paid order empties the cart
    assert not tab.errors, f"the browser reported errors: {tab.errors}"


def test_declined_card_then_back_to_the_cart(open_tab):
    tab = open_tab(DESKTOP)
    page = tab.page
    first, second = two_books()
    tab.goto("/")
    add_to_cart(page, first["name"])
    tab.goto("/")
    add_to_cart(page, second["name"])
    set_quantity(page, second["name"], 2)
    tab.shot("cart")

    page.get_by_role("button", name="Checkout", exact=True).click()
    expect(page).to_have_url(PAY_PAGE)
    pay_url = page.url
    fill_payment(page, DECLINED_CARD)
    pay_button(page).click()
    expect(page.get_by_text(re.compile("declined", re.I)).first).to_be_visible()
    assert PAY_PAGE.search(page.url) and page.url.split("?")[0] == pay_url.split("?")[0], "stays on the payment page"
    tab.shot("declined")

    page.get_by_role("link", name=re.compile(r"back", re.I)).first.click()
    expect(page).to_have_url(re.compile(r"/cart\?canceled=1$"))
    expect(page.get_by_role("status").first).to_contain_text("You left the payment page without paying")
    expect(page.get_by_label(f"Quantity of {first['name']}", exact=True)).to_have_value("1")
    expect(page.get_by_label(f"Quantity of {second['name']}", exact=True)).to_have_value("2")
    expect(page.locator(".subtotal")).to_have_text(money(first["price"] + 2 * second["price"]))
    tab.shot("back-in-cart")
    assert not tab.errors, f"the browser reported errors: {tab.errors}"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_enter_in_the_quantity_box_adds_and_buy_now_buys_the_quantity_typed(open_tab, javascript):
    tab = open_tab(DESKTOP, javascript=javascript)
    page = tab.page
    first, _ = two_books()
    tab.goto("/")
    box = product_card(page, first["name"]).get_by_label("Quantity")
    box.fill("2")
    box.press("Enter")  # the form's first button: Add to cart, never Buy now
    expect(page).to_have_url(re.compile(r"/cart\?added="))
    expect(page.get_by_label(f"Quantity of {first['name']}", exact=True)).to_have_value("2")
    tab.goto("/")
    product_card(page, first["name"]).get_by_label("Quantity").fill("3")
    product_card(page, first["name"]).get_by_role("button", name=f"Buy now {first['name']}").click()
    expect(page).to_have_url(PAY_PAGE)
    fill_payment(page, GOOD_CARD)
    pay_button(page).click()
    expect(page).to_have_url(re.compile(r"/success\?session_id=cs_test_"))
    row = page.locator("table.summary tbody tr", has=page.get_by_role("rowheader", name=first["name"]))
    expect(row).to_contain_text(money(3 * first["price"]))
    expect(row.locator("td").first).to_have_text("3")
    tab.goto("/cart")  # "Buy now" leaves the cart alone
    expect(page.get_by_label(f"Quantity of {first['name']}", exact=True)).to_have_value("2")
    assert not tab.errors, f"the browser reported errors: {tab.errors}"


def test_checkout_on_another_origin_than_the_api_is_reached(open_tab, start_shop, tmp_path):
    """Checkout's page may be on the merchant's custom domain, not checkout.stripe.com: the browser must still follow
    the shop's 303 there (Chromium holds it to the page's form-action). Here the stand-in's API is at 127.0.0.1 and
    its payment page at localhost."""
    proc, api = standin_helpers.start(tmp_path, public="http://localhost:{port}",
                                      args=("--webhook-secret", "whsec_browser"))
    try:
        server = start_shop("custom-domain", STRIPE_SECRET_KEY="sk_test_browser", STRIPE_API_BASE=api,
                            STRIPE_WEBHOOK_SECRET="whsec_browser")
        tab = open_tab(DESKTOP, server=server)
        page, first = tab.page, catalog()["products"][0]
        tab.goto("/")
        product_card(page, first["name"]).get_by_role("button", name=f"Buy now {first['name']}").click()
        expect(page).to_have_url(re.compile(r"^http://localhost:\d+/offline-checkout/cs_test_\w+"))
        fill_payment(page, GOOD_CARD)
        pay_button(page).click()
        expect(page).to_have_url(re.compile(rf"^{re.escape(server.url)}/success\?session_id=cs_test_"))
        expect(page.get_by_role("status").first).to_contain_text("Your payment went through")
    finally:
        proc.kill()
        proc.wait()
