"""A real Chromium, JavaScript on and off: a sold-out book offers no button, and a promotion code typed on the
payment page is refused when unknown, then discounts the order and shows on the confirmation."""

import json
import re

import pytest

from tests.browser.conftest import DESKTOP
from tests.browser.shopping import GOOD_CARD, PAY_PAGE, catalog, expect, fill_payment, pay_button, product_card

pytestmark = pytest.mark.browser
LONG = " and the Donaudampfschifffahrtsgesellschaftskapitän"  # a long word in the second book's name


@pytest.fixture
def selling_shop(start_shop, tmp_path_factory):
    """A shop of its own whose first book has one copy left and which offers the code SPRING10 (10% off)."""
    data = catalog()
    data["products"][0]["stock"] = 1
    data["promotions"] = [{"code": "SPRING10", "percent_off": 10}]
    data["products"][1]["name"] += LONG
    path = tmp_path_factory.mktemp("selling") / "catalog.json"
    path.write_text(json.dumps(data))
    return start_shop("selling", CATALOG=str(path))


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_a_code_on_the_payment_page_and_the_last_copy(open_tab, selling_shop, javascript):
    tab = open_tab(DESKTOP, javascript=javascript, server=selling_shop)
    page = tab.page
    last, other = catalog()["products"][0], dict(catalog()["products"][1])
    other["name"] += LONG
    tab.goto("/")
    card = product_card(page, last["name"])
    expect(card).to_contain_text("Only 1 left")
    card.get_by_role("button", name=f"Buy now {last['name']}").click()
    expect(page).to_have_url(PAY_PAGE)
    fill_payment(page, GOOD_CARD)
    page.get_by_label("Promotion code").fill("NOPE")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text(re.compile("not a valid promotion code"))).to_be_visible()
    page.get_by_label("Promotion code").fill("spring10")
    page.get_by_role("button", name="Apply").click()
    fill_payment(page, GOOD_CARD)  # the page came back: what the browser kept is typed again, as a shopper would
    pay_button(page).click()
    expect(page).to_have_url(re.compile(r"/success\?session_id=cs_test_"))
    expect(page.get_by_role("rowheader", name="Discount (SPRING10)")).to_be_visible()
    discount = round(last["price"] * 0.10)
    expect(page.locator("table.summary")).to_contain_text(f"{discount // 100}.{discount % 100:02d}")
    tab.goto("/")
    card = product_card(page, last["name"])
    expect(card).to_contain_text("Sold out")
    expect(card.get_by_role("button")).to_have_count(0)  # no way to buy what is gone, with or without JS
    other_card = product_card(page, other["name"])
    expect(other_card.get_by_role("button", name=f"Buy now {other['name']}")).to_be_visible()
    other_card.get_by_role("button", name=f"Add to cart {other['name']}").click()
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/", "/cart"):  # the long word breaks on a phone
        tab.goto(path)
        tab.no_sideways_scroll()
    assert not tab.errors, f"the browser reported errors: {tab.errors}"
