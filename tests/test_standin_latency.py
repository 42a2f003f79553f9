"""The stand-in's latency knob: every API call waits, none holds a lock while it waits, and 0 adds nothing."""
import subprocess
import sys
import threading
import time

import pytest
import stripe

from standin import StandIn
from standin.faults import pause
from tests.conftest import ROOT
from tests.standin_helpers import start

KEY = "sk_test_latency"
PARAMS = {"mode": "payment", "success_url": "http://shop.test/ok?session_id={CHECKOUT_SESSION_ID}",
          "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 1500,
                                                        "product_data": {"name": "Walden"}}}]}


@pytest.fixture(autouse=True)
def no_latency_from_the_environment(monkeypatch):
    monkeypatch.delenv("STANDIN_LATENCY_MS", raising=False)


def timed_concurrently(calls):
    """Run the calls in threads that start together; [(start, end)] in monotonic seconds, in call order."""
    barrier = threading.Barrier(len(calls))
    spans = [None] * len(calls)

    def run(i):
        barrier.wait()
        t0 = time.monotonic()
        calls[i]()
        spans[i] = (t0, time.monotonic())
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert None not in spans
    return spans


def test_concurrent_calls_wait_side_by_side(tmp_path, monkeypatch):
    """8 calls with 200 ms each: every call waits its 200 ms, but no call waits for another's, writes included."""
    together = threading.Barrier(8)

    def pause_then_meet(seconds, environ):  # all 8 can be waiting at once only if no wait holds a lock
        pause(seconds, environ)
        together.wait(timeout=30)
    monkeypatch.setattr("standin.api.pause", pause_then_meet)
    s = StandIn(tmp_path, load_env_faults=False, latency_ms=200)
    try:
        client = stripe.StripeClient(KEY, http_client=s.http_client(), max_network_retries=0)
        s.latency_ms = 0
        existing = client.v1.checkout.sessions.create(PARAMS).id
        s.latency_ms = 200
        calls = [lambda: client.v1.checkout.sessions.create(PARAMS)] * 4 + \
                [lambda: client.v1.checkout.sessions.retrieve(existing)] * 3 + [lambda: client.v1.events.list()]
        spans = timed_concurrently(calls)
        assert all(end - start >= 0.2 for start, end in spans)
        assert not together.broken and s.calls["POST /v1/checkout/sessions"] == 5
    finally:
        s.close()


def test_zero_latency_adds_no_wait(tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr("standin.api.pause", lambda seconds, environ: waits.append(seconds))
    s = StandIn(tmp_path, load_env_faults=False)
    try:
        assert s.latency_ms == 0
        client = stripe.StripeClient(KEY, http_client=s.http_client())
        client.v1.checkout.sessions.retrieve(client.v1.checkout.sessions.create(PARAMS).id)
        assert waits == []
        s.latency_ms = 5
        client.v1.checkout.sessions.list()
        assert waits == [0.005]
    finally:
        s.close()


def test_the_environment_sets_the_latency_unless_the_argument_does(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_LATENCY_MS", " 250 ")
    for kwargs, expected in (({}, 250), ({"latency_ms": 0}, 0), ({"latency_ms": 40}, 40)):
        s = StandIn(tmp_path, load_env_faults=False, **kwargs)
        assert s.latency_ms == expected
        s.close()
    monkeypatch.setenv("STANDIN_LATENCY_MS", "")
    s = StandIn(tmp_path, load_env_faults=False)
    assert s.latency_ms == 0
    s.close()


@pytest.mark.parametrize("value", [-1, 60_001, 1.5, 200.0, True, "abc", "-5", "1e3", "٣", ""])
def test_invalid_latency_is_refused_with_its_range(tmp_path, value):
    with pytest.raises(ValueError, match=r"latency_ms must be a whole number of milliseconds from 0 to 60000"):
        StandIn(tmp_path, load_env_faults=False, latency_ms=value)
    s = StandIn(tmp_path, load_env_faults=False, latency_ms=60_000)
    try:
        with pytest.raises(ValueError, match="from 0 to 60000"):
            s.latency_ms = -1
        assert s.latency_ms == 60_000
    finally:
        s.close()


@pytest.mark.parametrize("value", ["-1", "60001", "0.5", "fast"])
def test_invalid_environment_latency_names_the_variable(tmp_path, monkeypatch, value):
    monkeypatch.setenv("STANDIN_LATENCY_MS", value)
    with pytest.raises(ValueError, match=f"STANDIN_LATENCY_MS must be .* from 0 to 60000, not '{value}'"):
        StandIn(tmp_path, load_env_faults=False)


def test_a_latency_past_the_client_timeout_is_a_read_timeout(tmp_path):
    """As with a socket: the SDK gives up at its timeout (a retryable error), but the request still runs."""
    s = StandIn(tmp_path, load_env_faults=False, latency_ms=300)
    try:
        client = stripe.StripeClient(KEY, http_client=s.http_client(timeout=0.05), max_network_retries=0)
        with pytest.raises(stripe.APIConnectionError, match="read timed out after 0.05s") as exc:
            client.v1.checkout.sessions.create(PARAMS)
        assert exc.value.should_retry
        s.latency_ms = 0
        assert len(client.v1.checkout.sessions.list().data) == 1
    finally:
        s.close()


def test_pause_without_a_timeout_sleeps_the_whole_wait():
    environ = {}
    t0 = time.monotonic()
    pause(0.02, environ)
    assert time.monotonic() - t0 >= 0.02 and "standin.drop" not in environ


def test_standalone_server_latency_flag(tmp_path):
    proc, url = start(tmp_path, args=["--latency-ms", "500"])
    try:
        client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
        calls = [lambda: client.v1.checkout.sessions.list()] * 4
        spans = timed_concurrently(calls)
        assert all(end - start >= 0.5 for start, end in spans)
        # taking turns, the four would need 2 s at least; side by side, about one wait
        assert max(end for _, end in spans) - min(start for start, _ in spans) < 4 * 0.5 * 0.75
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("args, env, message", [
    (["--latency-ms", "-5"], "", "argument --latency-ms: the latency must be a whole number of milliseconds "
                                 "from 0 to 60000, not '-5'"),
    (["--latency-ms", "60001"], "", "from 0 to 60000, not '60001'"),
    (["--latency-ms", "1.5"], "", "from 0 to 60000, not '1.5'"),
    ([], "soon", "STANDIN_LATENCY_MS must be a whole number of milliseconds from 0 to 60000, not 'soon'"),
])
def test_standalone_server_refuses_a_bad_latency(tmp_path, args, env, message):
    done = subprocess.run([sys.executable, "-m", "standin", "--data-dir", str(tmp_path / "d"), *args],
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STANDIN_LATENCY_MS": env},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_key_still_under_way_gets_stripes_409_and_afterwards_its_answer(tmp_path, monkeypatch):
    """Stripe answers 409 to a request sent with the key of one still under way (its wait included): a
    double-click's second call; the SDK retries it (https://docs.stripe.com/api/idempotent_requests)."""
    first_under_way, second_answered = threading.Event(), threading.Event()

    def first_waits(seconds, environ):
        if threading.current_thread().name == "first":
            first_under_way.set()
            assert second_answered.wait(10)
    monkeypatch.setattr("standin.api.pause", first_waits)
    s = StandIn(tmp_path, load_env_faults=False, latency_ms=400)
    try:
        client = stripe.StripeClient(KEY, http_client=s.http_client(), max_network_retries=0)
        made = []
        first = threading.Thread(name="first", target=lambda: made.append(
            client.v1.checkout.sessions.create(PARAMS, {"idempotency_key": "checkout-ord_1"})))
        first.start()
        assert first_under_way.wait(10)
        with pytest.raises(stripe.APIError) as exc:
            client.v1.checkout.sessions.create(PARAMS, {"idempotency_key": "checkout-ord_1"})
        second_answered.set()
        first.join(10)
        assert exc.value.http_status == 409 and "another in-progress request" in exc.value.user_message
        again = client.v1.checkout.sessions.create(PARAMS, {"idempotency_key": "checkout-ord_1"})
        assert [m.id for m in made] == [again.id] and again.last_response.headers["idempotent-replayed"] == "true"
        assert s.calls["POST /v1/checkout/sessions"] == 3
    finally:
        s.close()
