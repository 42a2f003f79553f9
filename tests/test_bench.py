"""What the benchmark (bench/run.py) counts, guarded without timing: Stripe calls per purchase; and its baseline."""

import base64
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from urllib.parse import urlsplit

from tests.conftest import ROOT, free_port, wait_for
from tests.test_purchase import pay
from tests.test_workers import _answers, children, request


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



def test_the_bare_baseline_replays_the_recorded_bytes_and_runs_as_two_processes(tmp_path):
    body = b"<!doctype html><title>recorded</title>"
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"GET /": {"status": "200 OK", "body_b64": base64.b64encode(body).decode(),
                                               "headers": [["Content-Type", "text/html"],
                                                           ["Content-Length", str(len(body))]]}}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "bench/bare.py", "--port", str(port), "--responses", str(responses),
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: _answers(port, "/"), "the bare app to answer")
        assert request(port) == (200, body.decode())
        assert request(port, path="/nothing-recorded")[0] == 404
        assert len(children(proc.pid)) == 1  # a second process, forked after binding, shares the socket
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
