"""Simulated shoppers buying through the offline shop on loopback, then an audit of the books.

    .venv/bin/python bench/shoppers.py                           # 16 shoppers x 10 purchases, then the audit
    .venv/bin/python bench/shoppers.py --shoppers 32 --purchases 25 --workers 2
    .venv/bin/python bench/shoppers.py --crash                    # SIGKILL the shop mid-load, restart, reconcile
    .venv/bin/python bench/shoppers.py --faults "*=reset*40;*=500*40"   # Stripe failing under load, then reconcile

Starts `python shop.py` (offline mode, temporary DATA_DIR, a free 127.0.0.1 port; its stand-in delivers webhooks
to BASE_URL/webhook), runs N threads that each browse, fill a cart, check out, pay on the stand-in's page and open
the success page, then checks: 0 errors, 0 lost orders, 0 double fulfilments, ledger totals equal to what the paid
Checkout Sessions say (read through the Stripe API from the stand-in's state). Exit status 0 only if all hold.
Everything stays on 127.0.0.1, is bounded by --purchases and --seconds, and the server ends with the script.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the audit reads the books with the shop's own modules
STEPS = ("browse", "add", "cart", "checkout", "pay_page", "pay", "success")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PRODUCT = re.compile(r'name="product_id" value="([^"]+)"')
_PAY_TOKEN = re.compile(r'name="pay_token" value="([^"]+)"')
_COUNTRY = re.compile(r'<option value="([A-Z]{2})"')
LIFETIME = 900  # seconds: a server orphaned by a crashed run still ends by itself
CARD = {"email": "load@example.com", "name": "Load Tester", "cardholder_name": "Load Tester",
        "card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123",
        "phone": "+1 555 010 0000", "address_line1": "1 Load Street", "address_city": "Springfield",
        "address_postal_code": "12345", "address_state": ""}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_group_with_deadline():
    os.setsid()  # its own process group: SIGKILL/SIGTERM reach the forked workers too
    signal.alarm(LIFETIME)  # survives exec; SIGALRM's default action ends the process


class ShopServer:
    """`python shop.py` in offline mode on 127.0.0.1:port with its own DATA_DIR; start(), kill(), stop()."""

    def __init__(self, data_dir, port=None, workers=1, threads=8, log=None, catalog=None, faults=""):
        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.faults = faults  # STANDIN_FAULTS for the server (never for the merchant commands)
        self.workers, self.threads = workers, threads
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log) if log else self.data_dir.parent / f"shop-{self.port}.log"
        self.catalog = catalog
        self.proc = None

    def env(self, faults=""):
        """The offline environment: no keys (set empty so a developer's .env cannot add them), this DATA_DIR."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
        if faults:
            env["STANDIN_FAULTS"] = faults
        env.update(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", BASE_URL=self.url,
                   HOST="127.0.0.1", PORT=str(self.port), DATA_DIR=str(self.data_dir), THREADS=str(self.threads),
                   WORKERS=str(self.workers), CATALOG=str(self.catalog or ROOT / "catalog.json"),
                   PYTHONUNBUFFERED="1")
        return env

    def start(self, timeout=30):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "shop.py")], cwd=ROOT, env=self.env(self.faults),
                                         stdout=log, stderr=log, preexec_fn=_own_group_with_deadline)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shop.py exited with {self.proc.returncode}; see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"shop.py did not answer within {timeout}s; see {self.log}")

    def kill(self):
        """SIGKILL the whole process group: no clean-up, no flushing, as a power cut would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def command(self, *args, timeout=120):
        """Run `python shop.py <args>` on the same DATA_DIR; returns (exit code, output)."""
        done = subprocess.run([sys.executable, str(ROOT / "shop.py"), *args], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Browser:
    """One shopper's browser: a keep-alive connection to the shop and its own cookie jar."""

    def __init__(self, url, timeout=15, generation=lambda: 0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.cookies, self.conn = {}, None
        self.generation, self.connected_to = generation, None

    def request(self, method, path, form=None):
        """(status, headers, text); retried once on a stale keep-alive connection."""
        if self.connected_to != self.generation():  # the server was restarted: its old sockets are gone
            self.close()
            self.connected_to = self.generation()
        body = urlencode(form).encode() if form is not None else None
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt or method != "GET":  # never repeat a POST behind the shopper's back
                    raise e
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                self._cookie(value)
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response.status, dict(response.getheaders()), text

    def _cookie(self, header):
        pair, _, attributes = header.partition(";")
        name, _, value = pair.strip().partition("=")
        attributes = attributes.lower()
        if "max-age=0" in attributes or "expires=thu, 01 jan 1970" in attributes or value in ('""', ""):
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Unexpected(Exception):
    """A step answered something a working shop never answers."""


class Degraded(Exception):
    """A step answered the way the shop should while Stripe fails (only expected with injected faults)."""


class Shoppers:
    """N threads, each a shopper making purchases through the whole offline flow; collects timings and errors."""

    def __init__(self, url, shoppers, purchases, seconds, seed=1, leave_early=0.25, faults=False):
        self.url, self.shoppers, self.purchases, self.seconds = url, shoppers, purchases, seconds
        self.seed = seed
        # The share of shoppers who close the tab once they have paid: their orders depend on webhooks alone.
        self.leave_early = leave_early
        self.left_early = []              # session ids paid without the success page being seen
        # With injected Stripe faults, a 503 checkout page (cart kept) and a "confirming" success page are the
        # shop doing its job: counted here, not as errors.
        self.faults, self.degraded = faults, Counter()
        self.timings = defaultdict(list)  # step -> [seconds]
        self.errors = []                  # (step, description)
        self.paid = []                    # session ids the shoppers saw confirmed
        self.interrupted = 0              # purchases cut off by a server crash (only counted as errors otherwise)
        self.outage = threading.Event()   # set while the server is known to be down (crash test)
        self.generation = 0               # bumped when the server is restarted
        self.lock = threading.Lock()
        self.elapsed = 0.0

    def run(self):
        deadline = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._shopper, args=(i, deadline), daemon=True)
                   for i in range(self.shoppers)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.seconds + 60)
        self.elapsed = time.monotonic() - start
        return self

    def _shopper(self, index, deadline):
        rng = random.Random(self.seed * 1000 + index)
        browser = Browser(self.url, generation=lambda: self.generation)
        done = 0
        while done < self.purchases and time.monotonic() < deadline:
            step = ["browse"]
            leave = rng.random() < self.leave_early
            try:
                session_id, confirmed = self._purchase(browser, rng, step, leave)
                with self.lock:
                    (self.paid if confirmed else self.left_early).append(session_id)
            except Degraded as e:
                with self.lock:
                    self.degraded[str(e)] += 1
            except (OSError, http.client.HTTPException, Unexpected) as e:
                browser.close()
                with self.lock:
                    if self.outage.is_set() and not isinstance(e, Unexpected):
                        self.interrupted += 1  # the server was killed under this request
                    else:
                        self.errors.append((step[0], f"{type(e).__name__}: {str(e)[:200]}"))
                while self.outage.is_set() and time.monotonic() < deadline:
                    time.sleep(0.05)
            done += 1
        browser.close()

    def _timed(self, browser, step, name, method, path, form=None, expect=(200,)):
        step[0] = name
        start = time.perf_counter()
        status, headers, text = browser.request(method, path, form)
        took = time.perf_counter() - start
        if status not in expect:
            raise Unexpected(f"{method} {path} answered {status}")
        with self.lock:
            self.timings[name].append(took)
        return headers, text

    def _purchase(self, browser, rng, step, leave_early=False):
        _, home = self._timed(browser, step, "browse", "GET", "/")
        token = _CSRF.search(home)[1]
        products = sorted(set(_PRODUCT.findall(home)))
        for product in rng.sample(products, rng.randint(1, min(3, len(products)))):
            self._timed(browser, step, "add", "POST", "/cart",
                        {"csrf_token": token, "action": "add", "product_id": product,
                         "quantity": str(rng.randint(1, 3))}, expect=(303,))
        self._timed(browser, step, "cart", "GET", "/cart")
        headers, page = self._timed(browser, step, "checkout", "POST", "/checkout", {"csrf_token": token},
                                    expect=(303, 503) if self.faults else (303,))
        if "Location" not in headers:
            if "Your cart is kept" not in page:
                raise Unexpected("the 503 checkout page does not say the cart is kept")
            raise Degraded("checkout answered 503, cart kept")
        pay_path = urlsplit(headers["Location"]).path
        session_id = pay_path.rsplit("/", 1)[-1]
        _, page = self._timed(browser, step, "pay_page", "GET", pay_path)
        form = {**CARD, "pay_token": _PAY_TOKEN.search(page)[1], "address_country": _COUNTRY.search(page)[1],
                "shipping_option": str(rng.randint(0, 1))}
        headers, _ = self._timed(browser, step, "pay", "POST", pay_path, form, expect=(303,))
        if leave_early:
            return session_id, False
        success = urlsplit(headers["Location"])
        _, page = self._timed(browser, step, "success", "GET", f"{success.path}?{success.query}")
        if self.faults and "confirming your payment" in page and "reload" in page and "failed" not in page:
            with self.lock:
                self.degraded["success page: confirming"] += 1
            return session_id, False
        if "Thank you" not in page:
            raise Unexpected(f"the success page for {session_id} does not confirm the payment")
        return session_id, True


# -- the audit ----------------------------------------------------------------------------------------------------

def stripe_sessions(data_dir):
    """Every Checkout Session in the stand-in's state, read through the Stripe API (as reconcile would)."""
    import stripe

    import payments
    from standin import StandIn
    standin = StandIn(data_dir, load_env_faults=False)
    try:
        client = stripe.StripeClient(payments.OFFLINE_KEY, http_client=standin.http_client(),
                                     stripe_version=stripe.api_version)
        page = client.v1.checkout.sessions.list({"limit": 100})
        return [s.to_dict() for s in page.auto_paging_iter()]
    finally:
        standin.close()


def pending_webhooks(data_dir):
    """Events the stand-in still has to deliver."""
    db = sqlite3.connect(f"file:{Path(data_dir) / 'standin.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
    finally:
        db.close()


def wait_for_webhooks(data_dir, seconds=30):
    """Let the running shop's sender deliver what is queued (it retries with backoff); True when nothing is left."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pending_webhooks(data_dir) == 0:
            return True
        time.sleep(0.2)
    return False


def audit(data_dir, confirmed=()):
    """The books after a run: a dict of counts and a list of problems (empty when everything adds up)."""
    data_dir = Path(data_dir)
    sessions = stripe_sessions(data_dir)
    paid = {s["id"]: s for s in sessions if s["status"] == "complete" and s["payment_status"] == "paid"}
    db = sqlite3.connect(f"file:{data_dir / 'shop.sqlite3'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    orders = [dict(r) for r in db.execute("SELECT * FROM orders")]
    db.close()
    by_session = {o["session_id"]: o for o in orders if o["session_id"]}
    path = data_dir / "fulfilments.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    handed = Counter(line["order_id"] for line in lines)
    problems = []
    from ledger import STATUSES
    for o in orders:
        if o["status"] not in STATUSES:
            problems.append(f"order {o['id']} has unknown status {o['status']!r}")
        for key in ("amount_subtotal", "amount_shipping", "amount_tax", "amount_total"):
            if o[key] is not None and not isinstance(o[key], int):
                problems.append(f"order {o['id']}: {key} is not an integer: {o[key]!r}")
    lost = [sid for sid in paid if sid not in by_session or by_session[sid]["status"] != "paid"
            or not by_session[sid]["fulfilled_at"]]
    problems += [f"paid session {sid} has no paid, fulfilled order" for sid in lost]
    unconfirmed = [sid for sid in confirmed if sid not in paid]
    problems += [f"the shopper saw {sid} confirmed but Stripe does not have it paid" for sid in unconfirmed]
    double = {oid: n for oid, n in handed.items() if n > 1}
    problems += [f"order {oid} was handed off {n} times" for oid, n in double.items()]
    missing = [sid for sid in paid if sid in by_session and handed[by_session[sid]["id"]] == 0]
    problems += [f"paid session {sid} was never handed off" for sid in missing]
    unpaid_fulfilled = [o["id"] for o in orders if o["fulfilled_at"] and o["session_id"] not in paid]
    problems += [f"order {oid} was fulfilled without a paid session" for oid in unpaid_fulfilled]
    mismatched = []
    for sid, s in paid.items():
        o = by_session.get(sid)
        if o is None:
            continue
        totals = s.get("total_details") or {}
        want = (s["amount_subtotal"], totals.get("amount_shipping") or 0, totals.get("amount_tax") or 0,
                s["amount_total"])
        got = (o["amount_subtotal"], o["amount_shipping"], o["amount_tax"], o["amount_total"])
        if want != got:
            mismatched.append(sid)
            problems.append(f"order {o['id']} books {got}, Stripe charged {want}")
    ledger_total = sum(o["amount_total"] or 0 for o in orders if o["status"] == "paid")
    stripe_total = sum(s["amount_total"] for s in paid.values())
    if ledger_total != stripe_total:
        problems.append(f"ledger total {ledger_total} != paid sessions' total {stripe_total}")
    return {"sessions": len(sessions), "paid_sessions": len(paid), "orders": len(orders),
            "handoff_lines": len(lines), "lost": len(lost), "double": len(double), "never_handed_off": len(missing),
            "ledger_total": ledger_total, "stripe_total": stripe_total, "mismatched": len(mismatched),
            "statuses": dict(Counter(o["status"] for o in orders))}, problems


# -- the runs ------------------------------------------------------------------------------------------------------

def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


def report(load, books, problems, say=print):
    """Throughput, p50/p99 per step, and the audit."""
    requests = sum(len(v) for v in load.timings.values())
    bought = len(load.paid) + len(load.left_early)
    say(f"{bought} purchases by {load.shoppers} shoppers in {load.elapsed:.1f}s ({len(load.left_early)} left before "
        f"the success page): {bought / load.elapsed:.1f} purchases/s, {requests / load.elapsed:.0f} requests/s")
    say(f"{'step':<10} {'count':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for step in STEPS:
        t = load.timings.get(step, [])
        say(f"{step:<10} {len(t):>6} {percentile(t, .5) * 1000:>8.1f} {percentile(t, .99) * 1000:>8.1f}")
    say(f"errors {len(load.errors)}" + (f" (interrupted by the crash: {load.interrupted})" if load.interrupted else ""))
    for what, n in sorted(load.degraded.items()):
        say(f"  expected under faults: {what} x{n}")
    for step, what in load.errors[:10]:
        say(f"  {step}: {what}")
    say("books: " + ", ".join(f"{k} {v}" for k, v in books.items()))
    for p in problems[:20]:
        say(f"  PROBLEM: {p}")
    say("OK: 0 errors, 0 lost orders, 0 double fulfilments, ledger = Stripe" if not problems and not load.errors
        else "FAILED")


def run(shoppers=16, purchases=10, seconds=120, workers=1, threads=8, data_dir=None, say=print, faults=""):
    """Start the shop, run the shoppers, wait for webhooks, audit; returns (load, books, problems).

    With faults (STANDIN_FAULTS for the server), `shop.py reconcile` runs once the load is over, as a merchant's
    cron job would, before the audit."""
    with tempfile.TemporaryDirectory(prefix="shop-load-") as tmp:
        data_dir = Path(data_dir or Path(tmp) / "data")
        with ShopServer(data_dir, workers=workers, threads=threads, faults=faults) as server:
            say(f"shop at {server.url} ({workers} worker(s) x {threads} threads), DATA_DIR {data_dir}"
                + (f", STANDIN_FAULTS={faults}" if faults else ""))
            load = Shoppers(server.url, shoppers, purchases, seconds, faults=bool(faults)).run()
            if not wait_for_webhooks(data_dir):
                say("webhooks still pending after 30s")
            if faults:
                code, output = server.command("reconcile", "--since", "1h")
                say(f"shop.py reconcile (exit {code}): "
                    + " ".join(line for line in output.splitlines() if line.startswith("Checked")))
                if code != 0:
                    raise RuntimeError(f"reconcile failed with exit code {code}: {output}")
        books, problems = audit(data_dir, load.paid)
    return load, books, problems


def run_crash(shoppers=8, purchases=12, seconds=120, crash_after=1.5, workers=1, threads=8, data_dir=None,
              say=print, webhook_wait=5):
    """Load; SIGKILL the shop after crash_after seconds; restart it on the same port and DATA_DIR; let the load
    finish; `shop.py reconcile` beside the running shop; audit. Returns (load, books, problems, reconcile output)."""
    with tempfile.TemporaryDirectory(prefix="shop-crash-") as tmp:
        data_dir = Path(data_dir or Path(tmp) / "data")
        server = ShopServer(data_dir, workers=workers, threads=threads).start()
        try:
            load = Shoppers(server.url, shoppers, purchases, seconds)
            runner = threading.Thread(target=load.run, daemon=True)
            runner.start()
            time.sleep(crash_after)
            load.outage.set()
            server.kill()
            say(f"killed the shop (SIGKILL) after {crash_after}s, {len(load.paid) + len(load.left_early)} "
                "purchases done")
            load.generation += 1
            server.start()
            load.outage.clear()
            say("restarted it on the same port and DATA_DIR")
            runner.join(seconds + 90)
            # An event the killed process had taken for delivery is retried only when its lease runs out;
            # reconcile does not wait for that.
            wait_for_webhooks(data_dir, webhook_wait)
            code, output = server.command("reconcile", "--since", "1h")
            say(f"shop.py reconcile (exit {code}):\n  " + output.strip().replace("\n", "\n  "))
            if code != 0:
                raise RuntimeError(f"reconcile failed with exit code {code}: {output}")
        finally:
            server.stop()
        books, problems = audit(data_dir, load.paid)
    return load, books, problems, output


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shoppers", type=int, default=16, help="concurrent shoppers (threads), default 16")
    p.add_argument("--purchases", type=int, default=10, help="purchases per shopper, default 10")
    p.add_argument("--seconds", type=float, default=120, help="stop starting purchases after this long")
    p.add_argument("--workers", type=int, default=1, help="shop.py --workers")
    p.add_argument("--threads", type=int, default=8, help="request threads per worker")
    p.add_argument("--crash", action="store_true", help="SIGKILL the shop mid-load, restart it, reconcile")
    p.add_argument("--crash-after", type=float, default=2.0, help="seconds of load before the kill")
    p.add_argument("--faults", default="", help='STANDIN_FAULTS for the shop, e.g. "*=reset*40;*=500*40"')
    args = p.parse_args(argv)
    if args.crash:
        load, books, problems, _ = run_crash(args.shoppers, args.purchases, args.seconds, args.crash_after,
                                             args.workers, args.threads)
    else:
        load, books, problems = run(args.shoppers, args.purchases, args.seconds, args.workers, args.threads,
                                    faults=args.faults)
    report(load, books, problems)
    return 0 if not problems and not load.errors else 1


if __name__ == "__main__":
    sys.exit(main())
