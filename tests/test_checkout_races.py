"""Clicks that race, and a Stripe that is slow: one payable session per click, Stripe's rate limit protected."""

from collections import Counter
from urllib.parse import urlsplit

import pytest

from standin import PayError, StandIn
from tests.conftest import BASE, edit_catalog, same_browser, together


@pytest.fixture
def slow_shopper(make_shopper, data_dir):
    """A shop whose stand-in answers every API call in 150 ms: a window that clicks can race in."""
    return make_shopper(standin=StandIn(data_dir / "stripe", public_url=BASE, latency_ms=150))


def open_sessions(shopper):
    return [s.id for s in shopper.shop.orders.stripe.v1.checkout.sessions.list({"status": "open", "limit": 100})]


@pytest.mark.parametrize("fields", [{}, {"product_id": "walden", "quantity": "1"}], ids=["checkout", "buy-now"])
def test_a_double_clicked_checkout_leaves_exactly_one_payable_session(slow_shopper, fields):
    shopper = slow_shopper
    shopper.add("moby-dick")
    token, browser = shopper.csrf(), same_browser(shopper)
    answers = together(4, lambda i: browser().post("/checkout", {"csrf_token": token, **fields}, status=303))
    (still_open,) = open_sessions(shopper)
    assert still_open in shopper.get("/cart").text  # the cart's "Continue your payment" offers that one
    offered = [urlsplit(a.location).path.rsplit("/", 1)[-1] for a in answers if "/offline-checkout/" in a.location]
    paid = 0
    for session_id in set(offered):
        try:
            shopper.standin.pay(session_id)
            paid += 1
        except PayError:
            pass
    assert paid == 1  # every other session the clicks made was expired before anyone could pay it


@pytest.mark.parametrize("fields", [{}, {"product_id": "walden", "quantity": "1"}], ids=["checkout", "buy-now"])
def test_a_second_click_for_the_last_copy_neither_refuses_nor_drops_it(make_shopper, catalog_copy, two_clicks,
                                                                         fields):
    with edit_catalog(catalog_copy) as data:
        next(p for p in data["products"] if p["id"] == "walden")["stock"] = 1
    shopper = make_shopper(catalog=str(catalog_copy))
    ledger = shopper.shop.orders.ledger
    shopper.add("walden")
    shopper.add("moby-dick")
    token, browser = shopper.csrf(), same_browser(shopper)
    # The second click comes while the first one's order holds the last copy and waits on Stripe.
    answers = two_clicks(lambda: browser().post("/checkout", {"csrf_token": token, **fields}, expect_errors=True))
    assert [a.status_int for a in answers] == [303, 303]
    assert not [c for a in answers for c in a.headers.getall("Set-Cookie") if "cart=" in c and "walden" not in c]
    (still_open,) = open_sessions(shopper)
    assert [(i["product_id"], i["quantity"]) for i in ledger.by_session(still_open)["items"]][0] == ("walden", 1)


def test_checking_out_again_after_back_expires_the_first_session(shopper):
    shopper.add("walden")
    first = shopper.session_id(shopper.checkout())
    second = shopper.session_id(shopper.checkout())
    assert shopper.standin.get(first)["status"] == "expired"
    assert open_sessions(shopper) == [second]
    assert shopper.shop.orders.ledger.by_session(first)["status"] == "expired"


def test_too_many_checkouts_from_one_browser_get_a_429_page_with_retry_after(make_shopper):
    shopper = make_shopper(checkout_limit=3)
    shopper.add("walden")
    for _ in range(3):
        shopper.checkout()
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=429)
    assert page.headers["Retry-After"] == "60"
    assert "Too many checkouts were started from here in the last minute. Please wait a minute" in page.text
    sessions = shopper.shop.orders.stripe.v1.checkout.sessions.list({"limit": 100}).data
    assert len(sessions) == 3  # the refused click made no session at Stripe
    other = make_shopper(checkout_limit=3)  # another browser on the same shop is not affected
    other.add("walden")
    other.checkout()


def at(shopper, address, forwarded=None):
    """A new browser (a fresh cookie jar, as a script makes one) of this shop, at a client address."""
    browser = type(shopper)(shopper.app)
    browser.extra_environ.update({"REMOTE_ADDR": address, **({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {})})
    return browser


def test_an_address_limit_counts_the_checkouts_of_every_browser_at_that_address(make_shopper):
    shopper = make_shopper(address_checkout_limit=2)
    for _ in range(2):
        at(shopper, "203.0.113.7").checkout(product_id="walden")
    late = at(shopper, "203.0.113.7")
    page = late.post("/checkout", {"csrf_token": late.csrf(), "product_id": "walden"}, status=429)
    assert page.headers["Retry-After"] == "60" and "wait a minute" in page.text
    assert len(shopper.shop.orders.stripe.v1.checkout.sessions.list({"limit": 100}).data) == 2
    at(shopper, "198.51.100.1").checkout(product_id="walden")  # another address is not affected
    at(shopper, "::ffff:198.51.100.1").checkout(product_id="walden")  # the same IPv4 address, written as IPv6
    third = at(shopper, "198.51.100.1")
    third.post("/checkout", {"csrf_token": third.csrf(), "product_id": "walden"}, status=429)
    for address in ("2001:db8:1:2::1", "2001:db8:1:2::ffff"):  # one IPv6 subscriber's /64 is one address
        at(shopper, address).checkout(product_id="walden")
    again = at(shopper, "2001:db8:1:2::abcd")
    again.post("/checkout", {"csrf_token": again.csrf(), "product_id": "walden"}, status=429)


def test_clicks_from_one_address_at_the_same_moment_get_no_more_than_its_limit(make_shopper):
    shopper = make_shopper(address_checkout_limit=3)
    browsers = [at(shopper, "203.0.113.7") for _ in range(8)]
    tokens = [b.csrf() for b in browsers]
    answers = together(8, lambda i: browsers[i].post("/checkout", {"csrf_token": tokens[i], "product_id": "walden"},
                                                     expect_errors=True))
    assert sorted(a.status_int for a in answers) == [303] * 3 + [429] * 5


def test_without_an_address_limit_many_browsers_at_one_address_all_check_out(make_shopper):
    shopper = make_shopper()  # the default: a sale's shoppers often share one address
    for _ in range(shopper.shop.config.checkout_limit + 2):
        at(shopper, "203.0.113.7").checkout(product_id="walden")
    assert shopper.shop.orders.ledger.one("SELECT COUNT(client) AS n FROM orders")["n"] == 0  # no address kept


def test_behind_the_trusted_proxy_the_address_it_names_is_counted_and_no_other(make_shopper):
    shopper = make_shopper(address_checkout_limit=1, trusted_proxy="10.0.0.2")
    at(shopper, "10.0.0.2", "203.0.113.7").checkout(product_id="walden")
    at(shopper, "10.0.0.2", "198.51.100.1").checkout(product_id="walden")  # another shopper behind the same proxy
    late = at(shopper, "10.0.0.2", "1.2.3.4, 203.0.113.7")  # what came before the proxy's entry, anyone can write
    late.post("/checkout", {"csrf_token": late.csrf(), "product_id": "walden"}, status=429)
    direct = at(shopper, "192.0.2.9", "198.51.100.77")  # not from the proxy: its header is not believed
    direct.checkout(product_id="walden")
    again = at(shopper, "192.0.2.9", "198.51.100.78")
    again.post("/checkout", {"csrf_token": again.csrf(), "product_id": "walden"}, status=429)


def test_a_port_the_proxy_adds_to_the_address_makes_no_new_client(make_shopper):
    shopper = make_shopper(address_checkout_limit=1, trusted_proxy="10.0.0.2")
    at(shopper, "10.0.0.2", "203.0.113.7:51234").checkout(product_id="walden")  # as some cloud balancers write it
    late = at(shopper, "10.0.0.2", "203.0.113.7:51235")
    late.post("/checkout", {"csrf_token": late.csrf(), "product_id": "walden"}, status=429)
    at(shopper, "10.0.0.2", "[2001:db8:1:2::1]:443").checkout(product_id="walden")
    v6 = at(shopper, "10.0.0.2", "[2001:db8:1:2::9]:444")
    v6.post("/checkout", {"csrf_token": v6.csrf(), "product_id": "walden"}, status=429)


def test_reloading_an_unpaid_confirmation_costs_stripe_about_one_call_a_second(slow_shopper):
    shopper = slow_shopper
    shopper.add("walden")
    session_id = shopper.session_id(shopper.checkout())
    browser, before = same_browser(shopper), Counter(shopper.standin.calls)
    pages = together(30, lambda i: browser().get(f"/success?session_id={session_id}"))
    assert all("not finished" in p.text for p in pages)
    reads = sum((Counter(shopper.standin.calls) - before).values())
    assert 1 <= reads <= 2  # 30 concurrent views share one answer (two if a second passed between them)


def test_a_paid_confirmation_is_served_from_the_ledger_without_calling_stripe(shopper):
    shopper.add("walden")
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id)
    first = shopper.get(f"/success?session_id={session_id}")
    before = Counter(shopper.standin.calls)
    again = shopper.get(f"/success?session_id={session_id}")
    assert sum((Counter(shopper.standin.calls) - before).values()) == 0
    assert "Thank you for your order" in again.text
    for text in ("Walden", "Total charged", shopper.shop.orders.ledger.by_session(session_id)["payment_intent"]):
        assert text in first.text and text in again.text
