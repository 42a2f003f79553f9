"""Hostile webhooks: only Stripe can sign an event, and an event of a shape the shop does not expect, signed, still
never crashes it; the endpoint is exempt from CSRF and relies on its signature alone."""

import json
import time

import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import survived, wsgi


# Events as Stripe could send them: every field has the type Stripe's API gives it, with values the shop does not
# expect (other shops' sessions, unknown statuses, odd amounts, metadata naming someone else's order).
anything = st.text(max_size=80)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=False), anything)
EVENT_TYPES = ["checkout.session.completed", "checkout.session.async_payment_succeeded",
               "checkout.session.async_payment_failed", "checkout.session.expired", "charge.refunded",
               "charge.dispute.created", "charge.dispute.closed", "payment_intent.succeeded", "other"]
amounts = st.one_of(st.none(), st.integers(-10**12, 10**12))
ids = st.one_of(st.none(), anything, st.sampled_from(["cs_test_nope", "ch_x", "du_x", "pi_x", "ord_x"]))
OBJECT_FIELDS = {
    "object": st.sampled_from(["checkout.session", "charge", "dispute", "payment_intent"]),
    "status": st.one_of(st.sampled_from(["open", "complete", "expired", "won", "lost", "needs_response",
                                         "succeeded"]), anything),
    "payment_status": st.one_of(st.sampled_from(["paid", "unpaid", "no_payment_required"]), anything),
    "client_reference_id": ids, "payment_intent": st.one_of(ids, st.fixed_dictionaries({"id": ids})),
    "charge": ids, "amount_total": amounts, "amount": amounts, "amount_refunded": amounts,
    "amount_captured": amounts, "currency": st.one_of(st.sampled_from(["usd", "eur", "jpy"]), anything),
    "metadata": st.dictionaries(anything, anything, max_size=3),
    "customer_details": st.one_of(st.none(), st.fixed_dictionaries({"email": st.one_of(st.none(), anything)})),
    "url": st.one_of(st.none(), anything), "expires_at": amounts,
}


@st.composite
def events(draw, session_id):
    keys = draw(st.lists(st.sampled_from(sorted(OBJECT_FIELDS)), unique=True))
    obj = {k: draw(OBJECT_FIELDS[k]) for k in keys}
    obj["id"] = draw(st.one_of(st.sampled_from([session_id, "cs_test_nope", "ch_x", "du_x", "pi_x"]), anything))
    if draw(st.booleans()):
        obj["metadata"] = {"order_id": draw(st.one_of(anything, st.just("ord_x")))}
    return {"id": draw(st.text("0123456789abcdef", min_size=8, max_size=24).map("evt_".__add__)),
            "object": "event", "type": draw(st.one_of(st.sampled_from(EVENT_TYPES), anything)),
            "api_version": stripe.api_version, "created": int(time.time()), "data": {"object": obj}}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_signed_events_of_any_shape_never_fail(module_app, module_session_id, data):
    shop = module_app.config["shop"]
    body = json.dumps(data.draw(events(module_session_id)))
    signature = stripe.WebhookSignature.generate_signature_header(body, shop.orders.standin.webhook_secret)
    status, _, payload, _ = survived(wsgi(module_app, "POST", "/webhook", headers={"Stripe-Signature": signature},
                                          body=body.encode(), content_type="application/json"))
    assert status in (200, 400), (status, payload)


def test_webhook_is_exempt_from_csrf_and_relies_on_its_signature(shopper):
    body = json.dumps({"id": "evt_1", "object": "event", "type": "ping", "data": {"object": {"id": "x"}}})
    hostile = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}
    assert shopper.post("/webhook", body, headers=hostile, expect_errors=True).status_int == 400  # not 403: unsigned
    signed = stripe.WebhookSignature.generate_signature_header(body, shopper.standin.webhook_secret)
    assert shopper.post("/webhook", body, headers={**hostile, "Stripe-Signature": signed}).status_int == 200
    forged = stripe.WebhookSignature.generate_signature_header(body, "whsec_" + "0" * 32)
    assert shopper.post("/webhook", body, headers={**hostile, "Stripe-Signature": forged},
                        expect_errors=True).status_int == 400


def test_a_refused_delivery_is_logged_with_the_connections_address_not_one_the_client_wrote(shopper, caplog):
    forged = {"X-Forwarded-For": "203.0.113.66", "Content-Type": "application/json"}
    shopper.post("/webhook", "{}", headers=forged, extra_environ={"REMOTE_ADDR": "192.0.2.5"}, status=400)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "shop.webhooks"]
    assert line.startswith("webhook refused from 192.0.2.5: ") and "203.0.113.66" not in line
