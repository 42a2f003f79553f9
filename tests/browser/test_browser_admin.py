"""The orders page in Chromium with JavaScript off: signed in with Basic auth, a paid order found, opened and
partly refunded behind the confirmation step; axe-core finds no serious or critical problem on any of its pages
(axe itself needs scripts, so a second tab with them on audits the same pages: they have no scripts of their own)."""

import json
import re
from pathlib import Path

import pytest

from tests.browser.conftest import DESKTOP, PHONE, STEP_TIMEOUT_MS, Browsing, cut_words, one_line_cells
from tests.browser.shopping import GOOD_CARD, SHOPPER, add_to_cart, catalog, expect, fill_payment, pay_button

pytestmark = pytest.mark.browser
PASSWORD = "a long admin password"


def axe_violations(page, report):
    """Serious and critical axe-core findings on the page as it is now (all of them saved to `report`)."""
    try:
        import axe_playwright_python
    except ImportError:
        pytest.skip("axe-playwright-python is not installed (pip install -r requirements-dev.txt)")
    # Evaluated through the DevTools protocol, so the shop's CSP (script-src 'self') does not block it.
    page.evaluate((Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8"))
    result = page.evaluate("""async () => (await axe.run(document, {resultTypes: ["violations"]})).violations.map(
        v => ({id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map(n => n.target.join(" "))}))""")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2))
    return [v for v in result if v["impact"] in ("serious", "critical")]


def test_find_open_and_refund_an_order_without_javascript(browser, start_shop, screenshot_root):
    shop = start_shop("admin", ADMIN_PASSWORD=PASSWORD)
    contexts = [browser.new_context(viewport=DESKTOP, java_script_enabled=javascript, locale="en-US",
                                    timezone_id="UTC", device_scale_factor=1,
                                    http_credentials={"username": "admin", "password": PASSWORD})
                for javascript in (False, True)]
    for context in contexts:
        context.set_default_timeout(STEP_TIMEOUT_MS)
    tab = Browsing(contexts[0].new_page(), screenshot_root / "admin", shop.url)
    page, auditor, found = tab.page, contexts[1].new_page(), []

    def check(name, reach=None):
        """Screenshot this step; audit the same page in the auditor's tab (reached by `reach`, else by its URL)."""
        shot = tab.shot(name)
        reach(auditor) if reach else auditor.goto(page.url)
        found.extend((name, v) for v in axe_violations(auditor, screenshot_root.parent / "axe" / f"admin-{name}.json"))
        return shot

    def review_refund(p, amount="2.50"):
        p.get_by_label("Part of it:").check()
        p.get_by_label(re.compile(r"^amount in USD")).fill(amount)
        p.get_by_role("button", name="Review the refund").click()

    try:
        book = catalog()["products"][0]["name"]
        tab.goto("/")
        add_to_cart(page, book)
        page.get_by_role("button", name="Checkout", exact=True).click()
        fill_payment(page, GOOD_CARD)
        pay_button(page).click()
        expect(page).to_have_url(re.compile(r"/success\?session_id="))
        order_id = re.search(r"ord_[0-9a-f]{24}", page.content())[0]

        tab.goto("/admin")
        expect(page.get_by_role("heading", name="Orders", level=1)).to_be_visible()
        expect(page.get_by_role("row").filter(has_text=order_id)).to_contain_text("paid")
        tab.publish(check("orders"), "admin-desktop", stable=False)
        page.set_viewport_size(PHONE)  # the list's times read whole, never "2026-12- / 07"
        assert one_line_cells(page, "td[data-label=Created]") == []
        page.set_viewport_size(DESKTOP)

        page.get_by_label("Status").select_option("paid")
        page.get_by_label("Order id or email").fill(SHOPPER["email"].upper())
        page.get_by_role("button", name="Show orders").click()
        expect(page).to_have_url(re.compile(r"/admin\?status=paid&q="))
        page.get_by_role("link", name=order_id).click()
        expect(page.get_by_role("heading", name=f"Order {order_id}")).to_be_visible()
        expect(page.get_by_text(SHOPPER["line1"])).to_be_visible()
        check("order")
        assert one_line_cells(page, "th[scope=col]") == []  # "Status", never "Stat / us"
        page.set_viewport_size(PHONE)  # each history entry reads in lines, however long its session id
        assert page.evaluate("""() => [...document.querySelectorAll('table.log td')].filter(
            td => td.textContent.trim() && td.getBoundingClientRect().width < 100).map(td => td.textContent)""") == []
        tab.no_sideways_scroll()
        page.set_viewport_size(DESKTOP)

        order_url = page.url
        page.set_viewport_size(PHONE)
        review_refund(page, "abc")  # refused: the page opens where its message is, far below the top on a phone
        expect(page.get_by_role("alert")).to_contain_text("Enter an amount from")
        expect(page.get_by_role("alert")).to_be_in_viewport()
        expect(page.get_by_label(re.compile(r"^amount in USD"))).to_be_focused()  # typing puts it right
        page.set_viewport_size(DESKTOP)
        tab.goto(order_url.removeprefix(shop.url))
        review_refund(page)
        expect(page.get_by_role("heading", name=f"Refund $2.50 of order {order_id}?")).to_be_visible()
        check("confirm-refund", reach=lambda p: (p.goto(order_url), review_refund(p)))  # asking refunds nothing
        page.get_by_role("button", name="Refund $2.50").click()
        expect(page.get_by_role("status")).to_contain_text("was made at Stripe")

        def refunded():  # the serving shop's stand-in delivers charge.refunded within a second or so
            page.reload()
            return "partially refunded" in page.get_by_role("term").filter(has_text="Status").locator(
                "xpath=following-sibling::dd[1]").inner_text()
        for _ in range(40):
            if refunded():
                break
            page.wait_for_timeout(250)
        else:
            pytest.fail("the refund never reached the order")
        check("refunded")
        tab.goto("/admin")
        for width in range(600, 820, 20):  # 200% zoom, a tablet: words whole in the list, never "refund / ed"
            page.set_viewport_size({"width": width, "height": 800})
            assert cut_words(page, "td[data-label=Created], td[data-label=Status]") == [], width
        for path in (order_url, "/admin"):  # on a phone, every page of it fits the screen's width
            page.set_viewport_size({"width": 375, "height": 800})
            tab.goto(path.removeprefix(shop.url))
            tab.no_sideways_scroll()
        assert not tab.errors, tab.errors
        assert not found, "axe-core found serious or critical problems:\n" + "\n".join(
            f"- {name}: {v['impact']} {v['id']}: {v['help']} at {'; '.join(v['targets'][:5])}" for name, v in found)
    finally:
        for context in contexts:
            context.close()
