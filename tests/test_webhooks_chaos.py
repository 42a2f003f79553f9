"""Whatever the webhooks do (lost, repeated, reordered) plus one reconcile: each paid session, one line, one paid order."""

import argparse
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shop import make_app
from standin import ASYNC_FAIL, ASYNC_OK
from tests.conftest import BASE, DISPUTED, Shopper, handoff, post_event, start, wire
from webshop.fulfilment import Orders
from webshop.reconcile import reconcile
from webshop.settings import load_config

OK = "4242424242424242"
# None: the shopper never pays; "expire": the merchant expires the checkout.
OUTCOMES = st.sampled_from([OK, OK, ASYNC_OK, ASYNC_FAIL, DISPUTED, None, "expire"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcomes=st.lists(OUTCOMES, min_size=1, max_size=4), data=st.data())
def test_every_paid_session_ends_as_one_line_and_a_paid_order(database_url, outcomes, data):
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config({"data_dir": tmp, "base_url": BASE, "database_url": database_url})
        shopper = wire(Shopper(make_app(config)))
        sessions = []
        for outcome in outcomes:
            sid = start(shopper)
            if outcome == "expire":
                shopper.shop.orders.stripe.v1.checkout.sessions.expire(sid)
            elif outcome is not None:
                shopper.standin.pay(sid, card=outcome)
            sessions.append(sid)
        seen = set()

        def deliver_some(phase):
            fresh = [e for e in shopper.standin.pending_events() if e["id"] not in seen]
            for evt in data.draw(st.permutations(fresh), label=f"{phase} delivery order"):
                seen.add(evt["id"])
                for _ in range(data.draw(st.integers(0, 2), label=f"copies of {evt['type']}")):
                    # 503: a refund or dispute that came before its payment; Stripe would retry it
                    assert post_event(shopper, evt).status_int in (200, 503)
                sid = evt["data"]["object"].get("id")
                if sid in sessions and data.draw(st.booleans(), label="shopper loads the success page"):
                    shopper.get(f"/success?session_id={sid}")
        deliver_some("before settlement")
        shopper.standin.settle_async()  # delayed payments succeed or fail now
        deliver_some("after settlement")
        shopper.standin.drop_pending_events()  # whatever was not delivered above is lost for good
        merchant = Orders(config)  # `python shop.py reconcile`, twice: a process of its own on the same DATA_DIR
        assert reconcile(merchant, argparse.Namespace(since=3600)) == 0
        assert reconcile(merchant, argparse.Namespace(since=3600)) == 0
        merchant.close()

        lines = handoff(shopper)
        assert len(lines) == len({line["order_id"] for line in lines})  # never twice
        for sid, outcome in zip(sessions, outcomes):
            stripe_side = shopper.standin.get(sid)
            order = shopper.shop.orders.ledger.by_session(sid)
            mine = [line for line in lines if line["session_id"] == sid]
            if stripe_side["payment_status"] == "paid":
                assert order["status"] in ("paid", "disputed") and order["fulfilled_at"], (outcome, order)
                assert len(mine) == 1 and mine[0]["amount_total"] == stripe_side["amount_total"]
            else:
                expected = {"complete": "payment_failed", "expired": "expired", "open": "open"}
                assert order["status"] == expected[stripe_side["status"]], (outcome, order["status"])
                assert mine == [] and order["fulfilled_at"] is None
        shopper.shop.orders.close()
