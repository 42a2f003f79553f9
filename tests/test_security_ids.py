"""Browser ids, CSRF tokens and request ids: unique, of the same form as before, and never shared across a fork."""

import hashlib
import hmac
import os

from logs import request_id
from security import _SID, Guard, new_sid
from settings import load_config


def test_browser_ids_are_distinct_and_well_formed():
    sids = [new_sid() for _ in range(1000)]  # more than one read of random bytes
    assert len(set(sids)) == len(sids)
    assert all(_SID.fullmatch(s) and len(s) == 32 for s in sids)


def _in_child(make):
    """What `make()` returns in a forked child, as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, without running the parent's cleanup
        try:
            os.write(write, ",".join(make()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out.split(",")


def test_a_forked_worker_never_hands_out_its_parents_browser_ids():
    new_sid()  # the parent now holds ids it has not handed out yet
    child = _in_child(lambda: [new_sid() for _ in range(70)])
    parent = [new_sid() for _ in range(70)]
    assert len(child) == 70 and not set(child) & set(parent)


def test_forked_workers_make_different_request_ids():
    child = _in_child(lambda: [request_id({}) for _ in range(5)])
    parent = [request_id({}) for _ in range(5)]
    assert not set(child) & set(parent)
    env = {}
    assert request_id(env) == request_id(env) == env["shop.request_id"]  # made once per request


def test_csrf_token_is_the_hmac_of_the_browser_id(tmp_path):
    """The same token as a plain HMAC-SHA256 makes: tokens in open pages stay valid across versions."""
    secret = os.urandom(32)
    guard = Guard(load_config({"data_dir": str(tmp_path)}, environ={}), secret)
    for sid in (new_sid(), new_sid(), "x" * 64):
        assert guard.token_for(sid) == hmac.new(secret, sid.encode(), hashlib.sha256).hexdigest()[:40]
    assert guard.token_for("a" * 32) != guard.token_for("b" * 32)


def test_tokens_stay_right_when_kept_and_when_the_store_of_them_is_full(tmp_path, monkeypatch):
    import security
    monkeypatch.setattr(security, "TOKENS_KEPT", 50)
    secret = os.urandom(32)
    guard = Guard(load_config({"data_dir": str(tmp_path)}, environ={}), secret)
    sids = [new_sid(guard) for _ in range(200)]  # ids made in batches, their tokens made with them
    for sid in sids + sids[::-1] + ["x" * 64]:
        assert guard.token_for(sid) == hmac.new(secret, sid.encode(), hashlib.sha256).hexdigest()[:40]
        assert len(guard._tokens) <= 50


def test_a_second_shop_in_the_process_gets_its_own_tokens_for_ids_the_first_made(tmp_path):
    one, two = os.urandom(32), os.urandom(32)
    first = Guard(load_config({"data_dir": str(tmp_path)}, environ={}), one)
    second = Guard(load_config({"data_dir": str(tmp_path)}, environ={}), two)
    sid = new_sid(first)
    assert second.token_for(sid) == hmac.new(two, sid.encode(), hashlib.sha256).hexdigest()[:40]
    assert first.token_for(sid) == hmac.new(one, sid.encode(), hashlib.sha256).hexdigest()[:40]
