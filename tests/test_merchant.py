"""The merchant's command line, in-process (`merchant.main`) and as a real subprocess, on the shop's DATA_DIR
and database (SQLite and PostgreSQL)."""

import json
import logging
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import (DISPUTED, INQUIRY, ROOT, Shopper, buy, edit_catalog, free_port, handoff, order, paid,
                            pending, postgres_server, start, wire)
from standin import ASYNC_FAIL, ASYNC_OK
from webshop import merchant
from webshop import reconcile as reconcile_module
from webshop.catalog import format_money
from webshop.ledger import MIGRATIONS, iso_utc
from webshop.settings import load_config


def closed_port():
    """A loopback port nothing listens on (so "is the shop running?" answers no at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def shop(make_shopper, data_dir, database_url, monkeypatch):
    """A shop wired to its webhooks, and the environment that points the CLI at its DATA_DIR and database."""
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BASE_URL", f"http://127.0.0.1:{closed_port()}")
    return wire(make_shopper())


def ledger(shop):
    return shop.shop.orders.ledger


def cli_env(data_dir, database_url=""):
    """The environment of `python shop.py` as a subprocess on this DATA_DIR and database, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
    env.update(DATA_DIR=str(data_dir), DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return env


def shop_py(*argv, env, timeout=60):
    return subprocess.run([sys.executable, "shop.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def run(capsys):
    """Run `python shop.py ARGS` in-process; returns (exit code, stdout, stderr)."""
    def go(*argv):
        capsys.readouterr()
        code = merchant.main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err
    return go


def browser(shop):
    """Another shopper's browser on the same shop (a browser's new checkout replaces its open one)."""
    return Shopper(shop.app)


def test_orders_csv_lists_every_order_as_the_admin_export_does(shop, run):
    item = [{"product_id": "walden", "name": "Walden", "unit_amount": 999, "quantity": 1}]
    made = {ledger(shop).start_order(f"b{n}", "usd", item, per_minute=10)[0] for n in range(53)}
    code, out, _ = run("orders", "--csv")
    assert code == 0 and {line.split(",")[0] for line in out.splitlines()[1:]} == made
    assert len(run("orders")[1].splitlines()) < 53 and len(run("orders", "--csv", "--limit", "3")[1].splitlines()) == 4


def test_orders_table_json_and_status_filter(shop, run):
    code, out, _ = run("orders")
    assert (code, out.strip()) == (0, "No orders yet.")
    a = paid(shop)
    b = order(shop, start(shop))
    code, out, _ = run("orders")
    assert code == 0 and a["id"] in out and b["id"] in out and "paid" in out and "open" in out
    assert format_money(a["amount_total"], a["currency"]) in out and a["customer_email"] in out
    code, out, _ = run("orders", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["id"] for r in rows} == {a["id"], b["id"]}
    row = next(r for r in rows if r["id"] == a["id"])
    for key in ("id", "status", "session_id", "amount_total", "currency", "created", "fulfilled_at"):
        assert key in row
    assert row["status"] == "paid" and row["amount_total"] == a["amount_total"] and row["fulfilled_at"]
    assert "browser" not in row
    code, out, _ = run("orders", "--status", "paid", "--json")
    assert [r["id"] for r in json.loads(out)] == [a["id"]]
    code, out, _ = run("orders", "--status", "refunded")
    assert "No orders with status refunded." in out


def test_order_shows_items_amounts_reference_and_event_history(shop, run):
    o = paid(shop)
    code, out, _ = run("order", o["id"])
    assert code == 0
    item = o["items"][0]
    assert item["name"] in out and format_money(item["unit_amount"], o["currency"]) in out
    for key in ("amount_subtotal", "amount_shipping", "amount_tax", "amount_total"):
        assert format_money(o[key], o["currency"]) in out
    assert o["customer_email"] in out and o["payment_intent"] in out and o["session_id"] in out
    with ledger(shop).db.read() as db:
        event_ids = [row["id"] for row in db.execute("SELECT id FROM webhook_events").fetchall()]
    completed = next(e for e in event_ids if shop.standin.get(e)["type"] == "checkout.session.completed")
    assert f"webhook {completed} checkout.session.completed" in out
    [record] = handoff(shop)  # where to ship, for the carrier, as /admin shows it
    words = " ".join(out.split())
    assert f"Ship to: {record['shipping_name']}, {record['shipping_address']['line1']}, " in words
    assert f"Delivery: {record['shipping_method']}" in words and record["shipping_method"]
    code, out, _ = run("order", o["id"], "--json")
    detail = json.loads(out)
    assert detail["id"] == o["id"] and detail["history"][-1]["status"] == "paid"
    assert detail["handoff"]["shipping_address"] == record["shipping_address"]


def test_order_shows_the_discount_and_its_code_so_the_amounts_add_up(make_shopper, catalog_copy, data_dir,
                                                                      database_url, monkeypatch, run):
    with edit_catalog(catalog_copy) as data:
        data["promotions"] = [{"code": "TENOFF", "amount_off": 1000}]
    for name, value in (("DATA_DIR", str(data_dir)), ("DATABASE_URL", database_url), ("CATALOG", str(catalog_copy)),
                        ("BASE_URL", f"http://127.0.0.1:{closed_port()}")):
        monkeypatch.setenv(name, value)
    shopper = wire(make_shopper(catalog=str(catalog_copy)))
    session_id = start(shopper, "moby-dick")
    shopper.standin.pay(session_id, promotion_code="TENOFF")
    shopper.standin.deliver_pending()
    o = order(shopper, session_id)
    assert o["amount_discount"] == 1000
    code, out, _ = run("order", o["id"])
    assert code == 0
    line = next(line for line in out.splitlines() if "Discount" in line)
    assert "(TENOFF)" in line and line.endswith(" −$10.00")  # taken off, as the confirmation page writes it


@pytest.mark.parametrize("command", [["order"], ["refund"], ["expire"], ["refund", "--amount", "100"]])
def test_unknown_order_is_a_clear_message_and_exit_1(shop, run, command):
    code, out, err = run(command[0], "ord_doesnotexist", *command[1:])
    assert code == 1 and "No order 'ord_doesnotexist'" in err


def test_refund_partial_then_full_through_stripe(shop, run):
    o = paid(shop)
    code, out, _ = run("refund", o["id"], "--amount", "500")
    assert code == 0 and "Refund re_" in out and format_money(500, o["currency"]) in out
    assert "is not running, or not there (are BASE_URL and PORT set" in out  # the ledger changes when charge.refunded arrives
    assert order(shop, o["session_id"])["status"] == "paid"
    shop.standin.deliver_pending()
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 500)
    code, out, _ = run("refund", o["id"])
    assert code == 0 and format_money(o["amount_total"] - 500, o["currency"]) in out
    shop.standin.deliver_pending()
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("refunded", o["amount_total"])
    code, _, err = run("refund", o["id"])
    assert code == 1 and "is refunded: only paid orders can be refunded (it is refunded in full already)" in err
    assert len(handoff(shop)) == 1
    code, out, _ = run("refund", o["id"], "--restock")  # the copies, left out of the refund, go back now
    assert code == 0 and "refunded in full already; its copies are back in stock now" in out
    assert order(shop, o["session_id"])["restocked"] == 1
    assert "in stock already" in run("refund", o["id"], "--restock")[1]


def test_a_refund_that_fails_later_is_taken_back_by_its_event_or_by_reconcile(shop, run, caplog):
    """A card refund can fail days later (a closed card): its money went back to the balance, not to the shopper."""
    o = paid(shop)
    for amount in ("500", str(o["amount_total"] - 500)):
        assert run("refund", o["id"], "--amount", amount)[0] == 0
        shop.standin.deliver_pending()
    assert (order(shop, o["session_id"])["status"], order(shop, o["session_id"])["amount_refunded"]) == (
        "refunded", o["amount_total"])
    first, rest = sorted(shop.shop.orders.stripe.v1.refunds.list({"payment_intent": o["payment_intent"]}).data,
                         key=lambda r: r.amount != 500)
    shop.standin.fail_refund(rest.id)
    shop.standin.deliver_pending()
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 500)
    assert f"refund {rest.id} of {format_money(rest.amount, o['currency'])} failed" in caplog.text
    code, out, _ = run("refund", o["id"], "--amount", str(rest.amount))  # the same refund again: a new one
    assert code == 0 and "replayed" not in out and rest.id not in out
    shop.standin.deliver_pending()
    assert order(shop, o["session_id"])["amount_refunded"] == o["amount_total"]
    shop.standin.fail_refund(first.id)  # its event lost: reconcile finds the refund failed
    shop.standin.drop_pending_events()
    code, out, _ = run("reconcile")
    after = order(shop, o["session_id"])
    assert code == 0 and "refunded → partially_refunded" in out
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", rest.amount)


def test_a_refund_s_late_event_does_not_undo_its_failure(shop, run):
    """Stripe's events come in any order: a refund's charge.refunded delivered after its refund.failed (an endpoint
    down for a day, say) reads what was given back, instead of counting the failed refund again."""
    o = paid(shop)
    assert run("refund", o["id"], "--amount", "500")[0] == 0
    shop.standin.deliver_pending()
    assert run("refund", o["id"])[0] == 0  # the rest, which fails before its charge.refunded is delivered
    newest = shop.shop.orders.stripe.v1.refunds.list({"payment_intent": o["payment_intent"], "limit": 1}).data[0]
    shop.standin.fail_refund(newest.id)
    shop.standin.deliver_pending(reverse=True)  # refund.failed first, then the refund's own charge.refunded
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 500)


def test_reconcile_finds_a_refund_made_before_its_window_that_failed_in_it(shop, run):
    """`reconcile --since 2h` from cron: a refund fails days after it was made."""
    o = paid(shop)
    assert run("refund", o["id"], "--amount", "500")[0] == 0
    shop.standin.deliver_pending()
    (refund,) = shop.shop.orders.stripe.v1.refunds.list({"payment_intent": o["payment_intent"]}).data
    with shop.standin.store.tx(write=True) as tx:  # made three days ago
        tx.conn.execute("UPDATE objects SET created = created - 259200 WHERE id = ?", (refund.id,))
    shop.standin.fail_refund(refund.id)
    assert shop.standin.drop_pending_events()  # refund.failed lost
    code, out, _ = run("reconcile", "--since", "2h")
    assert code == 0 and f"{o['id']}: partially_refunded → paid" in out
    assert order(shop, o["session_id"])["amount_refunded"] == 0


def test_repeating_a_refund_before_its_event_arrives_does_not_refund_twice(shop, run):
    o = paid(shop)
    assert run("refund", o["id"], "--amount", "300")[0] == 0
    code, out, _ = run("refund", o["id"], "--amount", "300")
    assert code == 0 and "replayed" in out
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 300


def test_refunding_again_before_the_first_refunds_event_says_nothing_more_was_refunded(shop, run):
    o = paid(shop)
    assert run("refund", o["id"], "--amount", str(o["amount_total"] - 100))[0] == 0
    code, _, err = run("refund", o["id"])  # the ledger still thinks all of it is left: Stripe has 100 left
    assert code == 1 and "Nothing more was refunded" in err and "reconcile" in err
    assert run("refund", o["id"], "--amount", "100")[0] == 0
    code, _, err = run("refund", o["id"], "--amount", "50")
    assert code == 1 and "Nothing more was refunded" in err
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == o["amount_total"]
    assert run("reconcile")[0] == 0
    after = order(shop, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("refunded", o["amount_total"])


def test_refund_over_the_paid_amount_or_of_an_unpaid_order_is_refused(shop, run):
    o = paid(shop)
    code, _, err = run("refund", o["id"], "--amount", str(o["amount_total"] + 1))
    assert code == 1 and "is left to refund" in err
    unpaid = order(shop, start(shop))
    code, _, err = run("refund", unpaid["id"])
    assert code == 1 and "is open: only paid orders can be refunded" in err
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 0


def test_reconcile_repairs_dropped_webhooks_once(shop, run):
    first, second = buy(browser(shop)), buy(browser(shop))
    lapsed = start(browser(shop))
    shop.shop.orders.stripe.v1.checkout.sessions.expire(lapsed)
    still_open = start(browser(shop))
    dropped = shop.standin.drop_pending_events()
    assert len(dropped) >= 3 and handoff(shop) == []
    code, out, _ = run("reconcile")
    assert code == 0
    for sid, status in ((first, "paid"), (second, "paid"), (lapsed, "expired"), (still_open, "open")):
        assert order(shop, sid)["status"] == status
    assert "open → paid" in out and "open → expired" in out and "repaired 3 order(s)" in out
    assert sorted(line["session_id"] for line in handoff(shop)) == sorted([first, second])
    code, out, _ = run("reconcile", "--since", "2d")
    assert code == 0 and "nothing to repair" in out
    for event_id in dropped:  # the lost events turn up after all: nothing changes
        assert shop.standin.redeliver(event_id) == 200
    assert len(handoff(shop)) == 2


def test_reconcile_finds_a_checkout_made_before_its_window_and_paid_in_it(shop, run):
    """`reconcile --since 2h` from cron: a checkout lives up to a day, so one may be paid long after it was made."""
    sid = start(browser(shop))
    with shop.standin.store.tx(write=True) as tx:  # made five hours ago ("Continue your payment" since)
        tx.conn.execute("UPDATE objects SET created = created - 18000 WHERE id = ?", (sid,))
    shop.standin.pay(sid)
    assert shop.standin.drop_pending_events()  # checkout.session.completed lost, and no confirmation page seen
    code, out, _ = run("reconcile", "--since", "2h")
    assert code == 0 and f"{order(shop, sid)['id']}: open → paid (fulfilled; session {sid})" in out
    assert [line["session_id"] for line in handoff(shop)] == [sid]


def test_reconcile_does_not_report_a_fulfilment_the_webhook_made_while_it_read(shop, run, monkeypatch):
    """Its cron mails what it prints: a repair another process made meanwhile is not its own to report."""
    sid = buy(shop)
    read = reconcile_module.payments.retrieve_session

    def webhook_first(client, session_id):
        shop.standin.deliver_pending()  # checkout.session.completed arrives during reconcile's read
        return read(client, session_id)
    monkeypatch.setattr(reconcile_module.payments, "retrieve_session", webhook_first)
    code, out, _ = run("reconcile")
    assert code == 0 and "→ paid" not in out and "nothing to repair" in out
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1


def test_a_command_the_database_refuses_says_so_in_one_line_and_exits_3(shop, run, monkeypatch):
    """A full disk or a read-only file is no bug: cron mails one line that says to run it again, not a traceback."""
    refusing = sqlite3.connect(":memory:")
    refusing.execute("PRAGMA query_only = ON")
    with pytest.raises(sqlite3.OperationalError) as refused:  # SQLite's own error, as a read-only ledger gives it
        refusing.execute("CREATE TABLE t (x)")

    def refuse(*args, **kwargs):
        raise refused.value
    monkeypatch.setattr("webshop.ledger.Ledger.list", refuse)
    code, _, err = run("orders")
    assert code == 3 and err.startswith("The shop's database could not be used (SQLITE_READONLY)")
    monkeypatch.setattr("webshop.ledger.Ledger.list", lambda *a, **k: 1 / 0)  # a bug still shows where it is
    with pytest.raises(ZeroDivisionError):
        run("orders")


def test_reconcile_quiet_prints_only_its_repairs_so_cron_mails_only_then(shop, data_dir, database_url):
    env = cli_env(data_dir, database_url)
    proc = shop_py("reconcile", "--quiet", env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")  # INFO lines too are left out
    sid = buy(browser(shop))
    shop.standin.drop_pending_events()
    proc = shop_py("reconcile", "--quiet", env=env)
    assert proc.returncode == 0 and proc.stdout == f"{order(shop, sid)['id']}: open → paid (fulfilled; session {sid})\n"
    assert "INFO" not in proc.stderr


def test_reconcile_finds_the_session_of_a_checkout_that_failed_for_us(shop, run):
    sid = buy(shop)
    o = order(shop, sid)
    # The create call timed out on our side but reached Stripe: the order never learnt its session.
    with ledger(shop).db.tx() as db:
        db.execute("UPDATE orders SET status = 'checkout_failed', session_id = NULL WHERE id = ?", (o["id"],))
    shop.standin.drop_pending_events()
    code, out, _ = run("reconcile")
    assert code == 0 and f"{o['id']}: checkout_failed → paid" in out
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    assert "nothing to repair" in run("reconcile")[1]


def test_reconcile_expires_the_open_session_of_a_checkout_that_failed_for_us(shop, run):
    """The shopper saw an error, never that session, and may have paid a newer one: it must not become payable."""
    sid = start(shop)
    o = order(shop, sid)
    with ledger(shop).db.tx() as db:
        db.execute("UPDATE orders SET status = 'checkout_failed', session_id = NULL WHERE id = ?", (o["id"],))
    code, out, _ = run("reconcile")
    assert code == 0 and f"{o['id']}: expired" in out, out
    assert shop.standin.get(sid)["status"] == "expired" and order(shop, sid)["status"] == "expired"
    assert ledger(shop).open_checkout_for(o["browser"]) is None


def three_days_on(monkeypatch):
    """reconcile's clock, three days on."""
    later = time.time() + 3 * 86400
    monkeypatch.setattr(reconcile_module, "time", type("Later", (), {
        "time": staticmethod(lambda: later), "strftime": staticmethod(time.strftime), "gmtime": time.gmtime}))


@pytest.mark.parametrize("card, outcome", [(ASYNC_OK, "paid"), (ASYNC_FAIL, "payment_failed")])
def test_reconcile_settles_a_bank_payment_whose_outcome_was_missed_days_after_its_checkout(
        shop, run, monkeypatch, card, outcome):
    """Bank debits settle days after the session was made: outside any --since window, still asked about."""
    sid = buy(shop, card=card)
    shop.standin.deliver_pending()
    assert order(shop, sid)["status"] == "awaiting_payment"
    shop.standin.settle_async(sid)
    shop.standin.drop_pending_events()  # the outcome's event never arrives
    three_days_on(monkeypatch)  # reconcile runs three days on, with its default window of 24 hours
    code, out, _ = run("reconcile")
    assert code == 0 and f"awaiting_payment → {outcome}" in out, out
    assert order(shop, sid)["status"] == outcome and len(handoff(shop)) == (outcome == "paid")
    assert "nothing to repair" in run("reconcile")[1]


def test_reconcile_does_not_report_a_bank_payment_the_webhook_settled_while_it_read(shop, run, monkeypatch):
    sid = buy(shop, card=ASYNC_OK)
    shop.standin.deliver_pending()
    shop.standin.settle_async(sid)  # its checkout.session.async_payment_succeeded waits to be sent
    three_days_on(monkeypatch)  # outside reconcile's window: found among the orders awaiting payment
    read = reconcile_module.payments.retrieve_session

    def webhook_first(client, session_id):
        shop.standin.deliver_pending()  # and arrives during reconcile's read
        return read(client, session_id)
    monkeypatch.setattr(reconcile_module.payments, "retrieve_session", webhook_first)
    code, out, _ = run("reconcile")
    assert code == 0 and "→ paid" not in out and "nothing to repair" in out, out
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1


def test_one_reconcile_settles_an_old_bank_payment_and_the_refund_made_since(shop, run):
    sid = buy(shop, card=ASYNC_OK)
    shop.standin.deliver_pending()
    shop.standin.settle_async(sid)
    o = order(shop, sid)
    shop.shop.orders.stripe.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": 300})
    shop.standin.drop_pending_events()  # neither the payment's outcome nor the refund is heard of
    with shop.standin.store.tx(write=True) as tx:  # the checkout was three days ago, the refund now
        tx.conn.execute("UPDATE objects SET created = created - 259200 WHERE id = ?", (sid,))
    assert run("reconcile")[0] == 0
    assert (order(shop, sid)["status"], order(shop, sid)["amount_refunded"]) == ("partially_refunded", 300)


def test_reconcile_goes_on_past_a_bank_payment_stripe_does_not_know(shop, run):
    """A checkout made with other keys (test keys before a new account's, say): said, and the rest still done."""
    unknown = buy(shop, card=ASYNC_OK)
    shop.standin.deliver_pending()
    with ledger(shop).db.tx() as db:
        db.execute("UPDATE orders SET session_id = ? WHERE session_id = ?", (unknown + "gone", unknown))
    sid = buy(shop, card=ASYNC_OK)
    shop.standin.deliver_pending()
    shop.standin.settle_async(sid)
    shop.standin.drop_pending_events()
    code, out, _ = run("reconcile")
    assert code == 0 and f"still awaiting_payment, its checkout {unknown}gone unknown to Stripe" in out, out
    assert order(shop, sid)["status"] == "paid"


def test_refunding_what_is_left_never_replays_a_partial_refund_of_the_same_amount(shop, run):
    o = paid(shop)
    for amount in ("600", str(o["amount_total"] - 1200)):
        assert run("refund", o["id"], "--amount", amount)[0] == 0
        shop.standin.deliver_pending()
    code, out, _ = run("refund", o["id"])  # what is left: 600 again, a new refund
    assert code == 0 and "replayed" not in out, out
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == o["amount_total"]


def test_expire_an_open_checkout(shop, run):
    sid = start(shop)
    o = order(shop, sid)
    code, out, _ = run("expire", o["id"])
    assert code == 0 and out.startswith(f"Order {o['id']}: checkout {sid} expired.\n")
    assert order(shop, sid)["status"] == "expired" and shop.standin.get(sid)["status"] == "expired"
    shop.standin.deliver_pending()  # the checkout.session.expired event changes nothing more
    assert order(shop, sid)["status"] == "expired"
    code, _, err = run("expire", o["id"])
    assert code == 1 and "only an order with an open checkout can be expired" in err


def test_expire_whose_answer_was_lost_then_rate_limited_is_replayed_not_refused(shop, run, monkeypatch):
    """Its retries keep one idempotency key: the request that did expire it answers, not a new one refused."""
    monkeypatch.setattr("webshop.payments.time.sleep", lambda seconds: None)  # the shop's pause after a 429
    sid = start(shop)
    o = order(shop, sid)
    # it expired the session and its answer was lost; the SDK's retry was rate limited: the shop tries again
    expire = "POST /v1/checkout/sessions/{id}/expire"
    monkeypatch.setenv("STANDIN_FAULTS", f"{expire}=reset*1;{expire}=429*1")  # the command's own stand-in
    code, out, err = run("expire", o["id"])
    assert code == 0 and out.startswith(f"Order {o['id']}: checkout {sid} expired.\n"), (out, err)
    assert shop.standin.get(sid)["status"] == "expired"


def test_expire_that_stripe_refuses_though_the_checkout_is_open_says_so_and_leaves_it_open(shop, run, monkeypatch):
    sid = start(shop)
    o = order(shop, sid)
    monkeypatch.setenv("STANDIN_FAULTS", "POST /v1/checkout/sessions/{id}/expire=400*1")  # the command's stand-in
    code, _, err = run("expire", o["id"])
    assert code == 3 and f"Stripe did not expire {sid}, which is still open" in err and "Run it again" in err
    assert order(shop, sid)["status"] == "open" and shop.standin.get(sid)["status"] == "open"


def test_expire_of_a_checkout_paid_meanwhile_is_refused_and_fulfils_the_order(shop, run):
    sid = buy(shop)  # paid at Stripe; its webhook has not arrived yet
    o = order(shop, sid)
    code, _, err = run("expire", o["id"])
    assert code == 1 and "Stripe refused to expire the checkout" in err and "is now paid (fulfilled)" in err
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    shop.standin.deliver_pending()
    assert len(handoff(shop)) == 1


@pytest.mark.parametrize("argv, message", [
    (["orders", "--limit", "99999999999999999999"], "expected a whole number from 1 to 100000"),
    (["orders", "--limit", "0"], "expected a whole number from 1 to 100000"),
    (["orders", "--limit", "-5"], "expected a whole number from 1 to 100000"),
    (["orders", "--limit", "ten"], "expected a whole number from 1 to 100000"),
    (["orders", "--limit", "9" * 5000], "expected a whole number from 1 to 100000"),
    (["reconcile", "--since", "999999d"], "expected a duration up to 400d"),
    (["reconcile", "--since", "401d"], "expected a duration up to 400d"),
    (["reconcile", "--since", "99999999999999999999d"], "expected a duration up to 400d"),
    (["reconcile", "--since", "yesterday"], "expected a duration up to 400d"),
    (["reconcile", "--since=-1h"], "expected a duration up to 400d"),
    (["refund", "ord_x", "--amount", "1e3"], "expected a whole number from 1 to"),
    (["refund", "ord_x", "--amount", "0"], "expected a whole number from 1 to"),
    (["refund", "ord_x", "--amount", "12.99"], "in minor units (cents: 1250 for 12.50), got '12.99'"),
    (["orders", "--json", "--csv"], "argument --csv: not allowed with argument --json"),
    (["fulfilments", "--after", "-1"], "expected a whole number from 0 to"),
])
def test_out_of_range_arguments_are_a_usage_error_without_a_traceback(capsys, argv, message):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        merchant.main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and message in err and "Traceback" not in out + err


def test_out_of_range_limit_as_a_real_subprocess(data_dir):
    for argv in (["orders", "--limit", "99999999999999999999"], ["reconcile", "--since", "999999d"]):
        proc = shop_py(*argv, env=cli_env(data_dir))
        assert proc.returncode == 2, proc.stderr
        assert "expected a" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("setting, said", [
    ({"DATA_DIR": "/proc/no-such-folder"}, "DATA_DIR /proc/no-such-folder: No such file or directory"),
    ({"DATA_DIR": "/etc/hostname"}, "DATA_DIR /etc/hostname: File exists"),  # a file, not a folder
    ({"STANDIN_LATENCY_MS": "abc"}, "STANDIN_LATENCY_MS must be a whole number of milliseconds"),
    ({"STANDIN_FAULTS": "bogus"}, "STANDIN_FAULTS: cannot parse 'bogus'")])
def test_a_setting_that_stops_the_shop_from_opening_its_data_is_named_with_its_problem(data_dir, setting, said):
    for argv in (["orders"], ["serve", "--port", str(free_port())]):
        proc = shop_py(*argv, env={**cli_env(data_dir), **setting}, timeout=30)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr and "database" not in proc.stderr


def test_serve_on_an_address_that_is_no_address_says_so_without_a_traceback(data_dir):
    proc = shop_py("serve", "--port", str(free_port()), env={**cli_env(data_dir), "HOST": "999.1.1.1"}, timeout=30)
    assert proc.returncode == 2 and "cannot listen on 999.1.1.1:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_warns_of_an_svg_image_with_no_png_beside_it_for_stripes_checkout(catalog_copy, monkeypatch, run):
    """Checkout shows JPEG and PNG product images: an SVG alone leaves the book with no picture on Stripe's page."""
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["image"] = "favicon.svg"  # an SVG in public/ with no PNG of its name
    monkeypatch.setenv("CATALOG", str(catalog_copy))
    code, out, _ = run("check")
    product = json.loads(catalog_copy.read_text())["products"][0]["id"]
    assert code == 0 and out.count("warning: product") == 1
    assert f"warning: product {product}: Stripe's Checkout shows no SVG: put a PNG of the same name beside " \
           "public/favicon.svg, then save catalog.json again" in out


def test_check_and_serving_warn_of_a_name_in_env_that_is_no_setting_such_as_a_misspelled_key(
        tmp_path, monkeypatch, run, caplog):
    (tmp_path / "public").symlink_to(ROOT / "public")
    (tmp_path / "catalog.json").write_bytes((ROOT / "catalog.json").read_bytes())
    (tmp_path / ".env").write_text("STRIPE_KEY=sk_test_x\nPORT=8001\nSTANDIN_LATENCY_MS=0\n")
    monkeypatch.setattr(merchant, "ROOT", tmp_path)
    for name in ("STRIPE_KEY", "PORT", "STANDIN_LATENCY_MS"):  # set (empty) here, so .env's never leak into others
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CATALOG", str(tmp_path / "catalog.json"))
    code, out, _ = run("check")
    assert code == 0 and "mode offline" in out  # the key was not read: the shop is offline
    assert out.count("warning: .env:") == 1
    assert "warning: .env: STRIPE_KEY is not a setting of the shop (did you mean STRIPE_SECRET_KEY?)" in out

    class Server:  # serving, started and stopped at once (Ctrl-C): its log says so too, not only the banner
        def run(self):
            raise KeyboardInterrupt

        def close(self):
            pass
    monkeypatch.setattr("waitress.create_server", lambda app, **options: Server())
    monkeypatch.setattr(merchant.signal, "signal", lambda *args: None)  # leave pytest's SIGTERM handler alone
    caplog.set_level(logging.WARNING, logger="shop")
    assert merchant.main([]) == 0
    assert ".env: STRIPE_KEY is not a setting of the shop (did you mean STRIPE_SECRET_KEY?)" in caplog.text
    (tmp_path / ".env").write_text("STRIPE_SECRET_KEY=\nsk_test_51PastedOnItsOwnLine\n")  # the value's own line
    code, out, _ = run("check")
    assert "warning: .env: a line that is no NAME=value is ignored" in out and "sk_test_51" not in out


def test_check_connects_to_the_database_so_a_bad_option_or_name_is_found_before_serving(data_dir, monkeypatch, run):
    from psycopg import conninfo
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    server = conninfo.conninfo_to_dict(postgres_server())
    url = f"postgresql://{server.get('user', 'postgres')}@{server.get('host', '127.0.0.1')}:{server.get('port', 5432)}"
    for database_url, said in ((f"{url}/postgres?sslmode=bogus", 'invalid sslmode value: "bogus"'),
                               (f"{url}/postgres?connect_timeout=abc", "bad value for connect_timeout: 'abc'"),
                               (url.replace("@", ":s3cret@") + "/shop_no_such_db", '"shop_no_such_db" does not exist')):
        monkeypatch.setenv("DATABASE_URL", database_url)
        code, out, _ = run("check")
        assert code == 1 and out.startswith("DATABASE_URL: cannot connect: ") and said in out, out
        assert "s3cret" not in out
    monkeypatch.setenv("DATABASE_URL", f"{url}/{server.get('dbname', 'postgres')}")
    code, out, _ = run("check")
    assert code == 0 and out.startswith("ok: catalog.json is valid"), out


def test_a_database_url_that_cannot_connect_stops_a_command_with_libpqs_reason(data_dir, monkeypatch, run, caplog):
    from psycopg import conninfo
    server = conninfo.conninfo_to_dict(postgres_server())
    url = f"postgresql://{server.get('user', 'postgres')}:s3cret@{server.get('host', '127.0.0.1')}:" \
          f"{server.get('port', 5432)}/shop_no_such_db"
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", url)
    code, _, err = run("orders")
    assert code == 2 and err.startswith("cannot open the shop's data: DATABASE_URL: cannot connect: "), err
    assert '"shop_no_such_db" does not exist' in err and "s3cret" not in err + caplog.text
    assert "psycopg.pool" not in caplog.text  # not the pool's retries, one a second for 30 s


@pytest.mark.parametrize("content", [b"ADMIN_PASSWORD=caf\xe9s3cret\n", b"PORT=80\x00\n"])
def test_a_dot_env_that_cannot_be_read_is_named_in_one_line(tmp_path, monkeypatch, run, content):
    (tmp_path / ".env").write_bytes(content)
    monkeypatch.setattr(merchant, "ROOT", tmp_path)
    code, _, err = run("check")
    assert code == 2 and err.strip() == ".env: cannot be read: it must be UTF-8 text with no NUL bytes"


def test_stripe_unreachable_is_a_clear_message_and_exit_3(shop, run, monkeypatch):
    o = paid(shop)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_" + "u" * 24)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_" + "u" * 24)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("STRIPE_MAX_RETRIES", "1")
    monkeypatch.setenv("STRIPE_TIMEOUT", "2")
    for argv in (["reconcile"], ["refund", o["id"], "--amount", "100"]):
        code, out, err = run(*argv)
        assert code == 3 and "Stripe did not answer" in err and "Run the same command again" in err, (argv, out, err)
    assert order(shop, o["session_id"])["amount_refunded"] == 0


def test_a_key_stripe_refuses_is_named_with_exit_2_not_run_again(shop, run, monkeypatch, spawn, tmp_path):
    """A revoked or rolled key: Stripe answers 401, so nothing was done and a second run would fail the same way."""
    o = paid(shop)
    port = free_port()
    spawn([sys.executable, "-m", "standin", "--port", str(port), "--data-dir", str(tmp_path / "stripe")], port)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_rolled-key")  # the stand-in's 401, as Stripe's for a dead key
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_" + "u" * 24)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{port}")
    for argv in (["reconcile"], ["refund", o["id"], "--amount", "100"]):
        code, out, err = run(*argv)
        assert code == 2 and "Stripe refused STRIPE_SECRET_KEY (AuthenticationError)" in err, (argv, out, err)
        assert "did not answer" not in err and "rolled-key" not in out + err
    assert order(shop, o["session_id"])["amount_refunded"] == 0


def test_orders_json_as_a_real_subprocess(shop, data_dir, database_url):
    o = paid(shop)
    proc = shop_py("orders", "--json", env=cli_env(data_dir, database_url))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["id"], r["status"], r["amount_total"]) for r in rows] == [(o["id"], "paid", o["amount_total"])]
    proc = shop_py("order", "ord_nope", env=cli_env(data_dir, database_url))
    assert proc.returncode == 1 and "No order 'ord_nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_orders_piped_into_a_reader_that_stops_early_end_quietly(data_dir, database_url):
    from webshop.ledger import Ledger
    book = Ledger(load_config({"data_dir": str(data_dir), "database_url": database_url}, environ={}))
    for i in range(400):  # far more JSON than a pipe holds, so the writer meets the closed pipe
        book.start_order(f"browser-{i}", "usd", [{"product_id": "walden", "name": "Walden " * 20, "unit_amount": 999,
                                                   "quantity": 1}], per_minute=1)
    book.close()
    proc = subprocess.Popen([sys.executable, "shop.py", "orders", "--json", "--limit", "400"], cwd=ROOT,
                            env=cli_env(data_dir, database_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10).startswith(b"[")  # `| head -c 10`
    proc.stdout.close()
    assert proc.wait(60) == 1 and b"Traceback" not in proc.stderr.read()


def test_reconcile_asks_stripe_about_the_refunded_orders_only_not_every_paid_one(shop, run, caplog):
    """Stripe's rate limit: one list of the window's refunds, then one call for each order it names."""
    orders = [paid(shop) for _ in range(3)]
    shop.shop.orders.stripe.v1.refunds.create({"payment_intent": orders[1]["payment_intent"], "amount": 300})
    assert shop.standin.drop_pending_events()  # charge.refunded lost
    caplog.set_level(logging.INFO, logger="shop.stripe")
    code, out, _ = run("reconcile")
    assert code == 0 and f"{orders[1]['id']}: paid → partially_refunded (refund recorded" in out
    asked = [r.getMessage().split()[1:3] for r in caplog.records if r.name == "shop.stripe"]
    assert asked.count(["GET", "/v1/refunds"]) == 2 and len(asked) == 6  # the window's refunds, then its order's
    assert [order(shop, o["session_id"])["amount_refunded"] for o in orders] == [0, 300, 0]


def test_reconcile_records_a_lost_refund_of_an_order_paid_before_its_window(shop, run):
    """`reconcile --since 2h` from cron: a refund made now is usually of an older payment."""
    o = paid(shop)
    with shop.standin.store.tx(write=True) as tx:  # the checkout was three hours ago
        tx.conn.execute("UPDATE objects SET created = created - 10800 WHERE id = ?", (o["session_id"],))
    shop.shop.orders.stripe.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": 200})
    assert shop.standin.drop_pending_events()  # charge.refunded lost
    code, out, _ = run("reconcile", "--since", "2h")
    assert code == 0 and f"{o['id']}: paid → partially_refunded (refund recorded)" in out
    assert order(shop, o["session_id"])["amount_refunded"] == 200


def test_emails_a_command_sends_while_the_catalog_is_broken_carry_the_shops_last_name(
        make_shopper, catalog_copy, data_dir, database_url, monkeypatch, run):
    """Reconcile from cron fulfils an order whose webhook was lost: its customer email names the shop."""
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CATALOG", str(catalog_copy))
    with edit_catalog(catalog_copy) as data:
        data["shop"]["name"] = "Lantern & Leaf"
    shop = make_shopper(catalog=str(catalog_copy))
    session_id = buy(shop)
    assert shop.standin.drop_pending_events()  # the webhook is lost
    catalog_copy.write_text('{"shop": ')  # a broken edit
    code, out, _ = run("reconcile")
    assert code == 0 and "paid" in out
    with ledger(shop).db.read() as c:
        messages = [r["message"] for r in c.execute("SELECT message FROM outbox")]
    assert messages and all("Lantern & Leaf" in m and "Test shop" not in m for m in messages)
    assert order(shop, session_id)["status"] == "paid"


def test_reconcile_records_a_refund_whose_event_was_lost(shop, run):
    """A refund made in the Dashboard whose charge.refunded event never arrived is caught up, once."""
    o = paid(shop)
    stripe_client = shop.shop.orders.stripe
    stripe_client.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": 500})
    assert shop.standin.drop_pending_events()  # charge.refunded lost
    assert order(shop, o["session_id"])["status"] == "paid"
    code, out, _ = run("reconcile")
    assert code == 0 and "paid → partially_refunded (refund recorded" in out and "repaired 1 order(s)" in out
    after = order(shop, o["session_id"])
    assert after["status"] == "partially_refunded" and after["amount_refunded"] == 500
    code, out, _ = run("reconcile")
    assert code == 0 and "nothing to repair" in out
    stripe_client.v1.refunds.create({"payment_intent": o["payment_intent"]})  # the rest, event lost again
    shop.standin.drop_pending_events()
    code, out, _ = run("reconcile")
    assert "partially_refunded → refunded" in out
    after = order(shop, o["session_id"])
    assert after["status"] == "refunded" and after["amount_refunded"] == after["amount_total"]
    assert len(handoff(shop)) == 1  # refunds never hand an order off again


def test_reconcile_forgets_webhook_event_ids_older_than_30_days(shop, run):
    events = ledger(shop)
    events.record_event("evt_recent", "checkout.session.completed")
    events.record_event("evt_old", "checkout.session.completed")
    with events.db.tx() as db:
        db.execute("UPDATE webhook_events SET received = '2020-01-01T00:00:00.000000Z' WHERE id = 'evt_old'")
    code, out, _ = run("reconcile")
    assert code == 0 and "Forgot 1 webhook event id(s) older than 30 days." in out
    assert events.seen_event("evt_recent") and not events.seen_event("evt_old")
    assert "Forgot" not in run("reconcile")[1]


def test_reconcile_records_a_lost_refund_of_an_order_disputed_since(shop, run):
    """A partial refund whose event was lost, then a dispute of the rest: the refund is still caught up."""
    o = paid(shop)
    stripe_client = shop.shop.orders.stripe
    stripe_client.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": 400})
    assert shop.standin.drop_pending_events()  # charge.refunded lost
    charge = stripe_client.v1.payment_intents.retrieve(o["payment_intent"]).latest_charge
    shop.standin.open_dispute(charge)
    with pytest.raises(ValueError):
        shop.standin.open_dispute(charge)  # once only
    shop.standin.deliver_pending()
    assert (order(shop, o["session_id"])["status"], order(shop, o["session_id"])["amount_refunded"]) == ("disputed", 0)
    code, out, _ = run("reconcile")
    assert code == 0 and f"{o['id']}: disputed → disputed (refund recorded)" in out
    after = order(shop, o["session_id"])
    assert (after["status"], after["dispute_status"], after["amount_refunded"]) == ("disputed", "needs_response", 400)
    assert "nothing to repair" in run("reconcile")[1]


def test_an_order_the_bank_inquires_about_can_be_refunded_one_charged_back_cannot(shop, run):
    """An inquiry takes no money and leaves the payment refundable, which settles it; a chargeback does not."""
    asked, charged_back = (paid(shop, card=card) for card in (INQUIRY, DISPUTED))
    assert [(o["status"], o["dispute_status"]) for o in (asked, charged_back)] == [
        ("disputed", "warning_needs_response"), ("disputed", "needs_response")]
    code, out, _ = run("refund", asked["id"], "--amount", "100")
    assert code == 0, out
    (inquiry,) = [d for d in shop.shop.orders.stripe.v1.disputes.list().data if d.status.startswith("warning_")]
    shop.standin.close_dispute(inquiry.id)
    shop.standin.deliver_pending()  # the inquiry closed: the payment stands, and the rest can be refunded too
    assert order(shop, asked["session_id"])["dispute_status"] == "warning_closed"
    assert run("refund", asked["id"])[0] == 0
    shop.standin.deliver_pending()
    after = order(shop, asked["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("disputed", asked["amount_total"])
    code, _, err = run("refund", asked["id"])
    assert code == 1 and "it is refunded in full already" in err
    code, _, err = run("refund", charged_back["id"])
    assert code == 1 and "answer the dispute in the Stripe Dashboard instead" in err
    assert order(shop, charged_back["session_id"])["amount_refunded"] == 0


def test_reconcile_catches_up_a_dispute_whose_events_were_lost(shop, run):
    sid = buy(shop, card=DISPUTED)
    completed = pending(shop, "checkout.session.completed")[0]["id"]
    dispute = pending(shop, "charge.dispute.created")[0]["data"]["object"]["id"]
    assert shop.standin.redeliver(completed) == 200  # the payment is known ...
    shop.standin.drop_pending_events()  # ... its dispute never arrives
    o = order(shop, sid)
    assert (o["status"], o["dispute_status"]) == ("paid", None)
    code, out, _ = run("reconcile")
    assert code == 0 and f"{o['id']}: paid → disputed (dispute {dispute} needs_response)" in out
    assert (order(shop, sid)["status"], order(shop, sid)["dispute_status"]) == ("disputed", "needs_response")
    assert "nothing to repair" in run("reconcile")[1]

    # it closes (won) weeks after it opened, so outside the window, and that event is lost too
    shop.standin.close_dispute(dispute, won=True)
    shop.standin.drop_pending_events()
    with shop.standin.store.tx(write=True) as tx:  # it opened 30 days ago
        tx.conn.execute("UPDATE objects SET created = created - 30 * 86400 WHERE id = ?", (dispute,))
    code, out, _ = run("reconcile", "--since", "1h")
    assert code == 0 and f"{o['id']}: disputed → disputed (dispute {dispute} won)" in out
    assert order(shop, sid)["dispute_status"] == "won"
    assert "nothing to repair" in run("reconcile")[1]
    assert len(handoff(shop)) == 1  # fulfilled once, before the dispute


# -- customer text on the merchant's terminal ----------------------------------------------------------------------

HOSTILE = "\x1b[31m\x1b]0;owned\x07\u202e\x9b2J"  # colour, window title, bell, bidi override, C1 CSI


def test_orders_and_order_escape_terminal_control_sequences_in_customer_text(shop, run):
    """An email (as an older version stored what Stripe's page took) and item names never reach the terminal as
    escape sequences."""
    o = paid(shop)
    items = [{**o["items"][0], "name": f"Walden{HOSTILE}"}]
    with ledger(shop).db.tx() as db:
        db.execute("UPDATE orders SET items = ?, customer_email = ? WHERE id = ?",
                   (json.dumps(items), f"mallory{HOSTILE}@example.com", o["id"]))
    o = ledger(shop).get(o["id"])
    for argv in (["orders"], ["order", o["id"]], ["orders", "--json"], ["order", o["id"], "--json"]):
        code, out, _ = run(*argv)
        assert code == 0 and not any(c in out for c in "\x1b\x07\u202e\x9b"), (argv, out)
    code, out, _ = run("orders")
    assert "mallory\\x1b[31m" in out
    code, out, _ = run("order", o["id"])
    assert f"mallory{ascii(HOSTILE)[1:-1]}@example.com" in out and "Walden\\x1b[31m\\x1b]0;owned" in out
    assert json.loads(run("orders", "--json")[1])[0]["customer_email"] == o["customer_email"]  # JSON keeps it exact


def test_an_unknown_order_id_with_escapes_is_escaped_in_the_message(shop, run):
    code, out, err = run("order", f"ord_{HOSTILE}")
    assert code == 1 and "No order" in err and "\x1b" not in out + err


# -- hand-off records ----------------------------------------------------------------------------------------------

def test_fulfilments_json_prints_the_hand_off_records_in_order_and_resumes_after_an_id(shop, run):
    code, out, _ = run("fulfilments", "--json")
    assert (code, out) == (0, "")
    bought = [paid(browser(shop), product=p.id) for p in shop.shop.catalog().products[:3]]
    code, out, _ = run("fulfilments", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["order_id"] for r in lines] == [o["id"] for o in bought]
    ids = [r.pop("id") for r in lines]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert lines == handoff(shop)  # the very records the warehouse gets (fulfilments.jsonl on SQLite)
    assert [r["items"][0]["product_id"] for r in lines] == [p.id for p in shop.shop.catalog().products[:3]]
    code, out, _ = run("fulfilments", "--json", "--after", str(ids[0]))
    assert code == 0 and [json.loads(line)["order_id"] for line in out.splitlines()] == [o["id"] for o in bought[1:]]
    assert run("fulfilments", "--json", "--after", str(ids[-1]))[1] == ""
    later = paid(browser(shop))
    code, out, _ = run("fulfilments", "--json", "--after", str(ids[-1]))
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["order_id"] == later["id"] and record["id"] > ids[-1]


def test_fulfilments_follow_prints_new_records_as_they_come(shop, data_dir, database_url):
    first = paid(shop)
    proc = subprocess.Popen([sys.executable, "shop.py", "fulfilments", "--json", "--follow"], cwd=ROOT,
                            env=cli_env(data_dir, database_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert json.loads(lines.get(timeout=60))["order_id"] == first["id"]
        second = paid(browser(shop))
        assert json.loads(lines.get(timeout=60))["order_id"] == second["id"]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err


# -- migrate -------------------------------------------------------------------------------------------------------

def schema_version(data_dir, database_url):
    if database_url:
        import psycopg
        with psycopg.connect(database_url) as db:
            return db.execute("SELECT version FROM schema_version").fetchone()[0]
    db = sqlite3.connect(data_dir / "shop.sqlite3")
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_migrate_makes_the_schema_on_a_new_data_dir_and_is_safe_to_repeat(data_dir, database_url):
    env = cli_env(data_dir, database_url)
    proc = shop_py("migrate", env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert schema_version(data_dir, database_url) == len(MIGRATIONS)
    if not database_url:  # the ledger holds shoppers' emails: readable by the shop's user only
        assert (data_dir / "shop.sqlite3").stat().st_mode & 0o777 == 0o600
    assert shop_py("migrate", env=env).returncode == 0
    assert schema_version(data_dir, database_url) == len(MIGRATIONS)
    assert shop_py("orders", env=env).stdout.strip() == "No orders yet."


def test_migrate_brings_an_older_sqlite_ledger_up_to_date_and_keeps_its_orders(data_dir):
    data_dir.mkdir(parents=True)
    db = sqlite3.connect(data_dir / "shop.sqlite3", isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        for statement in script.split(";"):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("INSERT INTO orders (id, status, currency, items, amount_subtotal, created, updated) VALUES "
               "('ord_old', 'expired', 'usd', '[]', 999, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')")
    db.close()
    proc = shop_py("migrate", env=cli_env(data_dir))
    assert proc.returncode == 0, proc.stderr
    assert schema_version(data_dir, "") == len(MIGRATIONS)
    proc = shop_py("orders", "--json", env=cli_env(data_dir))
    assert [(r["id"], r["status"]) for r in json.loads(proc.stdout)] == [("ord_old", "expired")]


# -- reconcile: checkouts that never reached Stripe ----------------------------------------------------------------

def test_reconcile_settles_an_order_left_open_without_a_session_once(shop, run):
    """The process died between the order row and the Stripe call: after 10 minutes the order is
    checkout_failed; a younger one may still be waiting on Stripe, and one with a session is left to Stripe."""
    book = ledger(shop)
    item = [{"product_id": "walden", "name": "Walden", "unit_amount": 999, "quantity": 1}]
    lost, _, _ = book.start_order("browser-lost", "usd", item, per_minute=10)
    young, _, _ = book.start_order("browser-young", "usd", item, per_minute=10)
    with_session = order(shop, start(shop))
    with book.db.tx() as db:
        for order_id, minutes in ((lost, 20), (young, 1), (with_session["id"], 20)):
            db.execute("UPDATE orders SET created = ? WHERE id = ?", (iso_utc(time.time() - minutes * 60), order_id))
    code, out, _ = run("reconcile")
    assert code == 0 and f"{lost}: open → checkout_failed" in out and "repaired 1 order(s)" in out
    assert young not in out and with_session["id"] not in out
    assert [book.get(i)["status"] for i in (lost, young, with_session["id"])] == ["checkout_failed", "open", "open"]
    assert book.history(lost)[-1]["source"] == "reconcile"
    history = book.history(lost)
    code, out, _ = run("reconcile")
    assert code == 0 and "nothing to repair" in out and lost not in out
    assert book.get(lost)["status"] == "checkout_failed" and book.history(lost) == history
    assert book.get(young)["status"] == "open"


def test_stripe_calls_are_logged_once_each_by_the_shop_and_never_as_api_stripe_com_offline(shop, data_dir,
                                                                                          database_url):
    """The shop logs one line per Stripe call (endpoint, status, time, request id); the SDK's own lines would add
    two more per call, naming api.stripe.com though the offline stand-in answered."""
    paid(shop)
    proc = shop_py("reconcile", env=cli_env(data_dir, database_url))
    assert proc.returncode == 0, proc.stderr
    assert "shop.stripe: stripe GET /v1/checkout/sessions status=200" in proc.stderr
    assert "api.stripe.com" not in proc.stdout + proc.stderr


def test_a_refund_of_the_same_amount_is_replayed_after_one_of_another_amount(shop, run):
    o = paid(shop)
    for amount in ("200", "300", "200"):
        code, out, _ = run("refund", o["id"], "--amount", amount)
    assert code == 0 and "replayed" in out
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 500


def test_the_same_refund_after_its_event_arrived_is_still_replayed_and_again_makes_a_second(shop, run):
    o = paid(shop)
    assert run("refund", o["id"], "--amount", "300")[0] == 0
    shop.standin.deliver_pending()  # the charge.refunded event arrives: the ledger now says 300 refunded
    assert shop.shop.orders.ledger.get(o["id"])["amount_refunded"] == 300
    code, out, _ = run("refund", o["id"], "--amount", "300")
    assert code == 0 and "replayed" in out and "is partially_refunded" in out and "event reaches" not in out
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 300
    code, out, _ = run("refund", o["id"], "--amount", "300", "--again")
    assert code == 0 and "replayed" not in out
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 600
