"""Stripe faults at every call site: nothing lost, nothing charged or fulfilled twice, no 5xx the shopper can't act on.

Faults come from the stand-in (standin/faults.py): 500 api_error, 429 rate_limit, 429 lock_timeout, a reset
connection (the request ran, the answer was lost) and a delay past the shop's timeout (same). The SDK retries
what Stripe says is safe to retry, with the request's idempotency key: https://docs.stripe.com/error-low-level
"""

import argparse
import json
import time
from urllib.parse import urlsplit

import pytest
import stripe

import merchant
from settings import load_config

CREATE = "POST /v1/checkout/sessions"
RETRIEVE = "GET /v1/checkout/sessions/{id}"
LIST = "GET /v1/checkout/sessions"
REFUND = "POST /v1/refunds"
# The shop's base URL in these tests: a loopback port nothing listens on, so the merchant commands' "is the shop
# running?" probe is refused at once (and never resolves a name).
BASE = "http://127.0.0.1:9"
RETRIED = ("500", "reset", "delay", "lock_timeout")  # the SDK retries these with the same idempotency key
ALL = RETRIED + ("429",)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    """The SDK sleeps 0.5 s × 2^n between retries; tests need not wait."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.002)


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


def sessions_for(shopper, order_id):
    """Every Checkout Session Stripe holds for an order (read through the API, not the ledger)."""
    listed = shopper.shop.stripe.v1.checkout.sessions.list({"limit": 100})
    return [s for s in listed.auto_paging_iter() if (s.metadata or {}).to_dict().get("order_id") == order_id]


def only_order(shopper):
    orders = shopper.shop.ledger.list()
    assert len(orders) == 1, orders
    return orders[0]


def handoff(shopper):
    path = shopper.shop.fulfilment.path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def inject(shopper, endpoint, kind, times=1):
    # The delay is longer than the shop's 0.2 s timeout, so the in-process client gives up at the timeout.
    shopper.standin.faults.add(endpoint, kind, times=times, delay=5 if kind == "delay" else None)


def run(shopper, command, retries=2, **args):
    """A merchant command on the shop's DATA_DIR and stand-in, as `python shop.py <command>` runs it."""
    config = load_config({"data_dir": str(shopper.shop.config.data_dir), "base_url": BASE, "standin": shopper.standin,
                          "stripe_max_retries": retries, "stripe_timeout": 0.2})
    return merchant._command(getattr(merchant, command))(config, argparse.Namespace(**args))


def paid_session(shopper):
    """Check out one product and pay it on the stand-in; its webhooks stay queued."""
    shopper.add(product(shopper))
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id)
    return session_id


# -- faults for manual runs: STANDIN_FAULTS (the stand-in's own tests cover each kind) ------------------------------------------------------------------------------

def test_the_shop_picks_up_standin_faults_from_the_environment(make_shopper, monkeypatch):
    monkeypatch.setenv("STANDIN_FAULTS", f"{CREATE}=429*1")
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


@pytest.mark.parametrize("kind", ALL)
def test_stripe_unreachable_at_checkout_keeps_cart_and_order(make, kind):
    shopper = make(retries=1)
    shopper.add(product(shopper), 2)
    cart = shopper.cart_cookie()
    inject(shopper, CREATE, kind, times=5)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    assert page.headers["Retry-After"] and "Your cart is kept" in page.text
    assert "Traceback" not in page.text and "Error" not in page.headers.get("Set-Cookie", "")
    assert shopper.cart_cookie() == cart
    assert "Update" in shopper.get("/cart").text  # the cart page still lists the items
    order = only_order(shopper)
    assert order["status"] == "checkout_failed" and order["session_id"] is None
    assert [h["status"] for h in shopper.shop.ledger.history(order["id"])][-1] == "checkout_failed"
    expected = 1 if kind == "429" else 2  # the SDK never retries a rate limit
    assert shopper.standin.calls[CREATE] == expected
    # The resets and timeouts reached Stripe: one session (idempotency), which reconcile ties to the order.
    made = sessions_for(shopper, order["id"])
    assert len(made) == (1 if kind in ("reset", "delay") else 0)
    shopper.standin.faults.clear()
    assert run(shopper, "reconcile", since=3600) == 0
    order = shopper.shop.ledger.get(order["id"])
    if made:
        assert order["status"] == "open" and order["session_id"] == made[0].id
    else:
        assert order["status"] == "checkout_failed"
    # The shopper tries again once Stripe answers: a new order and a session, the cart unchanged.
    again = shopper.checkout()
    assert shopper.shop.ledger.by_session(shopper.session_id(again))["status"] == "open"
    assert shopper.cart_cookie() == cart


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
    order = shopper.shop.ledger.get(order["id"])
    assert order["status"] == "paid" and order["session_id"] == session.id
    assert run(shopper, "reconcile", since=3600) == 0
    assert [line["order_id"] for line in handoff(shopper)] == [order["id"]]


# -- success page --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ALL)
def test_success_page_while_stripe_is_unreachable_says_confirming(make, kind):
    shopper = make(retries=1)
    session_id = paid_session(shopper)
    cart = shopper.cart_cookie()
    inject(shopper, RETRIEVE, kind, times=5)
    page = shopper.get("/success", {"session_id": session_id}, status=200)
    text = page.text.lower()
    assert "confirming your payment" in text and "reload" in text
    for word in ("failed", "did not go through", "declined", "thank you"):
        assert word not in text
    assert shopper.cart_cookie() == cart
    assert shopper.shop.ledger.by_session(session_id)["fulfilled_at"] is None
    shopper.standin.faults.clear()
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
    inject(shopper, RETRIEVE, kind, times=1 if kind == "429" else 2)  # exactly what one delivery meets
    results = dict(shopper.standin.deliver_pending())
    completed = [r["event_id"] for r in shopper.standin.webhook_log() if r["type"] == "checkout.session.completed"]
    assert completed and all(results[e] >= 500 for e in completed), results
    order = shopper.shop.ledger.by_session(session_id)
    assert order["fulfilled_at"] is None and order["status"] == "open"
    assert not any(shopper.shop.ledger.seen_event(e) for e in completed)  # not recorded, so the retry applies it
    # Stripe sends it again; now it applies, exactly once, and duplicates change nothing.
    results = dict(shopper.standin.deliver_pending(duplicate=True))
    assert results and all(200 <= s < 300 for s in results.values()), results
    order = shopper.shop.ledger.by_session(session_id)
    assert order["status"] == "paid"
    assert [line["session_id"] for line in handoff(shopper)] == [session_id]


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
    assert run(shopper, "reconcile", retries=0, since=3600) == 3  # unreachable: says so, changes nothing
    assert shopper.shop.ledger.by_session(session_id)["fulfilled_at"] is None
    assert run(shopper, "reconcile", since=3600) == 0
    order = shopper.shop.ledger.by_session(session_id)
    assert order["status"] == "paid" and order["fulfilled_at"]
    assert run(shopper, "reconcile", since=3600) == 0
    assert "Thank you" in shopper.get("/success", {"session_id": session_id}).text
    assert [line["session_id"] for line in handoff(shopper)] == [session_id]


@pytest.mark.parametrize("kind", RETRIED)
def test_reconcile_rides_out_faults_on_its_own_calls(make, kind):
    shopper = make()
    session_id = paid_session(shopper)
    shopper.standin.drop_pending_events()
    inject(shopper, LIST, kind)
    inject(shopper, RETRIEVE, kind)
    inject(shopper, "GET /v1/disputes", kind)
    assert run(shopper, "reconcile", since=3600) == 0
    assert shopper.shop.ledger.by_session(session_id)["status"] == "paid"
    assert len(handoff(shopper)) == 1


def test_reconcile_says_so_when_stripe_fails_while_it_reads_disputes(make, capsys):
    shopper = make(retries=0)
    session_id = paid_session(shopper)
    shopper.standin.drop_pending_events()
    inject(shopper, "GET /v1/disputes", "500")
    assert run(shopper, "reconcile", retries=0, since=3600) == 3
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert shopper.shop.ledger.by_session(session_id)["status"] == "paid"  # what came before is kept
    assert run(shopper, "reconcile", since=3600) == 0  # and running it again is safe
    assert len(handoff(shopper)) == 1


# -- merchant refund ---------------------------------------------------------------------------------------------------

def refunds_for(shopper, order):
    return shopper.shop.stripe.v1.refunds.list({"payment_intent": order["payment_intent"], "limit": 100}).data


@pytest.mark.parametrize("kind", RETRIED)
def test_a_retried_refund_refunds_once(make, kind):
    shopper = make()
    session_id = paid_session(shopper)
    shopper.standin.deliver_pending()
    order = shopper.shop.ledger.by_session(session_id)
    inject(shopper, REFUND, kind)
    assert run(shopper, "refund", id=order["id"], amount=None) == 0
    assert shopper.standin.calls[REFUND] == 2
    (refund,) = refunds_for(shopper, order)
    assert refund.amount == order["amount_total"]


@pytest.mark.parametrize("kind", ALL)
def test_refund_while_stripe_is_unreachable_can_be_run_again_safely(make, kind, capsys):
    shopper = make()
    session_id = paid_session(shopper)
    shopper.standin.deliver_pending()
    order = shopper.shop.ledger.by_session(session_id)
    inject(shopper, REFUND, kind, times=5)
    assert run(shopper, "refund", retries=1, id=order["id"], amount=500) == 3
    assert "outcome is unknown" in capsys.readouterr().err
    shopper.standin.faults.clear()
    # Running it again after a lost answer replays the refund Stripe made, never a second one.
    assert run(shopper, "refund", id=order["id"], amount=500) == 0
    assert [r.amount for r in refunds_for(shopper, order)] == [500]
    shopper.standin.deliver_pending()
    after = shopper.shop.ledger.get(order["id"])
    assert after["status"] == "partially_refunded" and after["amount_refunded"] == 500


# -- over real sockets: the shop's own HTTP client against `python -m standin` --------------------------------------

def test_a_slow_stripe_hits_the_timeout_and_a_reset_connection_is_retried_once(make_shopper, tmp_path):
    """STRIPE_TIMEOUT and retries with the requests-based client the shop uses in test and live mode."""
    from tests.test_hostile import KEY, WHSEC, standin_server
    faults = f"{CREATE}=reset*1;{RETRIEVE}=delay:3*3"
    with standin_server(tmp_path, faults) as url:
        shopper = make_shopper(stripe_secret_key=KEY, stripe_api_base=url, stripe_webhook_secret=WHSEC,
                               stripe_timeout=0.5, stripe_max_retries=1)
        shopper.add(product(shopper))
        to_stripe = shopper.checkout()  # the first POST's connection is dropped; the retry replays the session
        order = only_order(shopper)
        assert [s.id for s in sessions_for(shopper, order["id"])] == [shopper.session_id(to_stripe)]
        start = time.monotonic()
        page = shopper.get("/success", {"session_id": shopper.session_id(to_stripe)})
        took = time.monotonic() - start
        assert "confirming your payment" in page.text.lower()
        assert took < 2.5, took  # two tries of 0.5 s (plus a short back-off), never the 3 s the server sleeps
