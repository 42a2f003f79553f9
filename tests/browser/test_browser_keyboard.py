"""Keyboard only: Tab and Enter reach "Add to cart", "Checkout" and "Pay", each with a visible focus ring."""

import re

import pytest

from tests.browser.conftest import DESKTOP
from tests.browser.shopping import GOOD_CARD, PAY_PAGE, SHOPPER, catalog, expect

pytestmark = pytest.mark.browser
MAX_TABS = 80  # more than any page here has stops; a page that needs more is a problem in itself

FOCUSED = """() => {
  // The ring is drawn outside the element, so it is seen against the nearest painted background around it.
  const backgroundBehind = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const c = getComputedStyle(p).backgroundColor;
      if (c && c !== "transparent" && !/rgba\\(.*, 0\\)$/.test(c)) return c;
    }
    return "rgb(255, 255, 255)";
  };
  const e = document.activeElement, s = getComputedStyle(e), r = e.getBoundingClientRect();
  const label = e.labels && e.labels.length ? e.labels[0].textContent : "";
  return {tag: e.tagName.toLowerCase(), type: e.type || "", name: e.name || "", id: e.id || "",
          text: (e.textContent || "").replace(/\\s+/g, " ").trim(), label: label.replace(/\\s+/g, " ").trim(),
          outlineStyle: s.outlineStyle, outlineWidth: parseFloat(s.outlineWidth) || 0, outlineColor: s.outlineColor,
          focusVisible: e.matches(":focus-visible"), behind: backgroundBehind(e),
          inView: r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 &&
                  r.top < innerHeight && r.left < innerWidth};
}"""

# What to type into each payment field when Tab reaches it, by the field's name or label.
TYPED = [(re.compile(r"email", re.I), SHOPPER["email"]), (re.compile(r"cardholder", re.I), SHOPPER["name"]),
         (re.compile(r"^(full )?name$", re.I), SHOPPER["name"]), (re.compile(r"phone", re.I), SHOPPER["phone"]),
         (re.compile(r"line1|address( line 1)?$", re.I), SHOPPER["line1"]), (re.compile(r"city", re.I), SHOPPER["city"]),
         (re.compile(r"postal|zip", re.I), SHOPPER["postal_code"]), (re.compile(r"card.?number|^card$", re.I), GOOD_CARD),
         (re.compile(r"expir", re.I), "12 / 34"), (re.compile(r"cvc|security", re.I), "123")]


def focused(page):
    return page.evaluate(FOCUSED)


def tab_to(page, wanted, what, on_stop=None):
    """Press Tab until the focused element matches `wanted`; `on_stop` sees every stop on the way."""
    seen = []
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        now = focused(page)
        if wanted(now):
            return now
        seen.append(now["text"] or now["label"] or now["name"] or now["tag"])
        if on_stop:
            on_stop(now)
    pytest.fail(f"Tab never reached {what} on {page.url}; stops: {seen}")


def luminance(css_color):
    """WCAG relative luminance of an rgb()/rgba() colour as getComputedStyle gives it."""
    r, g, b = (int(float(v)) for v in re.findall(r"[\d.]+", css_color)[:3])

    def channel(c):
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a, b):
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def assert_focus_ring(element, what):
    assert element["focusVisible"], f"{what}: keyboard focus does not match :focus-visible"
    assert element["outlineStyle"] not in ("none", "hidden") and element["outlineWidth"] >= 2, \
        f"{what}: no visible focus ring (outline {element['outlineStyle']} {element['outlineWidth']}px)"
    assert element["inView"], f"{what}: focused but not scrolled into view"
    # WCAG 1.4.11 (non-text contrast): a focus indicator needs 3:1 against what is next to it.
    ratio = contrast(element["outlineColor"], element["behind"])
    assert ratio >= 3, (f"{what}: focus ring {element['outlineColor']} on {element['behind']} has contrast "
                        f"{ratio:.2f}:1, under 3:1")


def test_keyboard_only_purchase(open_tab):
    tab = open_tab(DESKTOP)
    page = tab.page
    book = catalog()["products"][0]["name"]
    tab.goto("/")

    page.keyboard.press("Tab")
    skip = focused(page)
    assert skip["text"] == "Skip to content" and skip["inView"], "the first Tab stop is a visible skip link"

    add = tab_to(page, lambda e: e["tag"] == "button" and e["text"] == f"Add to cart {book}", "Add to cart")
    assert_focus_ring(add, "Add to cart")
    tab.shot("add-to-cart-focused", full_page=False)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/cart\?added="))

    checkout = tab_to(page, lambda e: e["tag"] == "button" and e["text"] == "Checkout", "Checkout")
    assert_focus_ring(checkout, "Checkout")
    tab.shot("checkout-focused", full_page=False)
    page.keyboard.press("Enter")
    expect(page).to_have_url(PAY_PAGE)

    typed = set()

    def type_into(field):
        if field["tag"] == "select" and re.search(r"country", field["name"] + field["label"], re.I):
            page.keyboard.type(SHOPPER["country"])  # a closed <select> picks the option typed
            typed.add(field["name"])
            return
        if field["tag"] != "input" or field["type"] in ("radio", "checkbox", "hidden", "submit"):
            return
        for pattern, value in TYPED:
            key = field["name"] if pattern.search(field["name"]) else field["label"]
            if pattern.search(key) and field["name"] not in typed:
                page.keyboard.type(value)
                typed.add(field["name"])
                return

    pay = tab_to(page, lambda e: e["tag"] == "button" and re.match(r"Pay\b", e["text"]), "Pay", on_stop=type_into)
    assert_focus_ring(pay, "Pay")
    assert len(typed) >= 5, f"only these payment fields were reached by Tab: {sorted(typed)}"
    tab.shot("pay-focused", full_page=False)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/success\?session_id=cs_test_"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you for your order")
    tab.shot("success")
    assert not tab.errors, f"the browser reported errors: {tab.errors}"
