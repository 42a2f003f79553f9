"""Load and crash on loopback: shoppers buy at once through `python shop.py` (offline, its stand-in delivering
webhooks to it), the shop is killed mid-load and restarted, Stripe fails under load; then `shop.py reconcile` runs
as a merchant's cron job would, and the books must add up: every paid Checkout Session is a paid order, handed off
exactly once, for what Stripe charged."""

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlencode, urlsplit

import pytest
import stripe

from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PRODUCT = re.compile(r'name="product_id" value="([^"]+)"')
_PAY_TOKEN = re.compile(r'name="pay_token" value="([^"]+)"')
_COUNTRY = re.compile(r'<option value="([A-Z]{2})"')
CARD = {"email": "load@example.com", "name": "Load Tester", "cardholder_name": "Load Tester",
        "card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123",
        "phone": "+1 555 010 0000", "address_line1": "1 Load Street", "address_city": "Springfield",
        "address_postal_code": "12345", "address_state": ""}


class Unexpected(Exception):
    """An answer a working shop never gives."""


class Degraded(Exception):
    """The answer the shop should give while Stripe fails (a 503 that keeps the cart, a "confirming" page)."""


class Browser:
    """One shopper's browser: a keep-alive connection, a cookie jar, and the Origin a browser sends with a form."""

    def __init__(self, url, generation):
        self.url, self.generation = url, generation
        self.cookies, self.conn, self.connected_to = {}, None, None

    def request(self, method, path, form=None):
        """(status, headers, text)."""
        if self.connected_to != self.generation():  # the shop was restarted: its old sockets are gone
            self.close()
            self.connected_to = self.generation()
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers.update({"Content-Type": "application/x-www-form-urlencoded", "Origin": self.url})
        for attempt in (0, 1):
            if self.conn is None:
                parts = urlsplit(self.url)
                self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt or method != "GET":  # a keep-alive connection the shop closed; never repeat a POST
                    raise
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                pair, _, attributes = value.partition(";")
                key, _, cookie = pair.strip().partition("=")
                if "max-age=0" in attributes.lower() or cookie in ("", '""'):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = cookie
        return response.status, dict(response.getheaders()), text

    def expect(self, method, path, form=None, status=(200,)):
        got, headers, text = self.request(method, path, form)
        if got not in status:
            raise Unexpected(f"{method} {path} answered {got}")
        return headers, text

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Load:
    """Shoppers (threads) each making purchases: browse, fill a cart, check out, pay on the stand-in's page, and
    (most of them) open the confirmation page."""

    def __init__(self, url, shoppers, purchases, faults=False):
        self.url, self.shoppers, self.purchases, self.faults = url, shoppers, purchases, faults
        self.confirmed, self.left_early, self.errors = [], [], []
        self.degraded, self.interrupted, self.done = Counter(), 0, 0
        self.outage = threading.Event()  # set while the shop is down on purpose
        self.generation = 0
        self.lock = threading.Lock()

    def run(self):
        threads = [threading.Thread(target=self._shopper, args=(i,), daemon=True) for i in range(self.shoppers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads), "a shopper is stuck"
        return self

    def _shopper(self, index):
        rng = random.Random(index)
        browser = Browser(self.url, lambda: self.generation)
        for _ in range(self.purchases):
            try:
                session_id, confirmed = self._purchase(browser, rng, leave_early=rng.random() < 0.25)
                with self.lock:
                    (self.confirmed if confirmed else self.left_early).append(session_id)
            except Degraded as e:
                with self.lock:
                    self.degraded[str(e)] += 1
            except (OSError, http.client.HTTPException, Unexpected) as e:
                browser.close()
                with self.lock:
                    if self.outage.is_set() and not isinstance(e, Unexpected):
                        self.interrupted += 1  # the shop was killed under this purchase
                    else:
                        self.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                wait_for(lambda: not self.outage.is_set(), "the shop to be back", timeout=120)
            with self.lock:
                self.done += 1
        browser.close()

    def _purchase(self, browser, rng, leave_early):
        _, home = browser.expect("GET", "/")
        token = _CSRF.search(home)[1]
        products = sorted(set(_PRODUCT.findall(home)))
        for product in rng.sample(products, rng.randint(1, min(3, len(products)))):
            browser.expect("POST", "/cart", {"csrf_token": token, "action": "add", "product_id": product,
                                             "quantity": str(rng.randint(1, 3))}, status=(303,))
        browser.expect("GET", "/cart")
        for _ in range(2):
            headers, page = browser.expect("POST", "/checkout", {"csrf_token": token},
                                           status=(303, 503) if self.faults else (303,))
            if headers.get("Location") != "/cart":
                break
            # The last purchase, left early, was paid just now: the cart page says so, and the shopper checks out
            # what is left.
            if "You have paid for" not in browser.expect("GET", "/cart")[1]:
                raise Unexpected("checkout went back to the cart, which does not say what was paid")
        if "Location" not in headers:
            if "Your cart is kept" not in page:
                raise Unexpected("the 503 checkout page does not say the cart is kept")
            raise Degraded("checkout answered 503, cart kept")
        pay_path = urlsplit(headers["Location"]).path
        session_id = pay_path.rsplit("/", 1)[-1]
        _, page = browser.expect("GET", pay_path)
        form = {**CARD, "action": "pay", "pay_token": _PAY_TOKEN.search(page)[1],
                "address_country": _COUNTRY.search(page)[1], "shipping_option": str(rng.randint(0, 1))}
        headers, _ = browser.expect("POST", pay_path, form, status=(303,))
        if leave_early:  # the tab is closed: the order depends on the webhooks alone
            return session_id, False
        success = urlsplit(headers["Location"])
        _, page = browser.expect("GET", f"{success.path}?{success.query}")
        if self.faults and "confirming your payment" in page.lower():
            raise Degraded("success page: confirming")
        if "Thank you" not in page:
            raise Unexpected(f"the confirmation page of {session_id} does not confirm the payment")
        return session_id, True


class Shop:
    """`python shop.py` on 127.0.0.1:port, offline, with its own DATA_DIR: start(), kill(), stop(), command()."""

    def __init__(self, tmp_path, faults=""):
        self.tmp_path, self.data_dir, self.port = tmp_path, tmp_path / "data", free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.faults, self.proc, self.logs = faults, None, []

    def env(self, faults=""):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
        # Set empty, so that a developer's .env cannot add keys. Checkouts are not rate-limited per browser here.
        env.update(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", DATABASE_URL="",
                   BASE_URL=self.url, HOST="127.0.0.1", PORT=str(self.port), DATA_DIR=str(self.data_dir),
                   THREADS="16", CHECKOUT_LIMIT="10000", PYTHONUNBUFFERED="1")
        if faults:
            env["STANDIN_FAULTS"] = faults
        return env

    def start(self):
        log = open(self.tmp_path / f"shop-{len(self.logs)}.log", "w+")
        self.logs.append(log)
        self.proc = subprocess.Popen([sys.executable, "shop.py"], cwd=ROOT, env=self.env(self.faults), stdout=log,
                                     stderr=subprocess.STDOUT)

        def healthy():
            if self.proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"shop.py exited with {self.proc.returncode}: {log.read()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            except OSError:
                return False
        wait_for(healthy, "shop.py to answer /healthz", timeout=60)
        return self

    def kill(self):
        """SIGKILL: no clean-up, no flushing, as a power cut would."""
        self.proc.kill()
        self.proc.wait(30)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(30) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()

    def log(self):
        text = ""
        for log in self.logs:
            log.seek(0)
            text += log.read()
        return text

    def command(self, *args):
        """`python shop.py ARGS` on the same DATA_DIR (never with STANDIN_FAULTS); returns (exit code, output)."""
        done = subprocess.run([sys.executable, "shop.py", *args], cwd=ROOT, env=self.env(), capture_output=True,
                              text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr

    def webhooks_delivered(self, seconds=60):
        """Let the running shop's stand-in deliver what it has queued; True if nothing is left (bounded wait)."""
        from standin import StandIn
        standin = StandIn(self.data_dir, load_env_faults=False)
        try:
            deadline = time.monotonic() + seconds
            while standin.pending_events():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
            return True
        finally:
            standin.close()


@pytest.fixture
def shop_process(tmp_path):
    started = []

    def start(faults=""):
        started.append(Shop(tmp_path, faults).start())
        return started[-1]
    yield start
    for shop in started:
        if shop.proc.poll() is None:
            shop.proc.kill()
            shop.proc.wait(30)
        for log in shop.logs:
            log.close()


def audit(data_dir, confirmed):
    """(counts, problems): every paid session at Stripe (the stand-in) against the ledger and the hand-off."""
    from standin import StandIn
    from webshop import payments
    from webshop.ledger import STATUSES, Ledger
    from webshop.settings import load_config
    standin = StandIn(data_dir, load_env_faults=False)
    try:
        client = stripe.StripeClient(payments.OFFLINE_KEY, http_client=standin.http_client(),
                                     stripe_version=stripe.api_version)
        sessions = [s.to_dict() for s in client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter()]
    finally:
        standin.close()
    ledger = Ledger(load_config({"data_dir": str(data_dir)}, environ={}))
    try:
        orders = ledger.list(limit=100_000)
        records = [record for _, record in ledger.fulfilments(limit=100_000)]
    finally:
        ledger.close()
    lines = [json.loads(line) for line in (data_dir / "fulfilments.jsonl").read_text().splitlines()]
    paid = {s["id"]: s for s in sessions if s["status"] == "complete" and s["payment_status"] == "paid"}
    by_session = {o["session_id"]: o for o in orders if o["session_id"]}
    problems = [f"order {o['id']} has status {o['status']!r}" for o in orders if o["status"] not in STATUSES]
    lost = [sid for sid in paid if sid not in by_session or by_session[sid]["status"] != "paid"
            or not by_session[sid]["fulfilled_at"]]
    problems += [f"paid session {sid} has no paid, fulfilled order" for sid in lost]
    problems += [f"the shopper saw {sid} confirmed, but it is not paid at Stripe" for sid in confirmed if sid not in paid]
    problems += [f"order {o['id']} was fulfilled without a paid session" for o in orders
                 if o["fulfilled_at"] and o["session_id"] not in paid]
    handed = Counter(r["order_id"] for r in records)
    double = [order_id for order_id, n in handed.items() if n > 1]
    problems += [f"order {order_id} was handed off {handed[order_id]} times" for order_id in double]
    problems += [f"paid session {sid} was never handed off" for sid in paid
                 if sid in by_session and not handed[by_session[sid]["id"]]]
    if lines != records:
        problems.append(f"fulfilments.jsonl ({len(lines)} lines) is not the database's {len(records)} records")
    mismatched = []
    for sid, s in paid.items():
        o, totals = by_session.get(sid), s.get("total_details") or {}
        want = (s["amount_subtotal"], totals.get("amount_shipping") or 0, totals.get("amount_tax") or 0,
                s["amount_total"])
        if o is not None and want != (o["amount_subtotal"], o["amount_shipping"], o["amount_tax"], o["amount_total"]):
            mismatched.append(sid)
            problems.append(f"order {o['id']} books {o['amount_total']}, Stripe charged {s['amount_total']}")
    ledger_total = sum(o["amount_total"] or 0 for o in orders if o["status"] == "paid")
    stripe_total = sum(s["amount_total"] for s in paid.values())
    if ledger_total != stripe_total:
        problems.append(f"ledger total {ledger_total} != paid sessions' total {stripe_total}")
    return {"paid_sessions": len(paid), "handed_off": len(records), "lost": len(lost), "double": len(double),
            "mismatched": len(mismatched), "ledger_total": ledger_total, "stripe_total": stripe_total}, problems


def test_concurrent_shoppers_lose_nothing_and_fulfil_once(shop_process):
    shop = shop_process()
    load = Load(shop.url, shoppers=6, purchases=4).run()
    assert load.errors == []
    assert shop.webhooks_delivered(), "the shop's stand-in still has webhooks to deliver"
    shop.stop()
    books, problems = audit(shop.data_dir, load.confirmed)
    assert problems == [], problems
    assert len(load.confirmed) + len(load.left_early) == 24
    assert books["paid_sessions"] == books["handed_off"] == 24 and books["ledger_total"] == books["stripe_total"] > 0
    assert "Traceback" not in shop.log()


def test_a_shop_killed_mid_load_restarts_and_reconcile_leaves_every_paid_session_fulfilled_once(shop_process):
    shop = shop_process()
    load = Load(shop.url, shoppers=6, purchases=8)
    runner = threading.Thread(target=load.run, daemon=True)
    runner.start()
    wait_for(lambda: len(load.confirmed) + len(load.left_early) >= 12, "a dozen purchases before the kill", 120)
    load.outage.set()
    shop.kill()
    load.generation += 1
    shop.start()  # same port, same DATA_DIR
    load.outage.clear()
    runner.join(300)
    shop.webhooks_delivered(20)  # events the killed process had taken are retried later; reconcile need not wait
    code, output = shop.command("reconcile", "--since", "1h")
    assert code == 0 and "Checked" in output, output
    shop.stop()
    assert load.errors == []
    books, problems = audit(shop.data_dir, load.confirmed)
    assert problems == [], problems
    assert books["paid_sessions"] == books["handed_off"] >= len(load.confirmed) + len(load.left_early)
    # The load went on after the restart: every purchase was made, or cut off by the kill.
    assert len(load.confirmed) + len(load.left_early) + load.interrupted == 48 and load.interrupted <= 6


def test_stripe_failing_under_load_loses_nothing_and_fulfils_once(shop_process):
    """Resets, 500s and rate limits on Stripe's API while shoppers buy; then reconcile, as a cron job would."""
    shop = shop_process(faults="POST /v1/checkout/sessions=429*3;*=reset*20;*=500*20")
    load = Load(shop.url, shoppers=6, purchases=4, faults=True).run()
    assert load.errors == []
    assert set(load.degraded) <= {"checkout answered 503, cart kept", "success page: confirming"}
    shop.webhooks_delivered(30)
    code, output = shop.command("reconcile", "--since", "1h")
    assert code == 0, output
    shop.stop()
    assert "stripe POST /v1/checkout/sessions status=429" in shop.log()  # the faults were met
    books, problems = audit(shop.data_dir, load.confirmed)
    assert problems == [], problems
    assert books["paid_sessions"] == len(load.confirmed) + len(load.left_early) + load.degraded[
        "success page: confirming"] == books["handed_off"]
    assert len(load.confirmed) + len(load.left_early) + sum(load.degraded.values()) == 24


DIE_BEFORE_THE_FILE = r"""
import os, re, signal, sys
import webtest
from shop import make_app

app = make_app({"data_dir": sys.argv[1], "base_url": "http://shop.test"})
orders, browser = app.config["shop"].orders, webtest.TestApp(app, extra_environ={"HTTP_HOST": "shop.test"})
token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/").text)[1]
product = app.config["shop"].catalog().products[0].id
to_stripe = browser.post("/checkout", {"csrf_token": token, "product_id": product, "quantity": "1"}, status=303)
session_id = to_stripe.location.rsplit("/", 1)[-1]
orders.standin.pay(session_id)
orders.export = lambda: os.kill(os.getpid(), signal.SIGKILL)  # the claim is committed; the power goes now
browser.get(f"/success?session_id={session_id}")
"""


def test_a_process_killed_between_the_commit_and_the_file_hands_off_once(tmp_path):
    """The claim and its record are committed, the line is not in fulfilments.jsonl yet: the next start writes it,
    once, and the webhook or reconcile that comes later changes nothing."""
    from shop import make_app
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
    died = subprocess.run([sys.executable, "-c", DIE_BEFORE_THE_FILE, str(data)], cwd=ROOT, capture_output=True,
                          timeout=120, env={**env, "PYTHONPATH": str(ROOT)})
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    jsonl = data / "fulfilments.jsonl"
    assert not jsonl.exists() or jsonl.read_text() == ""
    orders = make_app({"data_dir": str(data), "base_url": "http://shop.test"}).config["shop"].orders
    try:
        (order,) = orders.ledger.list()
        assert order["status"] == "paid"
        assert [json.loads(line)["order_id"] for line in jsonl.read_text().splitlines()] == [order["id"]]
        assert orders.sync(order["session_id"], source="reconcile")[1] == "already fulfilled"
        assert len(jsonl.read_text().splitlines()) == 1
    finally:
        orders.close()
