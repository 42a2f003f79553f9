"""Group commit: callers that arrive together share a transaction; each still gets its own outcome, exactly once."""

import threading
import time

import pytest

from db import Database
from groupcommit import MAX_BATCH, GroupCommit

SCHEMA = ["CREATE TABLE claims (id TEXT PRIMARY KEY, n INTEGER)"]


@pytest.fixture
def database(tmp_path):
    db = Database(tmp_path / "claims.sqlite3", SCHEMA)
    yield db
    db.close()


def claim_for(name, fail=False):
    """A claim that inserts its row once and hands off its name; raises inside the transaction when asked."""
    def claim(db):
        cur = db.execute("INSERT OR IGNORE INTO claims (id, n) VALUES (?, 1)", (name,))
        if fail:
            raise ValueError(f"claim {name} failed")
        return name if cur.rowcount == 1 else None
    return claim


def run_together(commits, claims, shared=False):
    """Run every claim from its own thread; each thread's result or exception.

    shared: first hold a turn open until every claim is queued behind it, so the next turns are shared."""
    results = [None] * len(claims)
    release = threading.Event()
    gate = None
    if shared:
        gate = threading.Thread(target=commits.run, args=(lambda db: release.wait(10) and None,))
        gate.start()
        while not commits._leading:
            time.sleep(0.001)

    def worker(i):
        try:
            results[i] = commits.run(claims[i])
        except Exception as e:  # the test looks at what each caller got
            results[i] = e
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(claims))]
    for t in threads:
        t.start()
    if gate is not None:
        deadline = time.monotonic() + 10
        while len(commits._queue) < len(claims) and time.monotonic() < deadline:
            time.sleep(0.001)
        release.set()
        gate.join(10)
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a caller never got its answer"
    return results


def test_concurrent_claims_are_committed_and_handed_off_once_each(database):
    handed, batches = [], []

    def hand_off(records):
        batches.append(len(records))
        handed.extend(records)
    commits = GroupCommit(database, hand_off)
    names = [f"c{i:03d}" for i in range(120)]
    results = run_together(commits, [claim_for(n) for n in names] + [claim_for(n) for n in names[:20]], shared=True)
    assert sorted(handed) == names  # the 20 repeats handed off nothing
    assert sorted(r for r in results if r is not None) == names and results.count(None) == 20
    rows = database.connect().execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    assert rows == len(names)
    assert sum(batches) == len(names) and 1 < max(batches) <= MAX_BATCH  # turns were shared, up to the cap


def test_a_failing_claim_fails_alone(database):
    handed = []
    commits = GroupCommit(database, handed.extend)
    claims = [claim_for(f"ok{i}") for i in range(30)] + [claim_for("bad", fail=True)]
    results = run_together(commits, claims, shared=True)  # "bad" shares its turn with the others
    assert isinstance(results[-1], ValueError)
    assert results[:-1] == [f"ok{i}" for i in range(30)]
    assert sorted(handed) == sorted(f"ok{i}" for i in range(30))
    ids = {r[0] for r in database.connect().execute("SELECT id FROM claims")}
    assert "bad" not in ids and len(ids) == 30


def test_a_failed_hand_off_commits_nothing_and_every_caller_of_that_turn_hears_of_it(database):
    def hand_off(records):
        raise OSError("disk full")
    commits = GroupCommit(database, hand_off)
    results = run_together(commits, [claim_for(f"x{i}") for i in range(10)])
    assert all(isinstance(r, OSError) for r in results)
    assert database.connect().execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    # a later try (Stripe's retry, or reconcile) claims them again
    assert GroupCommit(database, lambda records: None).run(claim_for("x0")) == "x0"


def test_alone_runs_in_its_own_transaction_without_hand_off(database):
    handed = []
    commits = GroupCommit(database, handed.extend)
    assert commits.run(claim_for("solo"), alone=True) == "solo"
    assert handed == []
    with pytest.raises(ValueError):
        commits.run(claim_for("solo-bad", fail=True), alone=True)
