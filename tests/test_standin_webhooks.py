"""Stand-in events and webhook delivery: Stripe's signatures, retries, ordering controls and persistence."""
import http.server
import json
import os
import re
import stat
import threading
import time

import pytest
import stripe

from standin import ASYNC_FAIL, ASYNC_OK, StandIn

KEY = "sk_test_offline"
HOOK = "http://shop.test/webhook"
PARAMS = {"mode": "payment", "success_url": "http://shop.test/ok", "cancel_url": "http://shop.test/cart",
          "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 2000,
                                                        "product_data": {"name": "Walden"}}}],
          "metadata": {"order_id": "ord_1"}}


class Endpoint:
    """A fake webhook endpoint: records deliveries and answers with scripted statuses (default 200)."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received = []

    def __call__(self, url, body, headers):
        assert url == HOOK
        self.received.append((body, headers))
        return self.statuses.pop(0) if self.statuses else 200

    def types(self):
        return [json.loads(b)["type"] for b, _ in self.received]


# The endpoint subscribes to what the shop handles (as the shop's own stand-in does); every event is still listed.
SUBSCRIBED = ("checkout.session.completed", "checkout.session.async_payment_succeeded",
              "checkout.session.async_payment_failed", "checkout.session.expired", "charge.refunded",
              "refund.created", "charge.dispute.created", "charge.dispute.closed")


def make(path, **kw):
    s = StandIn(path, webhook_url=HOOK, load_env_faults=False, **{"enabled_events": SUBSCRIBED, **kw})
    s.webhook_retry_base = 0
    return s


@pytest.fixture
def standin(tmp_path):
    s = make(tmp_path / "d")
    yield s
    s.close()


@pytest.fixture
def client(standin):
    return stripe.StripeClient(KEY, http_client=standin.http_client())


def paid_session(client, standin, card="4242424242424242"):
    s = client.v1.checkout.sessions.create(PARAMS)
    standin.pay(s.id, card=card)
    return s.id


def test_delivered_events_verify_with_the_sdk(client, standin):
    hook = standin.deliver = Endpoint()
    sid = paid_session(client, standin)
    assert standin.get(standin.pending_events()[0]["id"])["pending_webhooks"] == 1
    results = standin.deliver_pending()
    (body, headers), = hook.received
    assert results == [(json.loads(body)["id"], 200)]
    assert headers["Content-Type"].startswith("application/json")
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], standin.webhook_secret)
    assert event.type == "checkout.session.completed" and event.data.object.id == sid
    assert re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64},v0=[0-9a-f]{64}", headers["Stripe-Signature"])  # test mode's v0
    assert event.data.object.metadata["order_id"] == "ord_1" and event.api_version == stripe.api_version
    assert event.request.id is None  # caused by the shopper on the page, not by an API request
    assert client.v1.events.retrieve(event.id).pending_webhooks == 0
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.replace(b"ord_1", b"ord_2"), headers["Stripe-Signature"],
                                       standin.webhook_secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_wrong")
    assert standin.deliver_pending() == []  # delivered once, not again


def test_failed_deliveries_retry_with_backoff_then_succeed(client, standin):
    hook = standin.deliver = Endpoint([500, 0])
    standin.webhook_retry_base = 60
    paid_session(client, standin)
    assert [st for _, st in standin.deliver_pending()] == [500]
    assert standin.deliver_pending() == []  # not due yet: next try in 60 s
    row = standin.webhook_log()[0]
    assert row["attempts"] == 1 and row["state"] == "pending" and row["next_attempt"] > time.time() + 50
    standin.webhook_retry_base = 0
    with standin.store.tx(write=True) as tx:  # let the clock "pass"
        tx.conn.execute("UPDATE outbox SET next_attempt = 0")
    assert [st for _, st in standin.deliver_pending()] == [0]
    assert [st for _, st in standin.deliver_pending()] == [200]
    assert standin.webhook_log()[0]["state"] == "delivered" and len(hook.received) == 3
    assert len({json.loads(b)["id"] for b, _ in hook.received}) == 1


def test_delivery_gives_up_after_bounded_attempts(client, standin):
    def broken(url, body, headers):
        raise ConnectionRefusedError("nobody listening")
    standin.deliver = broken
    standin.webhook_max_attempts = 3
    paid_session(client, standin)
    for _ in range(5):
        standin.deliver_pending()
    (row,) = standin.webhook_log()
    assert row["state"] == "failed" and row["attempts"] == 3 and row["last_status"] == 0
    assert standin.pending_events() == []
    # never delivered: still pending at Stripe's API, and listed by delivery_success=false, not =true
    assert client.v1.events.retrieve(row["event_id"]).pending_webhooks == 1
    assert [e.id for e in client.v1.events.list({"delivery_success": False}).data] == [row["event_id"]]
    assert row["event_id"] not in [e.id for e in client.v1.events.list({"delivery_success": True}).data]


def test_hold_reverse_duplicate_and_drop_controls(client, standin):
    hook = standin.deliver = Endpoint()
    standin.hold_webhooks = True
    sids = [paid_session(client, standin) for _ in range(3)]
    assert standin.deliver_pending() == [] and hook.received == []
    pending = standin.pending_events()
    assert [e["data"]["object"]["id"] for e in pending] == sids
    standin.hold_webhooks = False
    standin.deliver_pending(reverse=True, duplicate=True)
    got = [json.loads(b)["data"]["object"]["id"] for b, _ in hook.received]
    assert got == [sids[2], sids[2], sids[1], sids[1], sids[0], sids[0]]
    assert standin.redeliver(pending[0]["id"]) == 200 and len(hook.received) == 7
    standin.hold_webhooks = True
    late = paid_session(client, standin)
    dropped = standin.drop_pending_events()
    standin.hold_webhooks = False
    assert standin.deliver_pending() == [] and len(hook.received) == 7
    assert [standin.get(e)["data"]["object"]["id"] for e in dropped] == [late]


def test_pending_events_survive_a_restart(tmp_path):
    a = make(tmp_path / "d")
    a.hold_webhooks = True
    sid = paid_session(stripe.StripeClient(KEY, http_client=a.http_client()), a)
    secret = a.webhook_secret
    a.close()
    b = make(tmp_path / "d")
    hook = b.deliver = Endpoint()
    b.deliver_pending()
    (body, headers), = hook.received
    assert b.webhook_secret == secret
    assert stripe.Webhook.construct_event(body, headers["Stripe-Signature"], secret).data.object.id == sid
    mode = stat.S_IMODE(os.stat(tmp_path / "d" / "standin_webhook_secret").st_mode)
    assert mode == 0o600
    b.close()


def test_given_secret_is_used(tmp_path):
    s = make(tmp_path / "d", webhook_secret="whsec_given")
    assert s.webhook_secret == "whsec_given"
    s.close()


def test_two_stand_ins_on_one_data_dir_deliver_each_event_once(tmp_path):
    a, b = make(tmp_path / "d"), make(tmp_path / "d")
    hook = Endpoint()
    slow = lambda *args: (time.sleep(0.01), hook(*args))[1]  # noqa: E731 - widen the race window
    a.deliver = b.deliver = slow
    a.hold_webhooks = True
    client = stripe.StripeClient(KEY, http_client=a.http_client())
    ids = [paid_session(client, a) for _ in range(10)]
    a.hold_webhooks = False
    threads = [threading.Thread(target=x.deliver_pending) for x in (a, b)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    got = [json.loads(body)["data"]["object"]["id"] for body, _ in hook.received]
    assert sorted(got) == sorted(ids)
    a.close()
    b.close()


def test_refund_events(client, standin):
    standin.deliver = hook = Endpoint()
    pi = standin.get(paid_session(client, standin))["payment_intent"]
    refund = client.v1.refunds.create({"payment_intent": pi, "amount": 500}, {"idempotency_key": "refund-1"})
    standin.deliver_pending()
    assert hook.types() == ["checkout.session.completed", "charge.refunded", "refund.created"]
    refunded = json.loads(hook.received[1][0])
    assert refunded["data"]["object"]["amount_refunded"] == 500
    assert refunded["data"]["previous_attributes"] == {"amount_refunded": 0}  # only what changed: still not refunded
    client.v1.refunds.create({"payment_intent": pi})  # the rest
    standin.deliver_pending()
    assert json.loads(hook.received[3][0])["data"]["previous_attributes"] == {"amount_refunded": 500, "refunded": False}
    assert refunded["request"]["idempotency_key"] == "refund-1" and refunded["request"]["id"].startswith("req_")
    assert json.loads(hook.received[2][0])["data"]["object"]["id"] == refund.id


def test_a_failed_refund_gives_its_amount_back_to_the_charge_and_says_so(tmp_path):
    standin = make(tmp_path / "all", enabled_events=None)  # every event, as `python -m standin` sends
    client = stripe.StripeClient(KEY, http_client=standin.http_client())
    standin.deliver = hook = Endpoint()
    pi = standin.get(paid_session(client, standin))["payment_intent"]
    refund = client.v1.refunds.create({"payment_intent": pi, "amount": 500})
    failed = standin.fail_refund(refund.id)
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    charge = client.v1.charges.retrieve(failed["charge"])
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    standin.deliver_pending()
    events = {e["type"]: e for e in (json.loads(body) for body, _ in hook.received)}
    assert events["refund.failed"]["data"]["previous_attributes"] == {"status": "succeeded"}
    assert events["charge.refund.updated"]["data"]["object"]["status"] == "failed"
    with pytest.raises(ValueError, match="no such succeeded refund"):
        standin.fail_refund(refund.id)
    standin.close()


def test_dispute_card_opens_and_closes_a_dispute(client, standin):
    standin.deliver = hook = Endpoint()
    sid = paid_session(client, standin, card="4000000000000259")
    standin.deliver_pending()
    assert hook.types() == ["checkout.session.completed", "charge.dispute.created"]
    dispute = json.loads(hook.received[1][0])["data"]["object"]
    assert dispute["status"] == "needs_response" and dispute["object"] == "dispute"
    charge = client.v1.charges.retrieve(dispute["charge"])
    assert charge.disputed and charge.payment_intent == standin.get(sid)["payment_intent"]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.refunds.create({"charge": charge.id})
    assert exc.value.code == "charge_disputed"
    closed = standin.close_dispute(dispute["id"], won=False)
    assert closed["status"] == "lost"
    standin.deliver_pending()
    last = json.loads(hook.received[-1][0])
    assert last["type"] == "charge.dispute.closed" and last["data"]["object"]["status"] == "lost"
    assert last["data"]["previous_attributes"] == {"status": "needs_response"}
    with pytest.raises(ValueError, match="already closed"):
        standin.close_dispute(dispute["id"], won=True)
    with pytest.raises(ValueError, match="No such dispute"):
        standin.close_dispute("dp_missing")
    paid_session(client, standin, card="4000000000000259")
    newest = client.v1.events.list({"type": "charge.dispute.created"}).data[0].data.object.id
    assert newest != dispute["id"] and standin.close_dispute(newest, won=True)["status"] == "won"


def test_inquiry_card_opens_an_inquiry_whose_payment_can_still_be_refunded(client, standin):
    """https://docs.stripe.com/testing#disputes: 4000 0000 0000 1976; an inquiry takes no money until it escalates."""
    standin.deliver = hook = Endpoint()
    paid_session(client, standin, card="4000000000001976")
    standin.deliver_pending()
    assert hook.types() == ["checkout.session.completed", "charge.dispute.created"]
    dispute = json.loads(hook.received[1][0])["data"]["object"]
    assert (dispute["status"], dispute["is_charge_refundable"]) == ("warning_needs_response", True)
    charge = client.v1.charges.retrieve(dispute["charge"])
    assert charge.disputed and client.v1.refunds.create({"charge": charge.id}).status == "succeeded"
    assert standin.close_dispute(dispute["id"])["status"] == "warning_closed"


@pytest.mark.parametrize("card, kind, status", [(ASYNC_OK, "succeeded", "paid"), (ASYNC_FAIL, "failed", "unpaid")])
def test_delayed_payments_emit_async_events(client, standin, card, kind, status):
    standin.deliver = hook = Endpoint()
    sid = paid_session(client, standin, card=card)
    assert standin.get(sid)["payment_status"] == "unpaid"
    assert standin.settle_async(sid) == 1 and standin.settle_async() == 0
    standin.deliver_pending()
    assert hook.types() == ["checkout.session.completed", f"checkout.session.async_payment_{kind}"]
    assert json.loads(hook.received[1][0])["data"]["object"]["payment_status"] == status


def test_sender_thread_settles_expires_and_delivers(tmp_path):
    s = make(tmp_path / "d", async_delay=0.2)
    hook = s.deliver = Endpoint()
    client = stripe.StripeClient(KEY, http_client=s.http_client())
    sid = paid_session(client, s, card=ASYNC_OK)
    lapsed = client.v1.checkout.sessions.create(PARAMS)
    with s.store.tx(write=True) as tx:  # as if its expires_at had passed
        session = tx.get(lapsed.id)
        session["expires_at"] = int(time.time()) - 1
        tx.put(session)
    s.start_webhook_sender(interval=0.05)
    deadline = time.time() + 5
    while len(hook.received) < 3 and time.time() < deadline:
        time.sleep(0.05)
    s.stop_webhook_sender()
    assert sorted(hook.types()) == ["checkout.session.async_payment_succeeded", "checkout.session.completed",
                                    "checkout.session.expired"]
    assert s.get(sid)["payment_status"] == "paid" and s.get(lapsed.id)["status"] == "expired"
    s.close()


def test_events_api_lists_and_filters(client, standin):
    sid = paid_session(client, standin)
    client.v1.checkout.sessions.expire(client.v1.checkout.sessions.create(PARAMS).id)
    events = client.v1.events.list().data
    assert [e.type for e in events] == ["checkout.session.expired", "checkout.session.completed",
                                        "payment_intent.succeeded", "charge.succeeded", "payment_intent.created"]
    only = client.v1.events.list({"type": "checkout.session.completed"}).data
    assert [e.data.object.id for e in only] == [sid]
    assert client.v1.events.retrieve(only[0].id).id == only[0].id
    assert events[0].request.id.startswith("req_")  # the expire API call caused it
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve("evt_missing")


def test_default_delivery_posts_over_http(tmp_path):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.headers["Stripe-Signature"], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s = StandIn(tmp_path / "d", webhook_url=f"http://127.0.0.1:{server.server_port}/webhook", load_env_faults=False,
                enabled_events=SUBSCRIBED)
    try:
        paid_session(stripe.StripeClient(KEY, http_client=s.http_client()), s)
        assert [st for _, st in s.deliver_pending()] == [204]
        (sig, body), = seen
        assert stripe.Webhook.construct_event(body, sig, s.webhook_secret).type == "checkout.session.completed"
    finally:
        server.shutdown()
        server.server_close()
    assert s.deliver(f"http://127.0.0.1:{server.server_port}/webhook", b"{}", {}) == 0  # nobody listening now
    s.close()
