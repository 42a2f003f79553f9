"""On a phone the tables' column headings are hidden, so each price, quantity and total cell names its column; long
words wrap."""

import json

import pytest

from tests.browser.conftest import DESKTOP, PHONE, one_line_cells
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


def test_a_long_address_in_a_books_text_wraps_inside_its_card(open_tab, start_shop, tmp_path):
    data = catalog()
    data["products"][0]["description"] = ("Free to read at https://www.gutenberg.org/ebooks/205/pg205-images.html "
                                          "and here in print: " + "Walden" * 40)
    (tmp_path / "catalog.json").write_text(json.dumps(data), encoding="utf-8")
    shop = start_shop("long-words", CATALOG=str(tmp_path / "catalog.json"))
    for viewport in (DESKTOP, PHONE):
        tab = open_tab(viewport, server=shop)
        tab.goto("/")
        overflowing = tab.page.evaluate("""() => [...document.querySelectorAll('.card .desc')]
            .filter(p => p.scrollWidth > p.closest('.card').clientWidth).length""")
        assert overflowing == 0, f"a description runs out of its card at {viewport['width']}px"
        tab.no_sideways_scroll()
