"""Stripe calls per purchase, counted by the stand-in: each one is Stripe's rate limit and a shopper's wait."""

import json
from collections import Counter
from urllib.parse import urlsplit

from tests.conftest import pay


def calls(standin, step):
    """(what step returned, how many Stripe API calls the stand-in served meanwhile)."""
    before = Counter(standin.calls)
    result = step()
    return result, sum((Counter(standin.calls) - before).values())


def test_a_purchase_costs_one_call_to_start_at_most_one_to_confirm_and_one_per_webhook(shopper):
    standin = shopper.standin
    shopper.add("walden")
    shopper.add("moby-dick", 2)
    to_stripe, started = calls(standin, lambda: shopper.checkout())
    assert started == 1  # POST /v1/checkout/sessions
    paid = pay(shopper, to_stripe)
    page, confirmed = calls(standin, lambda: shopper.get(paid.location))
    assert "Thank you" in page.text and confirmed <= 1
    per_event = []

    def deliver(url, body, headers):
        response, n = calls(standin, lambda: shopper.post(urlsplit(url).path, body, headers=headers,
                                                           expect_errors=True))
        per_event.append((json.loads(body)["type"], n, response.status_int))
        return response.status_int

    standin.deliver = deliver
    standin.deliver_pending()
    assert any(kind == "checkout.session.completed" for kind, _, _ in per_event)
    assert all(n <= 1 and status == 200 for _, n, status in per_event), per_event


def test_the_success_page_reload_and_a_repeated_event_cost_no_more(shopper):
    standin = shopper.standin
    shopper.add("walden")
    paid = pay(shopper, shopper.checkout())
    shopper.get(paid.location)
    _, again = calls(standin, lambda: shopper.get(paid.location))
    assert again <= 1
    delivered = []
    standin.deliver = lambda url, body, headers: delivered.append((body, headers)) or 200
    standin.deliver_pending()
    body, headers = next((b, h) for b, h in delivered if json.loads(b)["type"] == "checkout.session.completed")
    shopper.post("/webhook", body, headers=headers)
    _, repeat = calls(standin, lambda: shopper.post("/webhook", body, headers=headers))
    assert repeat == 0  # a duplicate delivery is answered from the ledger


def test_an_expired_checkout_shows_its_page_from_the_ledger_with_no_stripe_call(shopper):
    """Expiry is final at Stripe: however often its link is opened (a script, say), Stripe is not asked."""
    shopper.add("walden")
    shopper.add("moby-dick", 2)
    session_id = shopper.session_id(shopper.checkout())
    shopper.shop.orders.expire(session_id, "test")  # as "Back" then a new checkout, or an edit, would
    shopper.shop.reads.seconds = 0  # each view on its own, as when opened more than a second apart
    for _ in range(3):
        page, n = calls(shopper.standin, lambda: shopper.get(f"/success?session_id={session_id}"))
        assert n == 0 and "This checkout expired before it was paid" in page.text
    rows = [[c.text for c in r.find_all(["th", "td"])] for r in page.html.find("tbody").find_all("tr")]
    assert rows == [["Walden", "1", "$11.99"], ["Moby-Dick", "2", "$31.98"]]
    assert page.html.find("tr", class_="total").td.text.startswith("$")
