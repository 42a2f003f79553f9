"""payments.SharedReads: views of one session share Stripe's answer, however long Stripe takes to give it."""

import threading
import time

import pytest

from webshop import payments


def test_a_view_joins_a_read_still_under_way_even_after_the_sharing_window(monkeypatch):
    # A Stripe slower than the window (a 429 retried with backoff, a slow answer) must not start a second read of
    # the same session per window while the first is still waiting: that multiplies calls when Stripe is limiting.
    calls, release = [], threading.Event()

    def slow_read(client, session_id):
        calls.append(session_id)
        release.wait(5)
        return {"id": session_id, "n": len(calls)}

    monkeypatch.setattr(payments, "retrieve_session", slow_read)
    reads, answers = payments.SharedReads(client=None, seconds=0.05), []
    views = [threading.Thread(target=lambda: answers.append(reads.retrieve("cs_test_1"))) for _ in range(2)]
    views[0].start()
    time.sleep(0.2)  # past the window, the first read still waiting for Stripe
    views[1].start()
    time.sleep(0.1)
    release.set()
    for view in views:
        view.join(5)
    assert calls == ["cs_test_1"]
    assert answers == [{"id": "cs_test_1", "n": 1}] * 2


def test_a_failed_read_is_not_shared_with_later_views(monkeypatch):
    answers = iter([payments.ShopError(503, "down"), {"id": "cs_test_1"}])

    def read(client, session_id):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(payments, "retrieve_session", read)
    reads = payments.SharedReads(client=None, seconds=60)
    with pytest.raises(payments.ShopError):
        reads.retrieve("cs_test_1")
    assert reads.retrieve("cs_test_1") == {"id": "cs_test_1"}
