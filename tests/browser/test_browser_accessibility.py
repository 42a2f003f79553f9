"""axe-core in Chromium finds no serious or critical accessibility problem on any page the shopper can reach."""

import json
import re
from pathlib import Path

import pytest

from tests.browser.conftest import DESKTOP, PHONE, unavailable
from tests.browser.shopping import (DECLINED_CARD, GOOD_CARD, PAY_PAGE, add_to_cart, catalog, expect, fill_payment,
                                    pay_button)

pytestmark = pytest.mark.browser
BLOCKING = ("serious", "critical")
# Faults are the stand-in's documented switch (standin/faults.py): every attempt to create a Checkout Session
# answers 429 rate_limit, which the SDK does not retry, so the shop shows its 503 page at once.
CHECKOUT_DOWN = {"STANDIN_FAULTS": "POST /v1/checkout/sessions=429*100000"}
NARROW = {"width": 320, "height": 800}  # WCAG 1.4.10 Reflow: no sideways scrolling at 320 CSS pixels
AUTHENTICATION_CARD = "4000 0027 6000 3184"  # Stripe's test card that always asks for 3D Secure


@pytest.fixture(scope="session")
def axe_source():
    """axe-core's browser script, as bundled by the axe-playwright-python wheel (pinned in requirements-dev.txt)."""
    try:
        import axe_playwright_python
    except ImportError:
        unavailable("axe-playwright-python is not installed (pip install -r requirements-dev.txt)")
    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


@pytest.fixture
def audit(axe_source, screenshot_root, request):
    """Run axe on the page as it is now; save every finding; return the serious and critical ones."""
    report_dir = screenshot_root.parent / "axe"
    report_dir.mkdir(parents=True, exist_ok=True)

    def run(tab, name):
        page = tab.page
        # Evaluated through the DevTools protocol, so the shop's CSP (script-src 'self') does not block it.
        page.evaluate(axe_source)
        result = page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return {version: axe.version, url: location.href, violations: r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                nodes: v.nodes.map(n => ({target: n.target.join(" "), summary: n.failureSummary}))}))};
        }""")
        (report_dir / f"{request.node.name}-{name}.json").write_text(json.dumps(result, indent=2))
        tab.shot(name)
        return [v for v in result["violations"] if v["impact"] in BLOCKING]

    return run


def describe(found):
    return "\n".join(f"- {page}: {v['impact']} {v['id']}: {v['help']} ({v['helpUrl']}) at "
                     + "; ".join(n["target"] for n in v["nodes"][:5]) for page, v in found)


@pytest.mark.parametrize("size", ["desktop", "phone", "narrow"])
def test_no_serious_violations_on_any_page(open_tab, audit, size):
    tab = open_tab({"desktop": DESKTOP, "phone": PHONE, "narrow": NARROW}[size])
    page = tab.page
    book = catalog()["products"][0]["name"]
    found = []

    def check(name):
        found.extend((name, v) for v in audit(tab, name))
        if size != "desktop":
            tab.no_sideways_scroll()
            # No word of a button's label broken over two lines (the first text of each: its visible words).
            broken = page.evaluate("""() => [...document.querySelectorAll('button')].filter(b => {
                const text = [...b.childNodes].find(n => n.nodeType === 3 && n.textContent.trim());
                if (!text) return false;
                const range = document.createRange(); range.selectNodeContents(text);
                return text.textContent.trim().split(/\\s+/).length === 1 && range.getClientRects().length > 1;
            }).map(b => b.textContent.trim())""")
            assert not broken, f"{name}: button labels broken mid-word: {broken}"

    tab.goto("/")
    check("home")
    add_to_cart(page, book)
    check("cart")
    page.get_by_role("button", name="Checkout", exact=True).click()
    expect(page).to_have_url(PAY_PAGE)
    check("payment-page")
    fill_payment(page, DECLINED_CARD)
    pay_button(page).click()
    expect(page.get_by_text(re.compile("declined", re.I)).first).to_be_visible()
    check("payment-declined")
    fill_payment(page, AUTHENTICATION_CARD)
    pay_button(page).click()
    expect(page.get_by_role("heading", name=re.compile("3D Secure"))).to_be_visible()
    check("authentication")
    page.get_by_role("button", name="Fail", exact=True).click()
    expect(page.get_by_text(re.compile("unable to authenticate")).first).to_be_visible()
    check("authentication-failed")
    fill_payment(page, GOOD_CARD)
    pay_button(page).click()
    expect(page).to_have_url(re.compile(r"/success\?session_id="))
    check("success")
    response = tab.goto("/no-such-page")
    assert response.status == 404
    check("not-found")
    assert not found, f"axe-core found serious or critical problems:\n{describe(found)}"


def test_no_serious_violations_on_the_unavailable_page(open_tab, audit, start_shop):
    down = start_shop("checkout-down", **CHECKOUT_DOWN)
    tab = open_tab(DESKTOP, server=down)
    page = tab.page
    tab.goto("/")
    add_to_cart(page, catalog()["products"][0]["name"])
    with page.expect_response(lambda r: r.url.endswith("/checkout")) as answer:
        page.get_by_role("button", name="Checkout", exact=True).click()
    assert answer.value.status == 503
    expect(page.get_by_role("alert")).to_contain_text("not answering")
    expect(page.get_by_role("link", name="Back to your cart")).to_be_visible()
    found = [("unavailable", v) for v in audit(tab, "unavailable")]
    assert not found, f"axe-core found serious or critical problems:\n{describe(found)}"
