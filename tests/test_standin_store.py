"""The stand-in's SQLite store: writers of every thread and process take turns without losing an update."""
import os
import stat
import threading

import pytest

from standin.store import Store
from tests.conftest import at_once


def bump(store, times):
    for _ in range(times):
        with store.tx(write=True) as tx:  # read, then write back: lost updates show if two writers overlap
            counter = tx.get("counter") or {"id": "counter", "object": "counter", "created": 0, "n": 0}
            counter["n"] += 1
            tx.put(counter)


def test_concurrent_writers_of_two_stores_on_one_file_lose_nothing(tmp_path):
    """Two Store objects on one file stand for two processes: each has its own thread lock, so between them
    only SQLite's BEGIN IMMEDIATE and busy timeout keep the writers apart."""
    stores = [Store(tmp_path), Store(tmp_path)]
    try:
        threads = [threading.Thread(target=bump, args=(stores[i % 2], 25)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with stores[0].tx() as tx:
            assert tx.get("counter")["n"] == 8 * 25
    finally:
        for s in stores:
            s.close()


def test_a_failed_write_rolls_back_and_frees_the_writer(tmp_path):
    store = Store(tmp_path)
    try:
        with pytest.raises(ZeroDivisionError):
            with store.tx(write=True) as tx:
                tx.put({"id": "x", "object": "thing", "created": 0})
                1 / 0
        bump(store, 1)  # the writer lock was released
        with store.tx() as tx:
            assert tx.get("x") is None and tx.get("counter")["n"] == 1
    finally:
        store.close()


def test_a_nested_transaction_is_refused_not_a_deadlock(tmp_path):
    store = Store(tmp_path)
    try:
        with store.tx(write=True):
            with pytest.raises(RuntimeError, match="already open"):
                with store.tx(write=True):
                    pass
        bump(store, 1)
    finally:
        store.close()


def test_a_server_with_a_thread_per_connection_does_not_run_out_of_files(tmp_path):
    """Each thread has its own connection; one whose thread ended is closed when the next thread opens one."""
    store = Store(tmp_path)
    open_files = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = open_files()
    for _ in range(300):  # wsgiref's ThreadingMixIn: a thread per keep-alive connection, each gone after it
        t = threading.Thread(target=lambda: bump(store, 1))
        t.start()
        t.join()
    assert open_files() - before < 10
    with store.tx() as tx:
        assert tx is not None
    store.close()


def test_keeping_a_request_key_costs_the_same_however_many_keys_are_kept(tmp_path):
    """Every keyed POST purges keys older than 24 hours: by an index, never a read of every kept key (which made
    each Checkout Session a bench creates dearer than the last)."""
    store = Store(tmp_path)

    def steps_of_one_put(key):  # SQLite's own count of virtual-machine steps, not a clock
        steps = []
        with store.tx(write=True) as tx:
            tx.conn.set_progress_handler(lambda: steps.append(1), 10)
            tx.idem_put(key, "POST /v1/refunds", "fp", 200, "{}")
            tx.conn.set_progress_handler(None, 0)
        return len(steps)

    with store.tx(write=True) as tx:
        for i in range(50):
            tx.idem_put(f"early-{i}", "POST /v1/refunds", "fp", 200, "{}")
    few = steps_of_one_put("with-50")
    with store.tx(write=True) as tx:
        for i in range(5000):
            tx.idem_put(f"later-{i}", "POST /v1/refunds", "fp", 200, "{}")
    many = steps_of_one_put("with-5050")
    assert many <= 2 * few + 5, (few, many)
    store.close()


def test_the_file_holding_shoppers_details_is_the_users_only(tmp_path):
    old = os.umask(0)  # takes nothing away: the mode is what the stand-in asked for
    store = Store(tmp_path)
    try:
        with store.tx(write=True) as tx:  # a write: SQLite's -wal and -shm files exist now
            tx.put({"id": "cus_1", "object": "customer", "created": 0, "email": "ada@example.com"})
        files = sorted(tmp_path.glob("standin.sqlite3*"))
        assert len(files) == 3 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files
    finally:
        os.umask(old)
        store.close()


def test_processes_opening_a_new_store_at_once_all_start(tmp_path):
    """Each offline shop worker opens the stand-in's file too; switching it to WAL skips the busy handler."""
    for attempt in range(15):
        folder = str(tmp_path / str(attempt))
        assert at_once(3, open_store, folder) == ["ok"] * 3


def open_store(folder):
    Store(folder).close()
