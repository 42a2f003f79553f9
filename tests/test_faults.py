"""Stripe faults at every call site: nothing lost, nothing charged or fulfilled twice, no 5xx the shopper can't act on.

Faults come from the stand-in (standin/faults.py): 500 api_error, 429 rate_limit, 429 lock_timeout, a reset
connection (the request ran, the answer was lost) and a delay past the shop's timeout (same). The SDK retries
what Stripe says is safe to retry, with the request's idempotency key: https://docs.stripe.com/error-low-level
and the shop tries a rate-limited call three times: https://docs.stripe.com/rate-limits
"""

import os
import shutil
import sys
import time
import types
from urllib.parse import urlsplit

import pytest
import stripe

from standin import ASYNC_OK
from tests.conftest import event, free_port, handoff, pay, post_event, same_browser
from webshop import merchant, payments
from webshop.settings import load_config

CREATE = "POST /v1/checkout/sessions"
RETRIEVE = "GET /v1/checkout/sessions/{id}"
LIST = "GET /v1/checkout/sessions"
REFUND = "POST /v1/refunds"
# The shop's base URL in these tests: a loopback port nothing listens on, so the merchant commands' "is the shop
# running?" probe is refused at once (and never resolves a name).
BASE = "http://127.0.0.1:9"
RETRIED = ("500", "reset", "delay", "lock_timeout")  # the SDK retries these with the same idempotency key
ALL = RETRIED + ("429",)


def requests_of_one_call(kind, retries):
    """How many requests one payments.call sends when every answer is `kind`: the SDK's own tries, or for a rate
    limit (which the SDK never retries) the shop's 3. A lock timeout, also a 429, the SDK retries and the shop not."""
    return 3 if kind == "429" else retries + 1


@pytest.fixture(autouse=True)
def later(monkeypatch):
    """The SDK sleeps 0.5 s × 2^n between retries, the shop 0.5-1 s and 1-2 s after a 429; tests need not wait.
    later(seconds) moves the shop's Stripe clock on instead (the success page shares a read for a second)."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.002)
    offset = [0.0]

    def move_on(seconds):
        offset[0] += seconds
    monkeypatch.setattr(payments, "time", types.SimpleNamespace(**{
        **vars(time), "sleep": move_on, "monotonic": lambda: time.monotonic() + offset[0]}))
    return move_on


@pytest.fixture
def make(make_shopper):
    """A shopper on a shop with a short Stripe timeout, whose stand-in delivers webhooks straight to it."""
    def factory(retries=2, **overrides):
        shopper = make_shopper(base_url=BASE, stripe_max_retries=retries, stripe_timeout=0.2, **overrides)
        shopper.standin.faults.clear()

        def deliver(url, body, headers):
            return shopper.post(urlsplit(url).path, body, headers=headers, expect_errors=True).status_int
        shopper.standin.deliver = deliver
        shopper.standin.webhook_retry_base = 0
        return shopper
    return factory


def product(shopper, index=0):
    return shopper.shop.catalog().products[index].id


def ledger(shopper):
    return shopper.shop.orders.ledger


def sessions_for(shopper, order_id):
    """Every Checkout Session Stripe holds for an order (read through the API, not the ledger)."""
    listed = shopper.shop.orders.stripe.v1.checkout.sessions.list({"limit": 100})
    return [s for s in listed.auto_paging_iter() if (s.metadata or {}).to_dict().get("order_id") == order_id]


def only_order(shopper):
    orders = ledger(shopper).list()
    assert len(orders) == 1, orders
    return orders[0]


def inject(shopper, endpoint, kind, times=1):
    # The delay is longer than the shop's 0.2 s timeout, so the in-process client gives up at the timeout.
    shopper.standin.faults.add(endpoint, kind, times=times, delay=5 if kind == "delay" else None)


def run(shopper, *argv, retries=2):
    """`python shop.py ARGV` on the shop's DATA_DIR and database, talking to the shop's own stand-in (and its
    injected faults); returns the exit code."""
    config = shopper.shop.config

    def same_shop(overrides):
        return load_config({"data_dir": str(config.data_dir), "database_url": config.database_url, "base_url": BASE,
                            "standin": shopper.standin, "stripe_max_retries": retries, "stripe_timeout": 0.2})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merchant, "load_config", same_shop)
        return merchant.main(list(argv))


def paid_session(shopper):
    """Check out one product and pay it on the stand-in; its webhooks stay queued."""
    shopper.add(product(shopper))
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id)
    return session_id


# -- faults for manual runs: STANDIN_FAULTS (the stand-in's own tests cover each kind) ------------------------------------------------------------------------------

def test_the_shop_picks_up_standin_faults_from_the_environment(make_shopper, monkeypatch):
    monkeypatch.setenv("STANDIN_FAULTS", f"{CREATE}=429*3")  # every try of one call
    shopper = make_shopper()
    shopper.add(product(shopper))
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    assert "not answering" in page.text
    assert shopper.checkout().location.startswith(f"{shopper.shop.config.base_url}/offline-checkout/")


# -- checkout create -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", RETRIED)
def test_a_retried_checkout_start_makes_exactly_one_session(make, kind):
    shopper = make(retries=2)
    shopper.add(product(shopper))
    inject(shopper, CREATE, kind)
    to_stripe = shopper.checkout()
    order = only_order(shopper)
    sessions = sessions_for(shopper, order["id"])
    assert [s.id for s in sessions] == [shopper.session_id(to_stripe)]
    assert shopper.standin.calls[CREATE] == 2
    assert order["status"] == "open" and order["session_id"] == sessions[0].id


def test_the_shops_own_retry_after_a_rate_limit_reuses_the_orders_key_so_one_session_is_made(make):
    """The create ran, its answer was lost, the SDK's retry met a 429: the shop tries again, and only the order's
    own idempotency key (not a new one the SDK would make) lets Stripe answer with the session it made."""
    shopper = make(retries=1)
    shopper.add(product(shopper))
    inject(shopper, CREATE, "reset")
    inject(shopper, CREATE, "429")
    to_stripe = shopper.checkout()
    order = only_order(shopper)
    assert shopper.standin.calls[CREATE] == 3
    assert [s.id for s in sessions_for(shopper, order["id"])] == [shopper.session_id(to_stripe)]
    assert order["status"] == "open" and order["session_id"] == shopper.session_id(to_stripe)


def test_a_rate_limited_call_is_tried_again_after_a_growing_wait_with_jitter(make, monkeypatch):
    shopper = make(retries=0)
    shopper.add(product(shopper))
    waits = []
    monkeypatch.setattr(payments.time, "sleep", waits.append)  # the shop's Stripe clock (see `later`)
    inject(shopper, CREATE, "429", times=2)
    shopper.checkout()
    assert shopper.standin.calls[CREATE] == 3 and len(waits) == 2
    assert 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2


@pytest.mark.parametrize("kind", ALL)
def test_stripe_unreachable_at_checkout_keeps_cart_and_order(make, kind):
    shopper = make(retries=1)
    shopper.add(product(shopper), 2)
    cart = shopper.cart_cookie()
    inject(shopper, CREATE, kind, times=10)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    assert page.headers["Retry-After"] and page.text.count("Your cart is kept") == 1
    assert "Traceback" not in page.text and "Error" not in page.headers.get("Set-Cookie", "")
    assert shopper.cart_cookie() == cart
    assert "Update" in shopper.get("/cart").text  # the cart page still lists the items
    order = only_order(shopper)
    assert order["status"] == "checkout_failed" and order["session_id"] is None
    assert [h["status"] for h in ledger(shopper).history(order["id"])][-1] == "checkout_failed"
    assert shopper.standin.calls[CREATE] == requests_of_one_call(kind, retries=1)
    # The resets and timeouts reached Stripe: one session (idempotency), which reconcile ties to the order.
    made = sessions_for(shopper, order["id"])
    assert len(made) == (1 if kind in ("reset", "delay") else 0)
    shopper.standin.faults.clear()
    assert run(shopper, "reconcile", "--since", "1h") == 0
    order = ledger(shopper).get(order["id"])
    if made:  # never shown to the shopper, who may pay a newer one: expired, never offered
        assert order["status"] == "expired" and order["session_id"] == made[0].id
        assert shopper.standin.get(made[0].id)["status"] == "expired"
    else:
        assert order["status"] == "checkout_failed"
    # The shopper tries again once Stripe answers: a new order and a session, the cart unchanged.
    again = shopper.checkout()
    assert ledger(shopper).by_session(shopper.session_id(again))["status"] == "open"
    assert shopper.cart_cookie() == cart


def test_a_key_stripe_refuses_is_logged_as_the_merchants_to_fix_and_the_shopper_gets_the_503(
        make, monkeypatch, caplog):
    """A revoked key, or a restricted key without a permission, is not an outage: the log names the setting."""
    from standin import checkout
    from standin.errors import StripeError
    shopper = make()
    shopper.add(product(shopper))

    def create(ctx, params):
        raise StripeError(401, "invalid_request_error", "Invalid API Key provided: sk_test_****oops")
    monkeypatch.setattr(checkout, "create", create)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    assert payments.UNAVAILABLE in page.text and "API Key" not in page.text
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["Stripe refused the secret key (AuthenticationError): check STRIPE_SECRET_KEY; a restricted "
                      "key needs write access to Checkout Sessions, Coupons, Promotion codes and Refunds, and read "
                      "access to PaymentIntents, Disputes and Events"]


def test_a_buy_now_that_stripe_does_not_answer_speaks_of_no_cart_when_there_is_none(make):
    shopper = make()
    inject(shopper, CREATE, "500", times=10)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": product(shopper)}, status=503)
    assert payments.UNAVAILABLE in page.text and "Your cart is kept" not in page.text  # it holds nothing
    assert "Back to your cart" not in page.text and page.html.find("main").find("a", href="/")  # to the shop


def test_an_id_stripe_does_not_know_in_the_checkout_is_a_refusal_not_a_missing_checkout(make, monkeypatch, caplog):
    """Stripe answers resource_missing for an unknown id among the parameters (a catalog's tax code, say)."""
    from standin import checkout
    from standin.errors import no_such
    shopper = make()
    shopper.add(product(shopper))

    def create(ctx, params):
        raise no_such("tax_code", "txcd_12345678", "line_items[0][price_data][product_data][tax_code]")
    monkeypatch.setattr(checkout, "create", create)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=502)
    assert payments.REFUSED in page.text and "could not find" not in page.text
    assert only_order(shopper)["status"] == "checkout_failed" and shopper.cart_cookie()
    # every shopper meets it until the merchant acts: a warning, with Stripe's words
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("refused POST /checkout: 502 (No such")
            ] == ["WARNING"]


@pytest.mark.parametrize("answer", [{"object": "unexpected", "data": "x"}, {"id": "cs_test_x", "url": None}])
def test_an_answer_to_the_checkout_that_is_no_session_is_a_refusal_not_a_crash(make, monkeypatch, answer):
    """A proxy's or a mock's answer in Stripe's place: the shopper's cart is kept, the order marked failed (no copies
    held), never a 500 or a 303 to nowhere."""
    from standin import checkout
    shopper = make()
    shopper.add(product(shopper))
    monkeypatch.setattr(checkout, "create", lambda ctx, params: answer)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=502)
    assert payments.REFUSED in page.text and "Your cart is kept" in page.text
    assert only_order(shopper)["status"] == "checkout_failed" and shopper.cart_cookie()


def test_a_session_stripe_already_gave_another_order_is_a_refusal_not_a_crash(make, monkeypatch):
    """stripe-mock answers every create with the same example session; Stripe itself never does."""
    first = make()
    second = type(first)(first.app)  # another browser
    first.add(product(first))
    session = payments.create_session(first.shop.orders.stripe, {"mode": "payment", "line_items": [{"price_data": {
        "currency": "usd", "unit_amount": 100, "product_data": {"name": "x"}}, "quantity": 1}],
        "success_url": BASE + "/success?session_id={CHECKOUT_SESSION_ID}"}, "ord_example")
    monkeypatch.setattr(payments, "create_session", lambda *args: session)
    first.checkout()
    second.add(product(second))
    page = second.post("/checkout", {"csrf_token": second.csrf()}, status=502)
    assert payments.REFUSED in page.text
    assert sorted(o["status"] for o in ledger(first).list()) == ["checkout_failed", "open"]
    assert ledger(first).by_session(session.id)["status"] == "open"  # the first order keeps its checkout


@pytest.mark.parametrize("change", [{"currency": "eur"}, {"id": "cs_test_another"}])
def test_a_session_read_that_is_not_this_orders_changes_nothing_and_never_tells_a_payer_refused(
        make, monkeypatch, change, caplog):
    """stripe-mock answers any session id with its one example: another session's, or in other money. The shopper,
    who may have paid, is told the payment is being confirmed ("refused" would invite paying again)."""
    shopper = make()
    shopper.add(product(shopper))
    to_stripe = shopper.checkout()
    pay(shopper, to_stripe)
    read, session_id = payments.retrieve_session, shopper.session_id(to_stripe)
    monkeypatch.setattr(payments, "retrieve_session", lambda *args: {**read(*args), **change})
    page = shopper.get("/success", {"session_id": session_id}, status=200)
    assert "Confirming your payment" in page.text and payments.REFUSED not in page.text
    assert only_order(shopper)["status"] == "open" and handoff(shopper) == []
    assert f"confirmation of {session_id} not shown: Stripe's answer for {session_id} is another session's" in \
        caplog.text


def test_a_session_read_without_a_currency_is_shown_in_the_orders_own(make, monkeypatch):
    """stripe-mock's example session has `currency: null`: the confirmation page shows the order's money."""
    shopper = make()
    shopper.add(product(shopper))
    to_stripe = shopper.checkout()
    pay(shopper, to_stripe)
    read, session_id = payments.retrieve_session, shopper.session_id(to_stripe)
    monkeypatch.setattr(payments, "retrieve_session", lambda *args: {**read(*args), "currency": None})
    page = shopper.get("/success", {"session_id": session_id})
    total = only_order(shopper)["amount_total"]
    assert only_order(shopper)["status"] == "paid" and f"${total // 100}.{total % 100:02d}" in page.text


def test_a_checkout_reconcile_claimed_while_its_click_waited_on_stripe_still_goes_to_pay(make, monkeypatch):
    shopper = make()
    shopper.add(product(shopper))
    create = payments.create_session

    def found_meanwhile(*args):  # reconcile lists the session and claims it by its metadata before the click can
        session = create(*args)
        assert shopper.shop.orders.order_for(session.id, session.to_dict(), "reconcile")["session_id"] == session.id
        return session
    monkeypatch.setattr(payments, "create_session", found_meanwhile)
    to_stripe = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=303)
    order = only_order(shopper)
    assert order["status"] == "open" and shopper.session_id(to_stripe) == order["session_id"]


def test_a_failed_checkout_whose_session_is_paid_is_fulfilled_once(make):
    """The create call reached Stripe but its answer was lost; the shopper never saw the session, yet it is paid."""
    shopper = make(retries=0)
    shopper.add(product(shopper))
    inject(shopper, CREATE, "reset")
    shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    order = only_order(shopper)
    (session,) = sessions_for(shopper, order["id"])
    shopper.standin.pay(session.id)
    shopper.standin.deliver_pending()
    order = ledger(shopper).get(order["id"])
    assert order["status"] == "paid" and order["session_id"] == session.id
    assert run(shopper, "reconcile", "--since", "1h") == 0
    assert [line["order_id"] for line in handoff(shopper)] == [order["id"]]


@pytest.mark.parametrize("kind", ["500", "400"])  # down, or refusing to expire what it says is still open
def test_a_session_stripe_cannot_expire_is_never_left_payable_beside_a_new_one(make, kind):
    """A checkout left with "Back" (or a click's at the same moment) is expired at Stripe before a new session is
    made; while Stripe cannot expire it, no new one is made, and the next try expires it first."""
    shopper = make(retries=0)
    shopper.add(product(shopper))
    first = shopper.session_id(shopper.checkout())
    inject(shopper, "POST /v1/checkout/sessions/{id}/expire", kind)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    assert "Your cart is kept" in page.text and shopper.standin.calls[CREATE] == 1  # no second session
    assert [o["status"] for o in ledger(shopper).list()] == ["checkout_failed", "open"]  # open, as at Stripe
    assert first in shopper.get("/cart").text  # still offered: "Continue your payment"
    again = shopper.session_id(shopper.checkout())  # Stripe answers again: the first is expired, then a new one
    assert shopper.standin.get(first)["status"] == "expired" and shopper.standin.get(again)["status"] == "open"
    assert ledger(shopper).by_session(first)["status"] == "expired"


# -- success page --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ALL)
def test_success_page_while_stripe_is_unreachable_says_confirming(make, later, kind):
    shopper = make(retries=1)
    session_id = paid_session(shopper)
    cart = shopper.cart_cookie()
    inject(shopper, RETRIEVE, kind, times=10)
    page = shopper.get("/success", {"session_id": session_id}, status=200)
    text = page.text.lower()
    assert "confirming your payment" in text and "reload" in text
    for word in ("failed", "did not go through", "declined", "thank you"):
        assert word not in text
    assert shopper.cart_cookie() == cart
    assert ledger(shopper).by_session(session_id)["fulfilled_at"] is None
    shopper.standin.faults.clear()
    later(1)  # the shopper reloads: the failed read is not shared any longer
    page = shopper.get("/success", {"session_id": session_id})
    assert "Thank you" in page.text
    assert len(handoff(shopper)) == 1


@pytest.mark.parametrize("kind", RETRIED)
def test_success_page_rides_out_one_fault(make, kind):
    shopper = make(retries=2)
    session_id = paid_session(shopper)
    inject(shopper, RETRIEVE, kind)
    assert "Thank you" in shopper.get("/success", {"session_id": session_id}).text
    assert len(handoff(shopper)) == 1


# -- webhook: the session re-read inside fulfil --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ALL)
def test_webhook_answers_5xx_while_stripe_is_unreachable_then_fulfils_once(make, kind):
    shopper = make(retries=1)
    session_id = paid_session(shopper)
    inject(shopper, RETRIEVE, kind, times=requests_of_one_call(kind, retries=1))  # what one delivery meets
    results = dict(shopper.standin.deliver_pending())
    completed = [r["event_id"] for r in shopper.standin.webhook_log() if r["type"] == "checkout.session.completed"]
    assert completed and all(results[e] >= 500 for e in completed), results
    order = ledger(shopper).by_session(session_id)
    assert order["fulfilled_at"] is None and order["status"] == "open"
    assert not any(ledger(shopper).seen_event(e) for e in completed)  # not recorded, so the retry applies it
    # Stripe sends it again; now it applies, exactly once, and duplicates change nothing.
    results = dict(shopper.standin.deliver_pending(duplicate=True))
    assert results and all(200 <= s < 300 for s in results.values()), results
    order = ledger(shopper).by_session(session_id)
    assert order["status"] == "paid"
    assert [line["session_id"] for line in handoff(shopper)] == [session_id]


def test_the_confirming_page_does_not_count_the_books_being_paid_for_but_one_added_since(make):
    shopper = make(retries=0)
    first, second = shopper.shop.catalog().products[:2]
    shopper.add(first.id)
    session_id = shopper.session_id(shopper.checkout())
    shopper.add(second.id)  # Back from Stripe's page, one more book, then the first checkout is paid in its tab
    shopper.standin.pay(session_id)
    inject(shopper, RETRIEVE, "500", times=3)
    page = shopper.get("/success", {"session_id": session_id})
    assert "confirming your payment" in page.text.lower()
    assert page.html.select_one(".count").text == "(1)"
    shopper.standin.faults.clear()
    assert first.name in shopper.get("/cart").text  # the cookie keeps it until the payment is known


def test_the_confirming_page_of_a_processing_bank_payment_counts_a_copy_added_since(make):
    shopper = make(retries=0)
    book = shopper.shop.catalog().products[0]
    shopper.add(book.id)
    session_id = shopper.session_id(shopper.checkout())
    shopper.add(book.id)  # Back from Stripe's page, one more copy, then the checkout is paid by bank in its tab
    shopper.standin.pay(session_id, card=ASYNC_OK)
    shopper.standin.deliver_pending()  # the order awaits the bank payment: its copy is hidden in the cart
    inject(shopper, RETRIEVE, "500", times=3)
    page = shopper.get("/success", {"session_id": session_id})
    assert "confirming your payment" in page.text.lower()
    assert page.html.select_one(".count").text == "(1)"


# -- reconcile finishes the job --------------------------------------------------------------------------------------

def test_reconcile_fulfils_what_webhooks_and_success_page_could_not(make):
    shopper = make(retries=0)
    session_id = paid_session(shopper)
    inject(shopper, RETRIEVE, "500", times=3)
    assert "confirming" in shopper.get("/success", {"session_id": session_id}).text
    assert any(s >= 500 for _, s in shopper.standin.deliver_pending())
    shopper.standin.drop_pending_events()  # Stripe gave up on the endpoint
    shopper.standin.faults.clear()
    inject(shopper, LIST, "500")
    assert run(shopper, "reconcile", "--since", "1h", retries=0) == 3  # unreachable: says so, changes nothing
    assert ledger(shopper).by_session(session_id)["fulfilled_at"] is None
    assert run(shopper, "reconcile", "--since", "1h") == 0
    order = ledger(shopper).by_session(session_id)
    assert order["status"] == "paid" and order["fulfilled_at"]
    assert run(shopper, "reconcile", "--since", "1h") == 0
    assert "Thank you" in shopper.get("/success", {"session_id": session_id}).text
    assert [line["session_id"] for line in handoff(shopper)] == [session_id]


def test_reconcile_expires_a_lost_clicks_session_that_stripe_would_not_expire_at_the_time(make, capsys, two_clicks):
    shopper = make(retries=0)
    shopper.add(product(shopper))
    inject(shopper, "POST /v1/checkout/sessions/{id}/expire", "500")  # the one expire call: the losing click's
    token, browser = shopper.csrf(), same_browser(shopper)
    lost_race, won = two_clicks(lambda: browser().post("/checkout", {"csrf_token": token}, status=303))
    winner = shopper.session_id(won)
    assert lost_race.location == "/cart"  # the click that lost the race
    (lost,) = [s.id for s in sessions_for(shopper, ledger(shopper).list(status="expired")[0]["id"])]
    assert shopper.standin.get(lost)["status"] == "open"  # Stripe did not answer its expiry
    inject(shopper, "POST /v1/checkout/sessions/{id}/expire", "400")  # then refused it once: said, the rest goes on
    assert run(shopper, "reconcile", "--since", "1h") == 0
    assert f"Stripe did not expire {lost}, which is still open" in capsys.readouterr().out
    assert shopper.standin.get(lost)["status"] == "open"
    assert run(shopper, "reconcile", "--since", "1h") == 0
    assert f"its checkout {lost} was still open at Stripe: now expired" in capsys.readouterr().out
    assert shopper.standin.get(lost)["status"] == "expired" and shopper.standin.get(winner)["status"] == "open"
    assert ledger(shopper).by_session(lost)["status"] == "expired"


@pytest.mark.parametrize("kind", RETRIED)
def test_reconcile_rides_out_faults_on_its_own_calls(make, kind):
    shopper = make()
    session_id = paid_session(shopper)
    shopper.standin.drop_pending_events()
    inject(shopper, LIST, kind)
    inject(shopper, RETRIEVE, kind)
    inject(shopper, "GET /v1/disputes", kind)
    assert run(shopper, "reconcile", "--since", "1h") == 0
    assert ledger(shopper).by_session(session_id)["status"] == "paid"
    assert len(handoff(shopper)) == 1


def test_reconcile_says_so_when_stripe_fails_while_it_reads_disputes(make, capsys):
    shopper = make(retries=0)
    session_id = paid_session(shopper)
    shopper.standin.drop_pending_events()
    inject(shopper, "GET /v1/disputes", "500")
    assert run(shopper, "reconcile", "--since", "1h", retries=0) == 3
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert ledger(shopper).by_session(session_id)["status"] == "paid"  # what came before is kept
    assert run(shopper, "reconcile", "--since", "1h") == 0  # and running it again is safe
    assert len(handoff(shopper)) == 1


# -- merchant refund ---------------------------------------------------------------------------------------------------

def refunds_for(shopper, order):
    return shopper.shop.orders.stripe.v1.refunds.list({"payment_intent": order["payment_intent"], "limit": 100}).data


@pytest.mark.parametrize("kind", RETRIED)
def test_a_retried_refund_refunds_once(make, kind):
    shopper = make()
    session_id = paid_session(shopper)
    shopper.standin.deliver_pending()
    order = ledger(shopper).by_session(session_id)
    inject(shopper, REFUND, kind)
    assert run(shopper, "refund", order["id"]) == 0
    assert shopper.standin.calls[REFUND] == 2
    (refund,) = refunds_for(shopper, order)
    assert refund.amount == order["amount_total"]


@pytest.mark.parametrize("kind", ALL)
def test_refund_while_stripe_is_unreachable_can_be_run_again_safely(make, kind, capsys):
    shopper = make()
    session_id = paid_session(shopper)
    shopper.standin.deliver_pending()
    order = ledger(shopper).by_session(session_id)
    inject(shopper, REFUND, kind, times=10)
    assert run(shopper, "refund", order["id"], "--amount", "500", retries=1) == 3
    said = capsys.readouterr().err  # Stripe's 429 is an answer: it did not do it
    assert ("Stripe answered 429" if kind in ("429", "lock_timeout") else "outcome is unknown") in said
    shopper.standin.faults.clear()
    # Running it again after a lost answer replays the refund Stripe made, never a second one.
    assert run(shopper, "refund", order["id"], "--amount", "500") == 0
    assert [r.amount for r in refunds_for(shopper, order)] == [500]
    shopper.standin.deliver_pending()
    after = ledger(shopper).get(order["id"])
    assert after["status"] == "partially_refunded" and after["amount_refunded"] == 500


# -- over real sockets: the shop's own HTTP client against `python -m standin` --------------------------------------

def test_a_slow_stripe_hits_the_timeout_and_a_reset_connection_is_retried_once(make_shopper, spawn, tmp_path):
    """STRIPE_TIMEOUT and retries with the requests-based client the shop uses in test and live mode."""
    key, whsec, port = "sk_test_" + "f" * 24, "whsec_" + "f" * 32, free_port()
    url = f"http://127.0.0.1:{port}"
    spawn([sys.executable, "-m", "standin", "--port", str(port), "--data-dir", str(tmp_path / "standin"),
           "--public-url", url, "--webhook-secret", whsec], port,
          env={"STANDIN_FAULTS": f"{CREATE}=reset*1;{RETRIEVE}=delay:3*3"})
    shopper = make_shopper(stripe_secret_key=key, stripe_api_base=url, stripe_webhook_secret=whsec,
                           stripe_timeout=0.5, stripe_max_retries=1)
    shopper.add(product(shopper))
    to_stripe = shopper.checkout()  # the first POST's connection is dropped; the retry replays the session
    order = only_order(shopper)
    assert [s.id for s in sessions_for(shopper, order["id"])] == [shopper.session_id(to_stripe)]
    # Both tries give up at the 0.5 s timeout: had either waited for the server's answer (after 3 s, the
    # session still open), the page would show the open checkout instead of "confirming".
    page = shopper.get("/success", {"session_id": shopper.session_id(to_stripe)})
    assert "confirming your payment" in page.text.lower()


# -- the database down -------------------------------------------------------------------------------------------------
def test_with_the_database_down_pages_say_so_with_a_503_and_the_health_check_answers_at_once(
        make_shopper, postgres_url):
    """A PostgreSQL outage is not a bug: a 503 with Retry-After and words for the shopper, not a 500; /healthz answers
    503 naming the database within its own 2 s, before a monitor's timeout, not after the pool's 30 s."""
    import threading

    import psycopg
    role = "shop_test_down_" + free_port().__str__()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    try:
        shopper = make_shopper(database_url=postgres_url.replace("postgres@", f"{role}@", 1), admin_password="pw")
        token, ledger = shopper.csrf(), shopper.shop.orders.ledger
        assert shopper.get("/healthz").status_int == 200
        shopper.add("walden")
        to_stripe = shopper.post("/checkout", {"csrf_token": token}, status=303)  # the cart's cookie names its order
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # the server turns the shop away from now on
            admin.execute(f"ALTER ROLE {role} NOLOGIN")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        answers = []
        health = threading.Thread(target=lambda: answers.append(shopper.get("/healthz", status=503)), daemon=True)
        health.start()
        health.join(15)  # the pool alone would hold it for 30 s
        assert answers and answers[0].text.strip().endswith("database: PoolTimeout")
        ledger.db.pool.timeout = 1  # pages wait the pool's 30 s for a connection; not here
        page = shopper.post("/checkout", {"csrf_token": token, "product_id": "walden"}, status=503)
        assert "cannot reach its order records" in page.text and "Your cart is kept" in page.text
        assert page.headers["Retry-After"] == "30" and page.html.title.text.startswith("Temporarily unavailable")
        cart = shopper.get("/cart", status=503)  # the page itself, not a plain-text fallback after a second wait
        assert cart.content_type == "text/html" and "cannot reach its order records" in cart.text
        assert cart.html.find("a", class_="cartlink").text == "Cart"  # its count unknown without the database
        orders = shopper.get("/admin", headers={"Authorization": "Basic YWRtaW46cHc="}, status=503)  # admin:pw
        assert "cannot reach its order records" in orders.text and "cart is kept" not in orders.text
        session = {"id": shopper.session_id(to_stripe), "object": "checkout.session"}
        hook = post_event(shopper, event("checkout.session.completed", session))  # Stripe sends it again later
        assert hook.status_int == 503 and "order records" in hook.json["error"] and "cart" not in hook.json["error"]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            admin.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")  # the shop's tables, dropped with the schema
            admin.execute(f"DROP ROLE {role}")


def test_a_read_only_ledger_is_a_503_for_checkouts_and_the_health_check_says_writes_fail(make_shopper, monkeypatch):
    """Reads still work on a file made read-only (a filesystem remounted so) or a full disk: /healthz must not say ok
    while no order can be written."""
    shopper = make_shopper()
    shopper.add("walden")
    ledger, token = shopper.shop.orders.ledger, shopper.csrf()
    with ledger.db.read() as c:  # this thread's connection, which the app's requests use here: SQLite refuses writes
        c.execute("PRAGMA query_only = ON")
    page = shopper.post("/checkout", {"csrf_token": token}, status=503)
    assert "cannot reach its order records" in page.text and "Your cart is kept" in page.text
    health = shopper.get("/healthz", status=503).text
    assert "database: a write failed 0 s ago (OperationalError)" in health, health
    with ledger.db.read() as c:
        c.execute("PRAGMA query_only = OFF")
    monkeypatch.setattr("webshop.ledger.WRITE_FAILED_FOR", 0)  # writable again, and time has passed
    assert shopper.get("/healthz").text == "ok\n"


def test_a_read_only_postgresql_is_a_503_for_checkouts_and_the_health_check_says_writes_fail(
        make_shopper, postgres_url):
    """A standby after a failover, say: it answers reads, and refuses every write (SQLSTATE 25006)."""
    import psycopg
    role = "shop_test_ro_" + str(free_port())
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    try:
        shopper = make_shopper(database_url=postgres_url.replace("postgres@", f"{role}@", 1))
        shopper.add("walden")
        token = shopper.csrf()
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # its sessions from now on are read-only
            admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        page = shopper.post("/checkout", {"csrf_token": token}, status=503)
        assert "cannot reach its order records" in page.text and "Your cart is kept" in page.text
        health = shopper.get("/healthz", status=503).text
        assert "database: a write failed 0 s ago (ReadOnlySqlTransaction)" in health, health
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            admin.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            admin.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_ledger_file_deleted_or_replaced_under_the_running_shop_is_never_written_into(make_shopper, how):
    """Orders written into a deleted file (the connections still open on it) would vanish at the next restart."""
    shopper = make_shopper()
    shopper.add("walden")
    token, path = shopper.csrf(), shopper.shop.orders.ledger.db.path
    if how == "deleted":
        os.remove(path)
    else:  # a restore copied in place of the file in use
        os.replace(path, path + ".old")
        shutil.copy(path + ".old", path)
    page = shopper.post("/checkout", {"csrf_token": token}, status=503)
    assert "cannot reach its order records" in page.text and "Your cart is kept" in page.text
    assert shopper.get("/healthz", status=503).text.endswith("database: LedgerMoved\n")
    assert os.path.exists(path) == (how == "replaced")  # and no new, empty file made in its place


def test_sqlite_busy_or_locked_is_the_database_unavailable_and_a_missing_table_is_a_bug(tmp_path):
    import sqlite3

    from webshop.ledger import Ledger
    path = tmp_path / "busy.sqlite3"
    holder, waiter = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the wait
        with pytest.raises(sqlite3.OperationalError) as busy:
            waiter.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as bug:
            waiter.execute("SELECT * FROM no_such_table")
        assert Ledger.unavailable(busy.value) and not Ledger.unavailable(bug.value)
        assert not Ledger.unavailable(ZeroDivisionError())
    finally:
        holder.close()
        waiter.close()


def test_postgresql_no_connection_is_the_database_unavailable_and_a_limit_the_query_hit_is_a_bug(postgres_url):
    import psycopg

    from webshop.ledger import Ledger
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout=3)
    with psycopg.connect(postgres_url) as conn, pytest.raises(psycopg.OperationalError) as limit:
        conn.execute("SELECT " + ", ".join(["1"] * 1700))  # more columns than PostgreSQL allows: 54011
    assert Ledger.unavailable(refused.value) and not Ledger.unavailable(limit.value)
