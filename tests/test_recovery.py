"""Hand-off records are committed in the database with the claim; fulfilments.jsonl is caught up from there.

A crash between the commit and the file write loses no hand-off: the next fulfilment or start writes the missing
lines, once, in order. A torn last line is followed by a fresh line; a rotated or emptied file gets only new lines."""

import argparse
import json

import pytest

from tests.conftest import buy, handoff, order, wire
from webshop import merchant

MARK = "fulfilments.jsonl"  # the ledger's checkpoint: the last record id written to the file


def paid(shopper, product="walden"):
    """A paid order, fulfilled by its confirmation page; returns its order id."""
    session_id = buy(shopper, product=product)
    assert "Thank you" in shopper.get(f"/success?session_id={session_id}").text
    return order(shopper, session_id)["id"]


def crash_before_the_file(shopper):
    """This process dies after each fulfilment's commit, before it writes the line: the file is never touched."""
    shopper.shop.orders.export = lambda: None
    return shopper


def lines(data_dir):
    """The file's lines: complete ones parsed, anything else (a torn line) as its text."""
    path = data_dir / "fulfilments.jsonl"
    result = []
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            result.append(json.loads(text)["order_id"])
        except ValueError:
            result.append(text)
    return result


def rotated(data_dir):
    """The order ids in the file the warehouse moved away."""
    return [json.loads(line)["order_id"] for line in (data_dir / "fulfilments.jsonl.1").read_text().splitlines()]


@pytest.fixture
def with_file(make_shopper):
    """A shop that writes fulfilments.jsonl (the SQLite ledger's; with PostgreSQL the database is the hand-off)."""
    shopper = make_shopper()
    if shopper.shop.orders.jsonl is None:
        pytest.skip("fulfilments.jsonl is written only beside the SQLite ledger")
    return shopper


def test_the_record_is_committed_with_the_claim_before_any_file_is_written(make_shopper, data_dir, capsys):
    shopper = crash_before_the_file(wire(make_shopper()))
    session_id = buy(shopper)
    shopper.standin.deliver_pending()
    paid_order = order(shopper, session_id)
    assert paid_order["status"] == "paid" and paid_order["fulfilled_at"] and lines(data_dir) == []
    [(record_id, record)] = shopper.shop.orders.ledger.fulfilments()
    assert record["order_id"] == paid_order["id"] and record["session_id"] == session_id
    assert [i["product_id"] for i in record["items"]] == [i["product_id"] for i in paid_order["items"]]
    # The merchant's `fulfilments --json` reads the database: the hand-off is there whatever the file holds.
    assert merchant.fulfilments(shopper.shop.orders, argparse.Namespace(after=0, follow=False)) == 0
    [printed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == {"id": record_id, **record}


def test_the_next_start_writes_the_lines_a_crash_left_out_once(with_file, make_shopper, data_dir):
    first = paid(with_file, "walden")
    crash_before_the_file(with_file)
    lost = [paid(with_file, "moby-dick"), paid(with_file, "walden")]
    assert lines(data_dir) == [first]  # the process died before writing these two
    make_shopper()
    assert lines(data_dir) == [first, *lost]  # in the order they were made
    again = make_shopper()
    assert lines(data_dir) == [first, *lost]  # never a duplicate
    for order_id in lost:  # the confirmation page (or a late webhook) changes nothing now
        session_id = again.shop.orders.ledger.get(order_id)["session_id"]
        assert "Thank you" in again.get(f"/success?session_id={session_id}").text
    assert again.shop.orders.sync(session_id, source="test")[1] == "already fulfilled"
    assert lines(data_dir) == [first, *lost]


def test_the_next_fulfilment_writes_the_lines_a_failed_write_left_out(with_file, data_dir, caplog):
    first = paid(with_file, "walden")
    real, orders = with_file.shop.orders.export, with_file.shop.orders

    def disk_full():
        raise OSError(28, "No space left on device")
    orders.export = disk_full
    second = paid(with_file, "moby-dick")  # the shopper who paid is thanked: the order is committed
    assert order(with_file, orders.ledger.get(second)["session_id"])["status"] == "paid"
    assert lines(data_dir) == [first] and "fulfilments.jsonl not written" in caplog.text
    orders.export = real
    third = paid(with_file, "walden")
    assert lines(data_dir) == [first, second, third]


def test_a_crash_after_the_write_but_before_the_checkpoint_writes_nothing_twice(with_file, make_shopper, data_dir):
    first = paid(with_file, "walden")
    ledger = with_file.shop.orders.ledger
    ledger.set_checkpoint = lambda name, value: None  # the line is on disk; the checkpoint never got there
    second = paid(with_file, "moby-dick")
    assert lines(data_dir) == [first, second] and ledger.checkpoint(MARK) == ledger.fulfilment_id(first)
    restarted = make_shopper()
    assert lines(data_dir) == [first, second]  # the file's last line tells what it already has
    third = paid(restarted, "walden")
    assert lines(data_dir) == [first, second, third]


def test_a_torn_last_line_is_followed_by_a_fresh_line(with_file, make_shopper, data_dir):
    first = paid(with_file, "walden")
    crash_before_the_file(with_file)
    lost = paid(with_file, "moby-dick")
    [(_, record)] = with_file.shop.orders.ledger.fulfilments(with_file.shop.orders.ledger.fulfilment_id(first))
    torn = json.dumps(record, sort_keys=True)[:40]
    with open(data_dir / "fulfilments.jsonl", "a") as f:
        f.write(torn)  # the crash came in the middle of writing the line
    restarted = make_shopper()
    assert lines(data_dir) == [first, torn, lost]
    third = paid(restarted, "walden")
    assert lines(data_dir) == [first, torn, lost, third]


def test_a_torn_catch_up_keeps_the_lines_it_wrote_whole(with_file, make_shopper, data_dir):
    """A catch-up writes several lines at once; torn in its second, the first is on disk and is not written again."""
    first = paid(with_file, "walden")
    crash_before_the_file(with_file)
    lost = [paid(with_file, "moby-dick"), paid(with_file, "walden")]
    ledger = with_file.shop.orders.ledger
    records = [json.dumps(r, sort_keys=True) for _, r in ledger.fulfilments(ledger.fulfilment_id(first))]
    with open(data_dir / "fulfilments.jsonl", "a") as f:
        f.write(records[0] + "\n" + records[1][:40])
    make_shopper()
    assert lines(data_dir) == [first, lost[0], records[1][:40], lost[1]]


def test_a_line_written_whole_but_for_its_newline_is_not_written_again(with_file, make_shopper, data_dir):
    first = paid(with_file, "walden")
    crash_before_the_file(with_file)
    lost = paid(with_file, "moby-dick")
    ledger = with_file.shop.orders.ledger
    [(_, record)] = ledger.fulfilments(ledger.fulfilment_id(first))
    with open(data_dir / "fulfilments.jsonl", "a") as f:
        f.write(json.dumps(record, sort_keys=True))  # the crash came just before the newline
    restarted = make_shopper()
    assert lines(data_dir) == [first, lost]
    third = paid(restarted, "walden")
    assert lines(data_dir) == [first, lost, third]


def test_a_torn_line_after_the_checkpoint_does_not_join_the_next_line(with_file, data_dir):
    first = paid(with_file, "walden")
    with open(data_dir / "fulfilments.jsonl", "a") as f:
        f.write('{"order_id": "ord_torn", "sess')  # whatever tore it, the next line starts on a line of its own
    second = paid(with_file, "moby-dick")
    assert lines(data_dir) == [first, '{"order_id": "ord_torn", "sess', second]


@pytest.mark.parametrize("how", ["rotated", "emptied"])
def test_a_rotated_or_emptied_file_does_not_get_old_lines_again(with_file, make_shopper, data_dir, how):
    path = data_dir / "fulfilments.jsonl"
    old = [paid(with_file, "walden"), paid(with_file, "moby-dick")]
    if how == "rotated":  # the warehouse moved the file away and reads the new one
        path.rename(data_dir / "fulfilments.jsonl.1")
    else:
        path.write_text("")
    restarted = make_shopper()
    assert lines(data_dir) == []
    new = paid(restarted, "walden")
    assert lines(data_dir) == [new]
    if how == "rotated":
        assert rotated(data_dir) == old
    assert [r["order_id"] for r in handoff(restarted)] == [new]


def test_lines_a_crash_left_out_go_to_the_new_file_after_a_rotation(with_file, make_shopper, data_dir):
    first = paid(with_file, "walden")
    crash_before_the_file(with_file)
    lost = paid(with_file, "moby-dick")
    (data_dir / "fulfilments.jsonl").rename(data_dir / "fulfilments.jsonl.1")
    make_shopper()
    assert lines(data_dir) == [lost]
    assert rotated(data_dir) == [first]


def test_a_start_catches_up_more_lines_than_one_read_of_the_database_returns(with_file, make_shopper, data_dir):
    """However far behind the file fell (a disk full for a day), one start writes every missing line."""
    ledger = with_file.shop.orders.ledger
    made = []
    for n in range(1001):
        order_id, _, _ = ledger.start_order(f"browser-{n}", "usd", [
            {"product_id": "walden", "name": "Walden", "unit_amount": 999, "quantity": 1}], per_minute=1)
        assert ledger.fulfil(order_id, ("open",), {"order_id": order_id, "fulfilled_at": "x"}, {}, "test")
        made.append(order_id)
    make_shopper()
    assert lines(data_dir) == made


def test_a_crash_after_writing_a_line_longer_than_64_kib_writes_nothing_twice(with_file, make_shopper, data_dir):
    """The file's last line is how a restart knows what it has, however long: a 50-line order of 120-character titles
    makes a record of more than 64 KiB (read in part, it was written again)."""
    first = paid(with_file, "walden")
    ledger = with_file.shop.orders.ledger
    ledger.set_checkpoint = lambda name, value: None  # the line is on disk; the checkpoint never got there
    session_id = buy(with_file, product="moby-dick")
    with with_file.standin.store.tx(write=True) as tx:
        session = tx.get(session_id)
        session["collected_information"]["shipping_details"]["name"] = "Ada Reader \U0001f4da" * 6000
        tx.put(session)
    assert "Thank you" in with_file.get(f"/success?session_id={session_id}").text
    second = order(with_file, session_id)["id"]
    assert (data_dir / "fulfilments.jsonl").stat().st_size > 65536 + 1000
    assert lines(data_dir) == [first, second] and ledger.checkpoint(MARK) == ledger.fulfilment_id(first)
    restarted = make_shopper()
    assert lines(data_dir) == [first, second]
    third = paid(restarted, "walden")
    assert lines(data_dir) == [first, second, third]
