"""A crash between the hand-off line and its commit is repaired at the next start, never handed off twice."""

import json

import payments
from fulfilment import append_jsonl, record


def test_start_up_marks_orders_whose_line_was_written_before_a_crash(make_shopper, data_dir):
    shopper = make_shopper()
    shopper.add("walden", 2)
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id, address={"line1": "1 Main St", "city": "Austin", "postal_code": "78701",
                                             "state": "TX", "country": "US"})
    order = shopper.shop.ledger.by_session(session_id)
    session = payments.retrieve_session(shopper.shop.stripe, session_id)
    # what the process wrote just before it was killed, with the order's COMMIT lost
    append_jsonl(data_dir / "fulfilments.jsonl", record(order, payments.summary(session), session,
                                                        "2026-01-01T00:00:00.000000Z"))
    with open(data_dir / "fulfilments.jsonl", "a") as f:
        f.write('{"order_id": "ord_torn", "sess')  # a torn last line is skipped, not fatal
    assert shopper.shop.ledger.get(order["id"])["fulfilled_at"] is None

    restarted = make_shopper()
    again = restarted.shop.ledger.get(order["id"])
    assert again["status"] == "paid" and again["fulfilled_at"] == "2026-01-01T00:00:00.000000Z"
    assert [h["source"] for h in restarted.shop.ledger.history(order["id"])][-1] == "recovery"
    restarted.get(f"/success?session_id={session_id}")  # the success page (or a webhook) fulfils: no-op now
    lines = [json.loads(li) for li in (data_dir / "fulfilments.jsonl").read_text().splitlines()
             if li.startswith('{"') and li.endswith("}")]
    assert [li["order_id"] for li in lines] == [order["id"]]

    # the next hand-off starts on a fresh line after the torn one, so a reader (and recovery) can parse it
    restarted.add("moby-dick")
    second = restarted.session_id(restarted.checkout())
    restarted.standin.pay(second)
    restarted.get(f"/success?session_id={second}")
    last = (data_dir / "fulfilments.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["session_id"] == second
