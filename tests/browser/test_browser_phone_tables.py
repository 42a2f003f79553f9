"""On a phone the tables' column headings are hidden, so each price, quantity and total cell names its column."""

import pytest

from tests.browser.conftest import PHONE, one_line_cells
from tests.browser.shopping import add_to_cart, catalog, expect

pytestmark = pytest.mark.browser
SHOWN = """() => [...document.querySelectorAll('table.cart tbody td[data-label]')].map(td =>
    [td.dataset.label, getComputedStyle(td, '::before').content])"""


def test_cart_cells_name_their_column_on_a_phone(open_tab):
    tab = open_tab(PHONE)
    page = tab.page
    book = catalog()["products"][0]["name"]
    tab.goto("/")
    add_to_cart(page, book)
    expect(page.locator("table.cart thead")).to_be_hidden()
    cells = page.evaluate(SHOWN)
    assert {label for label, _ in cells} == {"Price", "Quantity", "Total"}
    for label, content in cells:
        assert label in content, f"the {label} cell of a cart line does not say what it is: {content}"
    tab.shot("cart")
    tab.no_sideways_scroll()


def test_prices_and_headings_are_never_cut_in_two_where_the_cart_is_a_table_at_its_narrowest(open_tab):
    tab = open_tab({"width": 601, "height": 800})  # a desktop zoomed to 200% is about as wide
    page = tab.page
    for product in catalog()["products"][:2]:
        tab.goto("/")
        add_to_cart(page, product["name"])
    expect(page.locator("table.cart thead")).to_be_visible()
    assert one_line_cells(page, "table.cart th[scope=col]:not(:has(.visually-hidden)), table.cart td.money") == []
