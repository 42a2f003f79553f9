"""Fulfilment: exactly one hand-off line per paid order, from threads, processes, HTTP and the success page."""

import json
import multiprocessing
import threading
from contextlib import contextmanager

import pytest
from waitress.server import create_server

from standin.events import http_post
from tests.conftest import (BASE, buy, edit_catalog, event, handoff, order, pending, sign, start, stop_waitress,
                           together, wait_for, wire)
from webshop import payments
from webshop.fulfilment import Orders
from webshop.settings import ShopError, load_config


@pytest.fixture
def shop(make_shopper):
    return wire(make_shopper())


@pytest.fixture
def served(shop):
    """The same app on a real loopback socket (waitress, 24 threads); yields its base URL."""
    server = create_server(shop.app, host="127.0.0.1", port=0, threads=24)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    stop_waitress(server, thread)


def test_handoff_line_has_items_amounts_email_and_address(shop):
    product = shop.shop.catalog().products[1]
    sid = buy(shop, product=product.id, quantity=2)
    shop.standin.deliver_pending()
    [line] = handoff(shop)
    session = shop.standin.get(sid)
    paid = order(shop, sid)
    assert line["order_id"] == paid["id"] and line["session_id"] == sid
    assert line["items"] == [{"product_id": product.id, "name": product.name, "quantity": 2,
                              "unit_amount": product.price, "amount_total": line["items"][0]["amount_total"]}]
    assert line["amount_total"] == session["amount_total"] == paid["amount_total"]
    assert line["amount_subtotal"] == 2 * product.price
    assert line["amount_shipping"] == session["total_details"]["amount_shipping"]
    assert line["amount_tax"] == session["total_details"]["amount_tax"]
    assert line["currency"] == session["currency"]
    assert line["customer_email"] == "jenny.rosen@example.com" == paid["customer_email"]
    assert line["shipping_address"]["line1"] == "1 Test Street" and line["shipping_name"] == "Jenny Rosen"
    assert line["customer_phone"] == session["customer_details"]["phone"] == "+1 555 010 0000"  # for the carrier
    assert line["payment_intent"] == paid["payment_intent"] and line["fulfilled_at"] == paid["fulfilled_at"]


@pytest.mark.parametrize("behavior", ["exclusive", "inclusive"])
def test_the_handoff_record_says_whether_its_tax_is_in_the_prices_or_added(make_shopper, catalog_copy, behavior):
    """With tax in the prices the total is not subtotal + shipping + tax: the record says which it is."""
    with edit_catalog(catalog_copy) as data:
        data["tax"] = {"mode": "automatic", "behavior": behavior}
    shopper = wire(make_shopper(catalog=str(catalog_copy)))
    sid = buy(shopper)
    shopper.standin.deliver_pending()
    [line] = handoff(shopper)
    assert line["amount_tax"] > 0 and line["tax_included"] is (behavior == "inclusive")
    added = line["amount_tax"] if behavior == "exclusive" else 0
    assert line["amount_total"] == line["amount_subtotal"] + line["amount_shipping"] + added == order(
        shopper, sid)["amount_total"]


def test_unpaid_or_unknown_sessions_are_never_fulfilled(shop):
    sid = start(shop)
    charged, outcome = shop.shop.orders.sync(sid)
    assert charged["id"] == sid and outcome == "no change"
    assert order(shop, sid)["status"] == "open" and order(shop, sid)["fulfilled_at"] is None and handoff(shop) == []
    assert shop.shop.orders.sync("cs_test_unknown") == (None, None)


@pytest.mark.parametrize("first", ["success page", "webhook"])
def test_success_page_and_webhook_together_fulfil_once(shop, first):
    sid = buy(shop)
    steps = {"success page": lambda: shop.get(f"/success?session_id={sid}"),
             "webhook": shop.standin.deliver_pending}
    steps[first]()
    steps["webhook" if first == "success page" else "success page"]()
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    assert "Thank you for your order" in shop.get(f"/success?session_id={sid}").text


def _failing_insert(ledger, statement, times=1):
    """Make the next `times` executions of SQL starting with `statement` raise inside their transaction."""
    real, failures = ledger.db.tx, []

    class Failing:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.lstrip().startswith(statement) and len(failures) < times:
                failures.append(sql)
                raise OSError("the database went away mid-transaction")
            return self.conn.execute(sql, *args)

    @contextmanager
    def tx(*args, **kwargs):
        with real(*args, **kwargs) as conn:
            yield Failing(conn)
    ledger.db.tx = tx
    return failures


def test_a_claim_that_fails_after_marking_the_order_rolls_back_so_the_next_call_fulfils(shop):
    """The order's UPDATE and its hand-off record's INSERT are one transaction: half a claim never stays."""
    sid = buy(shop)
    failures = _failing_insert(shop.shop.orders.ledger, "INSERT INTO fulfilments")
    with pytest.raises(OSError):
        shop.shop.orders.sync(sid, source="test")
    assert failures and order(shop, sid)["fulfilled_at"] is None and order(shop, sid)["status"] == "open"
    assert "paid" not in [h["status"] for h in shop.shop.orders.ledger.history(order(shop, sid)["id"])]
    assert handoff(shop) == []
    assert shop.shop.orders.sync(sid, source="test")[1] == "fulfilled"
    assert shop.shop.orders.sync(sid, source="test")[1] == "already fulfilled"
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1


def test_twenty_concurrent_deliveries_of_the_same_event_over_http(shop, served):
    sid = buy(shop)
    evt = pending(shop, "checkout.session.completed")[0]
    body = json.dumps(evt).encode()
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body.decode(), shop.standin.webhook_secret)}
    statuses = together(20, lambda i: http_post(served + "/webhook", body, headers))
    assert statuses == [200] * 20, statuses
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    assert shop.shop.orders.ledger.seen_event(evt["id"])


def test_twenty_concurrent_completions_with_different_event_ids_over_http(shop, served):
    sid = buy(shop)
    snapshot = pending(shop, "checkout.session.completed")[0]["data"]["object"]
    secret = shop.standin.webhook_secret

    def deliver(i):
        body = json.dumps(event("checkout.session.completed", snapshot, f"evt_concurrent_{i:02d}"))
        return http_post(served + "/webhook", body.encode(), {"Content-Type": "application/json",
                                                              "Stripe-Signature": sign(body, secret)})
    assert together(20, deliver) == [200] * 20
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    history = shop.shop.orders.ledger.history(order(shop, sid)["id"])
    assert sum(1 for h in history if h["note"] == "fulfilled") == 1
    with shop.shop.orders.ledger.db.read() as c:
        found = c.execute("SELECT COUNT(*) AS n FROM webhook_events WHERE id LIKE ?", ("evt_concurrent_%",))
        assert found.fetchone()["n"] == 20


def test_threads_calling_fulfil_directly_fulfil_once(shop):
    sid = buy(shop)
    outcomes = together(12, lambda i: shop.shop.orders.sync(sid, source=f"thread {i}")[1])
    assert sorted(outcomes) == ["already fulfilled"] * 11 + ["fulfilled"]
    assert len(handoff(shop)) == 1


class Turn:
    """A lock that counts the threads that have asked for it."""

    def __init__(self):
        self.lock, self.asked = threading.Lock(), []

    def __enter__(self):
        self.asked.append(threading.current_thread().name)
        self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()


def waiting_behind_a_pass(shop, monkeypatch, failing=()):
    """Four paid orders fulfilled by four threads, the three later ones while the first one's pass over
    fulfilments.jsonl keeps the turn, until all three wait for it; the passes numbered in `failing` find the disk
    full. Returns (the first session, the three later ones, the threads that made a pass, in order)."""
    orders = shop.shop.orders
    if orders.jsonl is None:
        pytest.skip("on PostgreSQL the hand-off records stay in the database")
    paid = []
    for _ in range(4):  # four browsers pay; the shop has not seen any of them yet
        shop.reset()
        paid.append(buy(shop))
    first, *later = paid
    passes, holding, go, real, turn = [], threading.Event(), threading.Event(), orders._export, Turn()

    def export():
        passes.append(threading.current_thread().name)
        if len(passes) in failing:
            raise OSError(28, "No space left on device")
        real()
        if len(passes) == 1:  # begun before the others were fulfilled
            holding.set()
            go.wait(10)
    monkeypatch.setattr(orders, "_export", export)
    monkeypatch.setattr(orders, "exporting", turn)
    threads = [threading.Thread(target=orders.sync, args=(first,), name="first")]
    threads[0].start()
    assert holding.wait(10)
    threads += [threading.Thread(target=orders.sync, args=(sid,), name=sid) for sid in later]
    for t in threads[1:]:
        t.start()
    wait_for(lambda: len(turn.asked) == 4, "the three later threads waiting for their turn")
    go.set()
    for t in threads:
        t.join(10)
    return first, later, passes


def test_threads_waiting_to_write_the_file_get_their_lines_from_one_pass(shop, monkeypatch):
    """Orders fulfilled while another thread writes fulfilments.jsonl wait their turn; the first to get it writes
    the lines of all of them, each once, and the others find nothing left to write."""
    first, later, passes = waiting_behind_a_pass(shop, monkeypatch)
    lines = [line["session_id"] for line in handoff(shop)]
    assert lines[0] == first and sorted(lines[1:]) == sorted(later)
    assert len(passes) == 2 and passes[0] == "first"


def test_a_pass_that_fails_leaves_the_waiting_threads_to_write_their_lines(shop, monkeypatch, caplog):
    """The disk full on the pass that would have written three waiting threads' lines: the next of them writes
    them all, and the one that failed says its line was not written."""
    first, later, passes = waiting_behind_a_pass(shop, monkeypatch, failing={2})
    lines = [line["session_id"] for line in handoff(shop)]
    assert lines[0] == first and sorted(lines[1:]) == sorted(later)
    assert len(passes) == 3 and passes[1] != passes[2]
    assert "fulfilments.jsonl not written" in caplog.text


def _fulfil_in_child(data_dir, database_url, session_id, barrier, results):
    orders = Orders(load_config({"data_dir": data_dir, "base_url": BASE, "database_url": database_url}))
    barrier.wait()
    _, outcome = orders.sync(session_id, source="process")
    results.put(outcome)
    orders.close()


def test_processes_calling_fulfil_at_once_fulfil_once(shop, data_dir, database_url):
    sid = buy(shop)
    mp = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this process's connections
    barrier, results = mp.Barrier(4), mp.Queue()
    procs = [mp.Process(target=_fulfil_in_child, args=(str(data_dir), database_url, sid, barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["already fulfilled"] * 3 + ["fulfilled"]
    assert len(handoff(shop)) == 1 and order(shop, sid)["status"] == "paid"


@pytest.mark.parametrize("settle", ["success page", "webhook"])
def test_an_order_of_more_lines_than_a_page_is_handed_off_and_shown_whole(make_shopper, catalog_copy, settle):
    """Stripe expands only the first 10 line items; the rest are listed, so nothing is left out."""
    with edit_catalog(catalog_copy) as data:
        first = data["products"][0]
        data["products"] = [dict(first, id=f"book-{i:02d}", name=f"Book {i:02d}", price=100 + i) for i in range(23)]
    shopper = wire(make_shopper(catalog=str(catalog_copy)))
    for i in range(23):
        shopper.add(f"book-{i:02d}", 1 + i % 3)
    sid = shopper.session_id(shopper.checkout())
    shopper.standin.pay(sid)
    before = shopper.standin.calls.copy()
    if settle == "webhook":
        shopper.standin.deliver_pending()
    page = shopper.get(f"/success?session_id={sid}").text
    assert all(f"Book {i:02d}" in page for i in range(23))
    [line] = handoff(shopper)
    assert len(line["items"]) == 23
    assert sum(i["unit_amount"] * i["quantity"] for i in line["items"]) == order(shopper, sid)["amount_subtotal"]
    listed = shopper.standin.calls["GET /v1/checkout/sessions/{id}/line_items"] - before[
        "GET /v1/checkout/sessions/{id}/line_items"]
    # One more call for the rest, on the one read of the session: once paid, the page shows what the ledger kept.
    assert listed == 1


def test_books_of_the_same_name_are_handed_off_by_their_own_ids(make_shopper, catalog_copy):
    """The record's lines are the order's own (product id, quantity, price), never looked up by Stripe's name."""
    with edit_catalog(catalog_copy) as data:
        first = data["products"][0]
        data["products"] = [dict(first, id="walden-hardcover", name="Walden", price=2500),
                            dict(first, id="walden-paperback", name="Walden", price=900)]
    shopper = wire(make_shopper(catalog=str(catalog_copy)))
    shopper.add("walden-paperback", 3)
    shopper.add("walden-hardcover", 1)
    sid = shopper.session_id(shopper.checkout())
    shopper.standin.pay(sid)
    shopper.standin.deliver_pending()
    [line] = handoff(shopper)
    assert [(i["product_id"], i["quantity"], i["unit_amount"]) for i in line["items"]] == [
        ("walden-paperback", 3, 900), ("walden-hardcover", 1, 2500)]
    stripe_lines = payments.retrieve_session(shopper.shop.orders.stripe, sid)["line_items"]["data"]
    assert [(i["unit_amount"], i["amount_total"]) for i in line["items"]] == [
        (li["price"]["unit_amount"], li["amount_total"]) for li in stripe_lines]


def test_a_refund_of_an_order_that_does_not_exist_is_a_404_not_a_crash(shop):
    with pytest.raises(ShopError) as refused:
        shop.shop.orders.refund("ord_" + "0" * 24)
    assert refused.value.status == 404 and "No order 'ord_000" in refused.value.message
