"""On a phone the tables' column headings are hidden, so each price, quantity and total cell names its column."""

import pytest

from tests.browser.conftest import PHONE
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
