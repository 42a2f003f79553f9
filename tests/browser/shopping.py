"""What a shopper does in the browser, step by step, and the amounts the catalog says they should pay."""

import json
import os
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # skipped locally with the reason; CI installs requirements-dev.txt and must run them
    if os.environ.get("CI"):
        raise
    pytest.skip("Playwright is not installed (pip install -r requirements-dev.txt)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]

PAY_PAGE = re.compile(r"/offline-checkout/cs_test_\w+")
GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
SHOPPER = {"email": "reader@example.com", "name": "Ada Reader", "phone": "+49 30 1234567",
           "line1": "1 Canal Street", "city": "Berlin", "postal_code": "10115", "country": "DE"}


def catalog():
    """catalog.json as the merchant wrote it (read directly, not through the shop's code)."""
    return json.loads((ROOT / "catalog.json").read_text(encoding="utf-8"))


def money(amount, currency="usd"):
    """How the pages show an amount of a two-decimal currency, e.g. $83.25."""
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}[currency]
    return f"{symbol}{amount // 100:,}.{amount % 100:02d}"


def documented_tax_rate(country):
    """The stand-in's fixed test rate for a country, from the table its documentation points to."""
    from standin.tax import RATES  # the documented table; the arithmetic below is this test's own
    return Decimal(RATES.get(country, "0")) / 100


def expected_total(cart, country, option_index):
    """Subtotal + shipping + tax as Stripe Checkout computes them for exclusive tax (rounded half-up per line)."""
    cat = catalog()
    prices = {p["id"]: p for p in cat["products"]}
    option = cat["shipping"]["options"][option_index]
    assert cat["tax"] == {"mode": "automatic", "behavior": "exclusive"}, "expected total assumes exclusive tax"
    rate = documented_tax_rate(country)
    lines = [prices[pid]["price"] * qty for pid, qty in cart.items()]
    taxed = lines + [option["amount"]]  # shipping is taxed too (its tax code is a taxable one)
    tax = sum(int((Decimal(a) * rate).quantize(Decimal(1), ROUND_HALF_UP)) for a in taxed)
    subtotal = sum(lines)
    return {"subtotal": subtotal, "shipping": option["amount"], "tax": tax,
            "total": subtotal + option["amount"] + tax}


def add_to_cart(page, name):
    """On the home page: press the book's "Add to cart"; the shop shows the cart."""
    page.get_by_role("button", name=f"Add to cart {name}", exact=True).click()
    expect(page).to_have_url(re.compile(r"/cart\?added="))
    expect(page.get_by_role("status").filter(has_text=f"Added “{name}”")).to_be_visible()


def product_card(page, name):
    """On the home page: the card of the book with this name."""
    return page.locator("li.card", has=page.get_by_role("heading", name=name, exact=True))


def set_quantity(page, name, quantity):
    """On the cart page: type a new quantity for a line and press its Update button."""
    page.get_by_label(f"Quantity of {name}", exact=True).fill(str(quantity))
    page.get_by_role("button", name=f"Update {name}", exact=True).click()
    expect(page.get_by_label(f"Quantity of {name}", exact=True)).to_have_value(str(quantity))


def fill_payment(page, card, shopper=SHOPPER, shipping=None):
    """On the payment page: contact, shipping address and option, and card details, found by their labels."""
    page.get_by_label("Email", exact=False).first.fill(shopper["email"])
    fill_if_present(page, re.compile(r"^(Full name|Name)", re.I), shopper["name"])
    page.get_by_label(re.compile(r"Country", re.I)).select_option(shopper["country"])
    page.get_by_label(re.compile(r"Address( line 1)?$", re.I)).first.fill(shopper["line1"])
    page.get_by_label(re.compile(r"^City", re.I)).fill(shopper["city"])
    page.get_by_label(re.compile(r"Postal code|ZIP", re.I)).fill(shopper["postal_code"])
    fill_if_present(page, re.compile(r"^Phone", re.I), shopper["phone"])
    if shipping is not None:
        page.get_by_label(re.compile(re.escape(shipping))).check()
    page.get_by_label(re.compile(r"Card number", re.I)).fill(card)
    page.get_by_label(re.compile(r"Expir", re.I)).fill("12 / 34")
    page.get_by_label(re.compile(r"CVC|Security code", re.I)).fill("123")


def fill_if_present(page, label, value):
    field = page.get_by_label(label)
    if field.count():
        field.first.fill(value)


def pay_button(page):
    return page.get_by_role("button", name=re.compile(r"^Pay\b"))
