"""The real server (`python shop.py`, offline): its sender delivers the stand-in's webhooks; the CLI talks to it."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode, urlsplit

import pytest

from standin import StandIn
from tests.conftest import ROOT, free_port, wait_for
from webshop.ledger import Ledger
from webshop.settings import load_config


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def server(tmp_path):
    """`python shop.py` on a free loopback port with its own DATA_DIR; yields (base URL, env)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(DATA_DIR=str(tmp_path / "data"), PORT=str(port), HOST="127.0.0.1", PYTHONPATH=str(ROOT))
    log = open(tmp_path / "shop.log", "w+")  # a file, not a pipe: a full pipe would stop the server mid-line
    proc = subprocess.Popen([sys.executable, "shop.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                            text=True)
    base = f"http://127.0.0.1:{port}"

    def up():
        if proc.poll() is not None:
            pytest.fail("the shop did not start: " + (tmp_path / "shop.log").read_text())
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as res:
                return res.status == 200
        except OSError:
            return False
    try:
        wait_for(up, "the shop to answer /healthz")
        yield base, env
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def checkout(base):
    """A browser's "Buy now" over HTTP; returns the Checkout Session id."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), NoRedirect)
    home = opener.open(base + "/", timeout=10).read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', home).group(1)
    product = re.search(r'name="product_id" value="([^"]+)"', home).group(1)
    body = urlencode({"csrf_token": csrf, "product_id": product, "quantity": "1"}).encode()
    try:
        opener.open(base + "/checkout", body, timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 303
        return urlsplit(e.headers["Location"]).path.rsplit("/", 1)[-1]
    pytest.fail("checkout did not redirect")


def shop_cli(env, *args):
    return subprocess.run([sys.executable, "shop.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_running_shop_fulfils_from_webhooks_and_the_cli_hands_it_refund_events(server):
    base, env = server
    data_dir = env["DATA_DIR"]
    sid = checkout(base)
    # The shopper pays but never comes back: only the webhook can fulfil.
    payer = StandIn(data_dir, public_url=base, webhook_url=base + "/webhook", load_env_faults=False)
    payer.pay(sid)
    ledger = Ledger(load_config({"data_dir": data_dir}))
    order = wait_for(lambda: (o := ledger.by_session(sid)) and o["fulfilled_at"] and o, "the webhook to fulfil")
    assert order and order["status"] == "paid"
    # The hand-off record is committed with the order, then appended to the file: wait for the append.
    jsonl = os.path.join(data_dir, "fulfilments.jsonl")
    lines = wait_for(lambda: os.path.exists(jsonl) and open(jsonl).read().splitlines(), "the hand-off line")
    assert [json.loads(line)["session_id"] for line in lines] == [sid]

    res = shop_cli(env, "refund", order["id"], "--amount", "100")
    assert res.returncode == 0, res.stderr
    # The CLI hands the event to the running shop itself, unless the shop's own sender got there first.
    assert "Refund re_" in res.stdout and "not running" not in res.stdout
    assert wait_for(lambda: ledger.get(order["id"])["status"] == "partially_refunded", "the refund event")
    res = shop_cli(env, "orders", "--json")
    [row] = json.loads(res.stdout)
    assert (row["id"], row["status"], row["amount_refunded"]) == (order["id"], "partially_refunded", 100)
    assert len(open(os.path.join(data_dir, "fulfilments.jsonl")).read().splitlines()) == 1
    payer.close()
    ledger.close()
