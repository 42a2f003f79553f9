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


def _paid_order_line(shopper, product="walden"):
    """A paid session whose order is not marked, and the hand-off line its lost commit would have left."""
    shopper.add(product)
    session_id = shopper.session_id(shopper.checkout())
    shopper.standin.pay(session_id)
    order = shopper.shop.ledger.by_session(session_id)
    session = payments.retrieve_session(shopper.shop.stripe, session_id)
    return order, record(order, payments.summary(session), session, "2026-01-01T00:00:00.000000Z")


def test_each_start_reads_only_what_was_appended_since_the_last(make_shopper, data_dir):
    path = data_dir / "fulfilments.jsonl"
    first = make_shopper()
    for product in ("walden", "moby-dick"):  # two orders fulfilled the normal way
        first.add(product)
        sid = first.session_id(first.checkout())
        first.standin.pay(sid)
        first.get(f"/success?session_id={sid}")
    size = path.stat().st_size
    second = make_shopper()
    assert second.shop.fulfilment.last_recovery == (0, size)  # no checkpoint yet: the whole file, once
    order, line = _paid_order_line(second, "walden")
    append_jsonl(path, line)  # ... and then the process died before COMMIT
    third = make_shopper()
    assert third.shop.fulfilment.last_recovery == (size, path.stat().st_size)  # only the new line
    assert third.shop.ledger.get(order["id"])["fulfilled_at"] == "2026-01-01T00:00:00.000000Z"
    fourth = make_shopper()
    assert fourth.shop.fulfilment.last_recovery == (path.stat().st_size,) * 2  # nothing new to read


def test_a_replaced_or_rewritten_file_is_read_from_the_start(make_shopper, data_dir):
    path = data_dir / "fulfilments.jsonl"
    shopper = make_shopper()
    order, line = _paid_order_line(shopper)
    append_jsonl(path, {"order_id": "ord_elsewhere", "note": "a line of an order this ledger does not know"})
    make_shopper()  # checkpoint at the end of that one line
    # the warehouse rotated the file: a new file (new inode) with the lost order's line in it
    path.rename(data_dir / "fulfilments.jsonl.1")
    append_jsonl(path, line)
    restarted = make_shopper()
    assert restarted.shop.fulfilment.last_recovery[0] == 0
    assert restarted.shop.ledger.get(order["id"])["fulfilled_at"] is not None

    # rewritten in place (same inode, at least as long): the bytes before the checkpoint differ
    second, line2 = _paid_order_line(restarted, "moby-dick")
    with open(path, "r+b") as f:
        f.write(b" " * path.stat().st_size)  # blanked out where the checkpoint points
    append_jsonl(path, line2)
    again = make_shopper()
    assert again.shop.fulfilment.last_recovery[0] == 0
    assert again.shop.ledger.get(second["id"])["fulfilled_at"] is not None
