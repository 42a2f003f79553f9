"""Fault injection: the SDK's retries with one Idempotency-Key create exactly one Checkout Session."""
import time

import pytest
import stripe

from standin import StandIn
from standin.client import InProcessClient
from standin.faults import Faults

KEY = "sk_test_offline"
CREATE = "POST /v1/checkout/sessions"
PARAMS = {"mode": "payment", "success_url": "http://shop.test/ok",
          "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 2000,
                                                        "product_data": {"name": "Walden"}}}]}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Keep the SDK's retry logic but not its 0.5-5 s sleeps, so the suite stays fast."""
    monkeypatch.setattr(InProcessClient, "_sleep_time_seconds", lambda self, n: 0.01)


@pytest.fixture
def standin(tmp_path):
    s = StandIn(tmp_path / "d", load_env_faults=False)
    yield s
    s.close()


class Recorder:
    """Wraps the WSGI API to record the Idempotency-Key of every request."""

    def __init__(self, app):
        self.app, self.keys = app, []

    def __call__(self, environ, start_response):
        self.keys.append(environ.get("HTTP_IDEMPOTENCY_KEY"))
        return self.app(environ, start_response)


def sdk(standin, retries=2, timeout=80.0):
    rec = Recorder(standin.wsgi_api)
    return stripe.StripeClient(KEY, http_client=InProcessClient(rec, timeout), max_network_retries=retries), rec


def sessions(standin):
    client, _ = sdk(standin)
    return [s.id for s in client.v1.checkout.sessions.list({"limit": 100}).data]


def test_500s_are_retried_with_the_same_key(standin):
    standin.faults.add(CREATE, "500", times=2)
    client, rec = sdk(standin)
    s = client.v1.checkout.sessions.create(PARAMS)
    assert standin.calls[CREATE] == 3 and len(set(rec.keys)) == 1 and rec.keys[0]
    assert sessions(standin) == [s.id] and standin.faults.pending() == []


def test_too_many_500s_surface_as_api_error(standin):
    standin.faults.add(CREATE, "500", times=3)
    client, _ = sdk(standin)
    with pytest.raises(stripe.APIError) as exc:
        client.v1.checkout.sessions.create(PARAMS)
    assert exc.value.http_status == 500 and exc.value.json_body["error"]["type"] == "api_error"
    assert sessions(standin) == []


def test_rate_limit_is_not_retried(standin):
    standin.faults.add(CREATE, "429")
    client, _ = sdk(standin)
    with pytest.raises(stripe.RateLimitError) as exc:
        client.v1.checkout.sessions.create(PARAMS)
    assert exc.value.http_status == 429 and exc.value.json_body["error"]["code"] == "rate_limit"
    assert standin.calls[CREATE] == 1
    assert client.v1.checkout.sessions.create(PARAMS).status == "open"


def test_lock_timeout_asks_the_sdk_to_retry(standin):
    standin.faults.add(CREATE, "lock_timeout")
    client, rec = sdk(standin)
    s = client.v1.checkout.sessions.create(PARAMS)
    assert standin.calls[CREATE] == 2 and len(set(rec.keys)) == 1 and sessions(standin) == [s.id]


def test_reset_after_commit_is_healed_by_the_idempotent_retry(standin):
    standin.faults.add(CREATE, "reset")
    client, rec = sdk(standin)
    s = client.v1.checkout.sessions.create(PARAMS)
    assert s.last_response.headers["idempotent-replayed"] == "true"
    assert len(rec.keys) == 2 and len(set(rec.keys)) == 1 and sessions(standin) == [s.id]


def test_reset_without_retries_raises_but_the_session_exists(standin):
    standin.faults.add(CREATE, "reset")
    client, _ = sdk(standin, retries=0)
    with pytest.raises(stripe.APIConnectionError) as exc:
        client.v1.checkout.sessions.create(PARAMS)
    assert exc.value.should_retry
    assert len(sessions(standin)) == 1  # which is why the shop must retry with the same key


def test_delay_beyond_the_client_timeout(standin):
    standin.faults.add("GET /v1/checkout/sessions/{id}", "delay", delay=30)
    standin.faults.add(CREATE, "delay", delay=30)
    client, rec = sdk(standin, timeout=0.2)
    s = client.v1.checkout.sessions.create(PARAMS)
    assert client.v1.checkout.sessions.retrieve(s.id).id == s.id
    # Each call gave up at the client's timeout (not the 30 s delay) and was retried once, with the same key.
    assert sessions(standin) == [s.id] and standin.calls[CREATE] == 2
    assert standin.calls["GET /v1/checkout/sessions/{id}"] == 2


def test_short_delay_just_slows_the_response(standin):
    standin.faults.add("*", "delay", delay=0.1)
    client, _ = sdk(standin, retries=0, timeout=5)
    start = time.monotonic()
    client.v1.checkout.sessions.create(PARAMS)
    assert time.monotonic() - start >= 0.1


def test_env_rules_are_parsed_and_loaded(tmp_path, monkeypatch):
    f = Faults()
    f.load_env({"STANDIN_FAULTS": "POST /v1/checkout/sessions=500*2;GET /v1/checkout/sessions/{id}=delay:30*1; "
                                  "* = reset"})
    assert f.pending() == [(CREATE, "500", 2), ("GET /v1/checkout/sessions/{id}", "delay", 1), ("*", "reset", 1)]
    assert f.take(CREATE)["kind"] == "500" and f.take("GET /v1/checkout/sessions/{id}")["delay"] == 30.0
    with pytest.raises(ValueError, match="cannot parse"):
        Faults().load_env({"STANDIN_FAULTS": "POST /v1/checkout/sessions=explode"})
    with pytest.raises(ValueError):
        Faults().add(CREATE, "explode")
    monkeypatch.setenv("STANDIN_FAULTS", "POST /v1/checkout/sessions=500*1")
    s = StandIn(tmp_path / "env", load_env_faults=True)
    client, _ = sdk(s, retries=0)
    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.create(PARAMS)
    assert client.v1.checkout.sessions.create(PARAMS).status == "open"
    s.close()
