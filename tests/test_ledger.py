"""The order ledger on a real SQLite file: schema version, guarded transitions, history."""

import sqlite3
import threading

from ledger import MIGRATIONS, Ledger


def items():
    return [{"product_id": "walden", "name": "Walden", "unit_amount": 999, "quantity": 2}]


def test_new_file_gets_latest_schema_and_wal(tmp_path):
    ledger = Ledger(tmp_path / "shop.sqlite3")
    assert ledger.schema_version() == len(MIGRATIONS)
    mode = sqlite3.connect(tmp_path / "shop.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    Ledger(tmp_path / "shop.sqlite3")  # reopening migrates nothing twice
    assert ledger.schema_version() == len(MIGRATIONS)


def test_order_is_written_open_with_integer_money(tmp_path):
    ledger = Ledger(tmp_path / "shop.sqlite3")
    order_id = ledger.create_order("usd", items(), browser="b1")
    order = ledger.get(order_id)
    assert order["status"] == "open" and order["amount_subtotal"] == 1998
    assert order["items"] == items() and order["created"].endswith("Z")
    ledger.attach_session(order_id, "cs_test_1", "http://x/pay")
    assert ledger.by_session("cs_test_1")["id"] == order_id
    assert ledger.open_checkout_for("b1")["id"] == order_id
    assert ledger.open_checkout_for("b2") is None


def test_transition_is_guarded_and_happens_once_under_concurrency(tmp_path):
    ledger = Ledger(tmp_path / "shop.sqlite3")
    order_id = ledger.create_order("usd", items())
    results = []
    barrier = threading.Barrier(10)

    def attempt():
        other = Ledger(tmp_path / "shop.sqlite3")
        barrier.wait()
        results.append(other.transition(order_id, ("open",), "expired", "test"))

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert ledger.get(order_id)["status"] == "expired"
    assert not ledger.transition(order_id, ("open",), "paid", "test")
    assert [h["status"] for h in ledger.history(order_id)] == ["open", "expired"]


def test_a_write_turn_excludes_writers_of_other_processes_and_forked_workers(tmp_path):
    """The writer lock holds across processes, and a forked worker takes it through its own descriptor."""
    import fcntl
    import os
    ledger = Ledger(tmp_path / "shop.sqlite3")
    with ledger.write():
        pass  # this process has opened its lock file now; a child must not share that descriptor's lock
    ready, done = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            child = Ledger(tmp_path / "shop.sqlite3")
            with child.write():
                os.write(ready[1], b"in")
                os.read(done[0], 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready[0], 2) == b"in"
        lock_fd = ledger._writer._fd  # the parent's own descriptor: a shared one would let this through
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held_elsewhere = False
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held_elsewhere = True
        assert held_elsewhere
    finally:
        os.write(done[1], b"x")
        os.waitpid(pid, 0)
    with ledger.write() as db:  # the child's turn is over: ours comes at once
        db.execute("SELECT 1")
