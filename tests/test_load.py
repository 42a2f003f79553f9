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
    load, books, problems, output = shoppers.run_crash(shoppers=6, purchases=10, seconds=90, crash_after=0.8)
    shoppers.report(load, books, problems)
    print(capsys.readouterr().out)
    assert "Checked" in output  # reconcile ran against Stripe's (the stand-in's) sessions
    assert load.errors == [] and problems == []
    assert books["lost"] == books["double"] == books["never_handed_off"] == books["mismatched"] == 0
    assert books["paid_sessions"] == books["handoff_lines"] >= len(load.paid)
    assert books["ledger_total"] == books["stripe_total"]
    # The load went on after the restart: more purchases than before the kill, all of them in the books.
    assert len(load.paid) + len(load.left_early) + load.interrupted == 60
