"""Load and crash on loopback: simulated shoppers buy through `python shop.py`, the shop is killed mid-load, and the
books still add up. The long runs are `bench/shoppers.py` (see the README's "Faults and load")."""

import pytest

from bench import shoppers

pytestmark = pytest.mark.slow


def test_concurrent_shoppers_lose_nothing_and_fulfil_once(capsys):
    load, books, problems = shoppers.run(shoppers=6, purchases=4, seconds=60)
    shoppers.report(load, books, problems)
    print(capsys.readouterr().out)  # shown with -s or on failure: throughput and p50/p99 per step
    assert load.errors == [] and problems == []
    bought = len(load.paid) + len(load.left_early)
    assert bought == 24 and books["paid_sessions"] == 24 and books["handoff_lines"] == 24
    assert books["lost"] == books["double"] == books["mismatched"] == 0
    assert books["ledger_total"] == books["stripe_total"] > 0
    assert set(shoppers.STEPS) <= set(load.timings)


def test_a_shop_killed_mid_load_restarts_and_reconcile_leaves_every_paid_session_fulfilled_once(capsys):
    load, books, problems, output = shoppers.run_crash(shoppers=6, purchases=10, seconds=90, crash_after=0.8,
                                                      webhook_wait=2)
    shoppers.report(load, books, problems)
    print(capsys.readouterr().out)
    assert "Checked" in output  # reconcile ran against Stripe's (the stand-in's) sessions
    assert load.errors == [] and problems == []
    assert books["lost"] == books["double"] == books["never_handed_off"] == books["mismatched"] == 0
    assert books["paid_sessions"] == books["handoff_lines"] >= len(load.paid)
    assert books["ledger_total"] == books["stripe_total"]
    # The load went on after the restart: more purchases than before the kill, all of them in the books.
    assert len(load.paid) + len(load.left_early) + load.interrupted == 60


def test_stripe_failing_under_load_loses_nothing_and_fulfils_once(capsys):
    """Resets, 500s and rate limits on Stripe's API while shoppers buy; then reconcile, as a cron job would."""
    faults = "POST /v1/checkout/sessions=429*2;*=reset*20;*=500*20"
    load, books, problems = shoppers.run(shoppers=6, purchases=4, seconds=60, faults=faults)
    shoppers.report(load, books, problems)
    print(capsys.readouterr().out)
    assert load.errors == [] and problems == []
    assert load.degraded["checkout answered 503, cart kept"] >= 2  # the two rate limits at least
    assert books["lost"] == books["double"] == books["never_handed_off"] == books["mismatched"] == 0
    assert books["paid_sessions"] == len(load.paid) + len(load.left_early) == books["handoff_lines"]
    assert books["ledger_total"] == books["stripe_total"]


KILL_DURING_HANDOFF = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from shop import make_app
from fulfilment import append_jsonl

shop = make_app({"data_dir": sys.argv[1], "base_url": "http://127.0.0.1:9"}).config["shop"]
catalog = shop.catalog()
import payments
lines = [(catalog.products[0], 1, catalog.products[0].price)]
items = [{"product_id": p.id, "name": p.name, "unit_amount": p.price, "quantity": q} for p, q, _ in lines]
order_id = shop.ledger.create_order(catalog.currency, items)
session = payments.create_session(shop.stripe, payments.checkout_params(catalog, lines, order_id, shop.config.base_url),
                                  order_id)
shop.ledger.attach_session(order_id, session.id, session.url)
shop.standin.pay(session.id)

def hand_off_then_die(record):
    append_jsonl(shop.fulfilment.path, record)  # the warehouse has the line ...
    os.kill(os.getpid(), signal.SIGKILL)        # ... and the power goes before the ledger commits
shop.fulfilment.action = hand_off_then_die
shop.fulfilment.fulfil(session.id)
"""


def test_a_kill_between_hand_off_and_commit_does_not_hand_off_twice(tmp_path):
    """The line reached fulfilments.jsonl, the ledger's commit did not: start-up recovery marks the order."""
    import subprocess
    import sys

    from shop import make_app
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", KILL_DURING_HANDOFF, str(data), str(shoppers.ROOT)],
                          capture_output=True, timeout=60, env={k: v for k, v in shoppers.os.environ.items()
                                                                if not k.startswith(("STRIPE_", "STANDIN_"))})
    assert done.returncode == -9, done.stderr[-2000:]
    assert len((data / "fulfilments.jsonl").read_text().splitlines()) == 1
    shop = make_app({"data_dir": str(data), "base_url": "http://127.0.0.1:9"}).config["shop"]
    (order,) = shop.ledger.list()
    shop.fulfilment.fulfil(order["session_id"], source="reconcile")  # what the next webhook or reconcile does
    lines = (data / "fulfilments.jsonl").read_text().splitlines()
    assert len(lines) == 1, f"order {order['id']} handed off {len(lines)} times"
