"""The merchant's command line, in-process (`cli.main`) and as a real subprocess, on the shop's DATA_DIR."""

import json
import os
import socket
import subprocess
import sys

import pytest

import cli
from catalog import format_money
from tests.conftest import ROOT
from tests.test_webhooks import DISPUTED, buy, handoff, order, pending, start, wire


def closed_port():
    """A loopback port nothing listens on (so "is the shop running?" answers no at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def shop(make_shopper, data_dir, monkeypatch):
    """A shop wired to its webhooks, and the environment that points the CLI at its DATA_DIR."""
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("BASE_URL", f"http://127.0.0.1:{closed_port()}")
    return wire(make_shopper())


@pytest.fixture
def run(capsys):
    """Run `python shop.py ARGS` in-process; returns (exit code, stdout, stderr)."""
    def go(*argv):
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err
    return go


def paid(shop, **kwargs):
    sid = buy(shop, **kwargs)
    shop.standin.deliver_pending()
    return order(shop, sid)


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
    event_ids = [row[0] for row in shop.shop.ledger.connect().execute("SELECT id FROM webhook_events")]
    completed = next(e for e in event_ids if shop.standin.get(e)["type"] == "checkout.session.completed")
    assert f"webhook {completed} checkout.session.completed" in out
    code, out, _ = run("order", o["id"], "--json")
    detail = json.loads(out)
    assert detail["id"] == o["id"] and detail["history"][-1]["status"] == "paid"


@pytest.mark.parametrize("command", [["order"], ["refund"], ["expire"], ["refund", "--amount", "100"]])
def test_unknown_order_is_a_clear_message_and_exit_1(shop, run, command):
    code, out, err = run(command[0], "ord_doesnotexist", *command[1:])
    assert code == 1 and "No order 'ord_doesnotexist'" in err


def test_refund_partial_then_full_through_stripe(shop, run):
    o = paid(shop)
    code, out, _ = run("refund", o["id"], "--amount", "500")
    assert code == 0 and "Refund re_" in out and format_money(500, o["currency"]) in out
    assert "is not running" in out  # the ledger changes when charge.refunded arrives
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
    assert code == 1 and "is refunded: only paid orders can be refunded" in err
    assert len(handoff(shop)) == 1


def test_repeating_a_refund_before_its_event_arrives_does_not_refund_twice(shop, run):
    o = paid(shop)
    assert run("refund", o["id"], "--amount", "300")[0] == 0
    code, out, _ = run("refund", o["id"], "--amount", "300")
    assert code == 0 and "replayed" in out
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 300


def test_refund_over_the_paid_amount_or_of_an_unpaid_order_is_refused(shop, run):
    o = paid(shop)
    code, _, err = run("refund", o["id"], "--amount", str(o["amount_total"] + 1))
    assert code == 1 and "is left to refund" in err
    code, _, err = run("refund", o["id"], "--amount", "0")
    assert code == 1
    unpaid = order(shop, start(shop))
    code, _, err = run("refund", unpaid["id"])
    assert code == 1 and "is open: only paid orders can be refunded" in err
    charge = shop.standin.get(shop.standin.get(o["payment_intent"])["latest_charge"])
    assert charge["amount_refunded"] == 0


def test_reconcile_repairs_dropped_webhooks_once(shop, run):
    first, second = buy(shop), buy(shop)
    lapsed = start(shop)
    shop.shop.stripe.v1.checkout.sessions.expire(lapsed)
    still_open = start(shop)
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


def test_reconcile_finds_the_session_of_a_checkout_that_failed_for_us(shop, run):
    sid = buy(shop)
    o = order(shop, sid)
    # The create call timed out on our side but reached Stripe: the order never learnt its session.
    with shop.shop.ledger.write() as db:
        db.execute("UPDATE orders SET status = 'checkout_failed', session_id = NULL WHERE id = ?", (o["id"],))
    shop.standin.drop_pending_events()
    code, out, _ = run("reconcile")
    assert code == 0 and f"{o['id']}: checkout_failed → paid" in out
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    assert "nothing to repair" in run("reconcile")[1]


def test_expire_an_open_checkout(shop, run):
    sid = start(shop)
    o = order(shop, sid)
    code, out, _ = run("expire", o["id"])
    assert code == 0 and "expired" in out
    assert order(shop, sid)["status"] == "expired" and shop.standin.get(sid)["status"] == "expired"
    shop.standin.deliver_pending()  # the checkout.session.expired event changes nothing more
    assert order(shop, sid)["status"] == "expired"
    code, _, err = run("expire", o["id"])
    assert code == 1 and "only an order with an open checkout can be expired" in err


def test_expire_of_a_checkout_paid_meanwhile_is_refused_and_fulfils_the_order(shop, run):
    sid = buy(shop)  # paid at Stripe; its webhook has not arrived yet
    o = order(shop, sid)
    code, _, err = run("expire", o["id"])
    assert code == 1 and "Stripe refused to expire the checkout" in err and "is now paid (fulfilled)" in err
    assert order(shop, sid)["status"] == "paid" and len(handoff(shop)) == 1
    shop.standin.deliver_pending()
    assert len(handoff(shop)) == 1


def test_bad_since_is_a_usage_error(shop, run):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reconcile", "--since", "yesterday"])
    assert exit_.value.code == 2


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


def test_orders_json_as_a_real_subprocess(shop, data_dir):
    o = paid(shop)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "shop.py", "orders", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["id"], r["status"], r["amount_total"]) for r in rows] == [(o["id"], "paid", o["amount_total"])]
    proc = subprocess.run([sys.executable, "shop.py", "order", "ord_nope"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "No order 'ord_nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_orders_piped_into_a_reader_that_stops_early_end_quietly(data_dir):
    from ledger import Ledger
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(data_dir / "shop.sqlite3")
    for i in range(400):  # far more JSON than a pipe holds, so the writer meets the closed pipe
        ledger.create_order("usd", [{"product_id": "walden", "name": "Walden " * 20, "unit_amount": 999,
                                     "quantity": 1}])
    ledger.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "shop.py", "orders", "--json", "--limit", "400"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10).startswith(b"[")  # `| head -c 10`
    proc.stdout.close()
    assert proc.wait(60) == 1 and b"Traceback" not in proc.stderr.read()


def test_reconcile_records_a_refund_whose_event_was_lost(shop, run):
    """A refund made in the Dashboard whose charge.refunded event never arrived is caught up, once."""
    o = paid(shop)
    stripe_client = shop.shop.stripe
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
    ledger = shop.shop.ledger
    ledger.record_event("evt_recent", "checkout.session.completed")
    ledger.record_event("evt_old", "checkout.session.completed")
    with ledger.write() as db:
        db.execute("UPDATE webhook_events SET received = '2020-01-01T00:00:00.000000Z' WHERE id = 'evt_old'")
    code, out, _ = run("reconcile")
    assert code == 0 and "Forgot 1 webhook event id(s) older than 30 days." in out
    assert ledger.seen_event("evt_recent") and not ledger.seen_event("evt_old")
    assert "Forgot" not in run("reconcile")[1]


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
