"""The order ledger on a real database (SQLite file, or PostgreSQL): schema, guarded transitions, history, records."""

import contextlib
import os
import sqlite3
import stat
import threading
import time

import pytest

from tests.conftest import at_once
from webshop.ledger import MIGRATIONS, Ledger
from webshop.settings import ShopError, load_config


def items():
    return [{"product_id": "walden", "name": "Walden", "unit_amount": 999, "quantity": 2}]


@pytest.fixture
def config(tmp_path, database_url):
    return load_config({"data_dir": str(tmp_path / "data"), "database_url": database_url})


@pytest.fixture
def open_ledger(config):
    """Ledger(config), as often as a test likes; every one is closed after the test."""
    made = []

    def factory():
        made.append(Ledger(config))
        return made[-1]
    yield factory
    for ledger in made:
        ledger.close()


@pytest.fixture
def ledger(open_ledger):
    return open_ledger()


def later():
    return int(time.time()) + 3600


def test_a_new_database_gets_the_latest_schema_once(ledger, open_ledger, config):
    with ledger.db.read() as c:
        assert ledger.db.version(c) == len(MIGRATIONS)
    assert open_ledger().migrate() == len(MIGRATIONS)  # reopening migrates nothing twice
    with ledger.db.read() as c:
        assert ledger.db.version(c) == len(MIGRATIONS)
    if ledger.engine == "sqlite":  # WAL, and the file (shoppers' emails) readable by the shop's user only
        path = config.data_dir / "shop.sqlite3"
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_an_order_is_written_open_with_integer_money(ledger):
    order_id, _, stale = ledger.start_order("b1", "usd", items(), per_minute=10)
    assert stale == []
    order = ledger.get(order_id)
    assert order["status"] == "open" and order["amount_subtotal"] == 1998 and order["session_id"] is None
    assert order["items"] == items() and order["created"].endswith("Z")
    assert ledger.open_checkout_for("b1") is None  # no Checkout Session yet
    assert ledger.attach_session(order_id, "cs_test_1", "http://x/pay", later())
    assert ledger.by_session("cs_test_1")["id"] == order_id
    assert ledger.open_checkout_for("b1")["id"] == order_id
    assert ledger.open_checkout_for("b2") is None


def test_a_checkout_whose_session_has_passed_its_expiry_is_not_offered(ledger):
    order_id, _, _ = ledger.start_order("b1", "usd", items(), per_minute=10)
    ledger.attach_session(order_id, "cs_test_1", "http://x/pay", int(time.time()) - 1)
    assert ledger.open_checkout_for("b1") is None and ledger.get(order_id)["status"] == "open"


def test_a_new_checkout_replaces_the_browsers_open_one(ledger):
    first, _, _ = ledger.start_order("b1", "usd", items(), per_minute=10)
    ledger.attach_session(first, "cs_test_1", "http://x/pay", later())
    other, _, _ = ledger.start_order("b2", "usd", items(), per_minute=10)
    second, _, stale = ledger.start_order("b1", "usd", items(), per_minute=10)
    assert stale == ["cs_test_1"]  # the caller expires it at Stripe, which moves its order
    assert ledger.get(first)["status"] == "open" and ledger.get(other)["status"] == "open"
    # A click that lost the race: its session can no longer be tied to the replaced order.
    third, _, stale = ledger.start_order("b1", "usd", items(), per_minute=10)
    assert stale == ["cs_test_1"]  # not expired at Stripe yet; the second order had no session
    assert not ledger.attach_session(second, "cs_test_2", "http://x/pay", later())
    assert ledger.by_session("cs_test_2") is None and ledger.get(second)["status"] == "expired"
    assert ledger.history(second)[-1]["note"] == "replaced by a newer checkout"
    assert ledger.attach_session(third, "cs_test_3", "http://x/pay", later())


def test_a_session_attached_while_a_newer_click_replaces_its_order_is_refused_or_handed_back(ledger, open_ledger):
    """Two clicks of one browser, on two instances: the first attaches its session just as the second replaces it."""
    if ledger.engine == "sqlite":
        pytest.skip("SQLite's BEGIN IMMEDIATE lets one writer in at a time")
    other, first = open_ledger(), ledger.start_order("b1", "usd", items(), per_minute=10)[0]
    attached, clicks, move = [], [], Ledger._move

    def attach_meanwhile(self, c, order_id, *args, **kwargs):
        if order_id == first and not clicks:  # between reading the browser's open orders and replacing them
            clicks.append(threading.Thread(target=lambda: attached.append(
                other.attach_session(first, "cs_test_A", "http://x/pay", later()))))
            clicks[0].start()
            clicks[0].join(0.5)  # it waits for the browser's lock, held by this transaction
        return move(self, c, order_id, *args, **kwargs)
    ledger._move = attach_meanwhile.__get__(ledger)
    _, _, replaced = ledger.start_order("b1", "usd", items(), per_minute=10)
    clicks[0].join(10)
    # Refused (the shopper is never sent to it), or handed back to be expired at Stripe: never payable unseen.
    assert attached == [False] or "cs_test_A" in replaced
    assert ledger.get(first)["status"] == "expired" and ledger.by_session("cs_test_A") is None


def test_limited_copies_are_held_for_one_order_and_a_browsers_own_count_as_its_own(ledger):
    moby = {"product_id": "moby-dick", "name": "Moby-Dick", "unit_amount": 1299, "quantity": 1}
    ledger.start_order("b1", "usd", items(), per_minute=10, stock={"walden": 3})
    with pytest.raises(ShopError) as refused:  # "Buy now" is refused beyond the copies left
        ledger.start_order("b2", "usd", items(), per_minute=10, stock={"walden": 3})
    assert (refused.value.status, refused.value.message) == (409, "Sorry, only 1 of Walden left. Please change the"
                                                                   " quantity.")
    _, held, _ = ledger.start_order("b2", "usd", items() + [moby], per_minute=10, stock={"walden": 3}, cap=True)
    assert [(i["product_id"], i["quantity"]) for i in held] == [("walden", 1), ("moby-dick", 1)]  # a cart: held
    assert ledger.stock_levels(["walden"]) == {"walden": (3, 0)}
    assert ledger.stock_levels(["walden"], "b1") == {"walden": (1, 0)}  # b1's copies are b1's to check out again
    order_id, held, _ = ledger.start_order("b1", "usd", items(), per_minute=10, stock={"walden": 3})
    assert held == items() and ledger.get(order_id)["amount_subtotal"] == 1998
    with pytest.raises(ShopError) as sold_out:  # nothing left of a cart: refused, and no order written
        ledger.start_order("b3", "usd", items(), per_minute=10, stock={"walden": 3}, cap=True)
    assert sold_out.value.message.startswith("Sorry, Walden is sold out for now: the last copies are in other "
                                             "shoppers' checkouts") and len(ledger.list(status="open")) == 2


def test_more_checkouts_a_minute_than_allowed_from_one_browser_are_refused(ledger):
    for _ in range(3):
        ledger.start_order("b1", "usd", items(), per_minute=3)
    with pytest.raises(ShopError) as refused:
        ledger.start_order("b1", "usd", items(), per_minute=3)
    assert refused.value.status == 429 and refused.value.retry_after == 60
    assert len(ledger.list(limit=100)) == 3
    ledger.start_order("b2", "usd", items(), per_minute=3)  # another browser is not held up


def test_transition_is_guarded_and_happens_once_under_concurrency(ledger, open_ledger):
    order_id, _, _ = ledger.start_order("b1", "usd", items(), per_minute=10)
    others = [open_ledger() for _ in range(10)]  # as many instances of the shop on one database
    results = []
    barrier = threading.Barrier(10)

    def attempt(other):
        barrier.wait()
        results.append(other.transition(order_id, ("open",), "expired", "test"))

    threads = [threading.Thread(target=attempt, args=(other,)) for other in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert ledger.get(order_id)["status"] == "expired"
    assert not ledger.transition(order_id, ("open",), "paid", "test")
    assert [h["status"] for h in ledger.history(order_id)] == ["open", "expired"]


def test_fulfil_stores_one_record_in_the_claims_own_transaction(ledger, open_ledger):
    order_id, _, _ = ledger.start_order("b1", "usd", items(), per_minute=10)
    record = {"order_id": order_id, "fulfilled_at": "2026-01-01T00:00:00.000000Z", "items": items()}
    charged = {"id": "cs_test_1", "amount_total": 2500}
    others = [open_ledger() for _ in range(8)]
    results = []
    barrier = threading.Barrier(8)

    def attempt(i):
        barrier.wait()
        results.append(others[i].fulfil(order_id, ("open",), record, charged, f"test {i}", event=(f"evt_{i}", "t"),
                                        amount_total=2500))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    order = ledger.get(order_id)
    assert (order["status"], order["fulfilled_at"], order["amount_total"]) == ("paid", record["fulfilled_at"], 2500)
    assert order["charged"] == charged
    [(fid, stored)] = ledger.fulfilments()
    assert stored == record and ledger.fulfilment_id(order_id) == fid and ledger.fulfilments(fid) == []
    assert sum(ledger.seen_event(f"evt_{i}") for i in range(8)) == 1  # only the winner's event is marked handled
    # Paid is final for fulfil(): another status it may move from does not make a second record.
    assert not ledger.fulfil(order_id, ("open", "paid"), record, charged, "again")
    assert len(ledger.fulfilments()) == 1


def test_records_are_listed_in_the_order_they_were_made(ledger):
    made = []
    for n in range(5):
        order_id, _, _ = ledger.start_order(f"b{n}", "usd", items(), per_minute=10)
        assert ledger.fulfil(order_id, ("open",), {"order_id": order_id, "fulfilled_at": "x", "n": n}, {}, "test")
        made.append(order_id)
    records = ledger.fulfilments()
    assert [r["order_id"] for _, r in records] == made
    ids = [fid for fid, _ in records]
    assert ids == sorted(ids) and [r["n"] for _, r in ledger.fulfilments(ids[1], limit=2)] == [2, 3]


def test_a_reader_resuming_after_the_last_record_it_saw_never_skips_one(ledger, open_ledger, monkeypatch):
    """A warehouse polls `fulfilments --after ID`: a record may not become visible after a higher id was read.
    (Two instances' hand-offs: the first still inside its transaction when the second commits.)"""
    import webshop.ledger as ledger_module
    first, second = (ledger.start_order(f"b{n}", "usd", items(), per_minute=10)[0] for n in (1, 2))
    inside, release = threading.Event(), threading.Event()
    note_event = ledger_module._note_event

    def slow_note(c, event_id, *rest):  # the first hand-off stops after its record, before it commits
        if event_id == "evt_first":
            inside.set()
            release.wait(30)
        return note_event(c, event_id, *rest)
    monkeypatch.setattr(ledger_module, "_note_event", slow_note)
    one, two = open_ledger(), open_ledger()
    slow = threading.Thread(target=lambda: one.fulfil(first, ("open",), {"order_id": first, "fulfilled_at": "x"}, {},
                                                       "test", event=("evt_first", "t")))
    slow.start()
    assert inside.wait(30)
    fast = threading.Thread(target=lambda: two.fulfil(second, ("open",), {"order_id": second, "fulfilled_at": "x"}, {},
                                                       "test"))
    fast.start()
    fast.join(2)  # the second either waits for the first, or commits meanwhile (what made the reader skip one)
    seen = [fid for fid, _ in ledger.fulfilments()]
    release.set()
    slow.join(30)
    fast.join(30)
    made = [fid for fid, _ in ledger.fulfilments()]
    assert len(made) == 2 and [fid for fid in made if fid <= max(seen, default=0)] == seen


def test_refunds_keep_the_largest_total_and_a_closed_dispute_keeps_its_outcome(ledger):
    order_id, _, _ = ledger.start_order("b1", "usd", items(), per_minute=10)
    ledger.fulfil(order_id, ("open",), {"order_id": order_id, "fulfilled_at": "x"}, {}, "test", amount_total=2500)
    assert ledger.apply_refund(order_id, 1000, 2500, "test")
    assert not ledger.apply_refund(order_id, 500, 2500, "test")  # an older event, later
    assert (ledger.get(order_id)["status"], ledger.get(order_id)["amount_refunded"]) == ("partially_refunded", 1000)
    assert ledger.apply_refund(order_id, 2500, 2500, "test") and ledger.get(order_id)["status"] == "refunded"
    assert ledger.apply_dispute(order_id, {"id": "dp_1", "status": "lost"}, "test")
    assert not ledger.apply_dispute(order_id, {"id": "dp_1", "status": "needs_response"}, "test")  # created, late
    assert (ledger.get(order_id)["status"], ledger.get(order_id)["dispute_status"]) == ("disputed", "lost")


def test_the_signing_secret_is_made_once_and_shared(ledger, open_ledger):
    secret = ledger.secret()
    assert len(secret) >= 32 and open_ledger().secret() == secret
    ledger.set_checkpoint("secret_key", "short")  # emptied or cut short: replaced, never used
    renewed = ledger.secret()
    assert renewed != secret and len(renewed) >= 32 and open_ledger().secret() == renewed


def test_checkpoints_keep_json_values(ledger):
    assert ledger.checkpoint("mark") is None
    ledger.set_checkpoint("mark", 7)
    ledger.set_checkpoint("mark", {"at": 8})
    assert ledger.checkpoint("mark") == {"at": 8}


def test_connections_the_database_server_dropped_are_replaced_not_failed(tmp_path, postgres_url):
    """A PostgreSQL restart, a failover, or a proxy closing idle connections: the next reads get new connections,
    not an error for each dead one the pool held (a 500 page each)."""
    import psycopg
    ledger = Ledger(load_config({"data_dir": str(tmp_path), "database_url": postgres_url}))
    try:
        with contextlib.ExitStack() as held:  # all the pool holds: trying 16 dead ones in turn takes it past 30 s
            pids = [held.enter_context(ledger.db.read()).conn.info.backend_pid for _ in range(16)]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        for _ in range(4):
            ledger.ping()
        assert ledger.checkpoint("mark") is None
    finally:
        ledger.close()


@pytest.mark.parametrize("given, idle", [("", "30"), ("keepalives_idle=5", "5")])
def test_postgresql_connections_have_keepalives_unless_the_url_sets_its_own(tmp_path, postgres_url, given, idle):
    """A connection a network drops without a word (a NAT's idle timeout) is found within a minute, not hours."""
    url = postgres_url + (f"&{given}" if given else "")
    ledger = Ledger(load_config({"data_dir": str(tmp_path), "database_url": url}))
    try:
        with ledger.db.read() as c:
            parameters = c.conn.info.get_parameters()
        assert parameters["keepalives_idle"] == idle and parameters["tcp_user_timeout"] == "60000"
    finally:
        ledger.close()


def test_processes_opening_a_new_sqlite_ledger_at_once_all_start(tmp_path):
    """gunicorn's workers on a fresh DATA_DIR open the ledger at the same moment. Switching the file to WAL skips
    SQLite's busy handler: one of three failed with "database is locked" about one time in three, and did not start."""
    for attempt in range(15):
        assert at_once(3, ledger_in, str(tmp_path / str(attempt))) == ["ok"] * 3


def ledger_in(data_dir):
    Ledger(load_config({"data_dir": data_dir})).ping()
