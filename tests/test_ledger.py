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
