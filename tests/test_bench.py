"""What the benchmark (bench/run.py) counts, guarded without timing: Stripe calls per purchase, and the log
settings that keep a line per request cheap."""

import json
import logging
from collections import Counter
from urllib.parse import urlsplit

import cli
from tests.test_purchase import pay


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


def test_setup_logging_drops_per_record_details_nobody_prints():
    cli.setup_logging()
    cli.setup_logging()
    assert not (logging.logThreads or logging.logProcesses or logging.logMultiprocessing)
    assert sum(isinstance(f, cli.EveryMinute) for f in logging.getLogger("waitress.queue").filters) == 1


def test_waitress_queue_warnings_come_at_most_once_a_minute():
    every = cli.EveryMinute()
    records = [logging.LogRecord("waitress.queue", logging.WARNING, "", 0, "Task queue depth is %d", (n,), None)
               for n in range(1, 6)]
    assert [every.filter(r) for r in records] == [True, False, False, False, False]
    every.next = 0.0  # a minute later
    late = logging.LogRecord("waitress.queue", logging.WARNING, "", 0, "Task queue depth is %d", (7,), None)
    assert every.filter(late)
    assert late.getMessage() == "Task queue depth is 7 (4 more such warnings in the last minute)"
