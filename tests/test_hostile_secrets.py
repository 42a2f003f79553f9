"""What the shop keeps to itself: Stripe keys and the webhook secret never reach a response or a log, /healthz names no
path, the ledger is readable by the shop's user only, and the signing secret is never a short one."""

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import stripe

from shop import make_app
from tests.conftest import BASE, PAY_FORM, ROOT, Shopper, edit_catalog, free_port
from webshop import catalog
from webshop.ledger import Ledger
from webshop.settings import load_config

KEY = "sk_test_51Hostile" + "Q7x9Zr2Lm4Np6Kt8Vw0Yb3Cd5Fg7Hj9" + "SECRETKEYTAIL"
LIVE_KEY = "sk_live_51Hostile" + "Lz8Kq3Wm5Rt7Yp9Xn2Vb4Cd6Fg8Hj0" + "LIVEKEYTAIL"
WHSEC = "whsec_" + "Hostile0webhook1signing2secret3TAIL"


@contextlib.contextmanager
def standin_server(folder, faults=""):
    """`python -m standin` on a free loopback port, STANDIN_FAULTS=faults; yields its URL. It ends with the block,
    or by itself within two minutes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
    env["STANDIN_FAULTS"] = faults
    with open(Path(folder) / f"standin-{port}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "standin", "--port", str(port), "--data-dir",
                                 str(Path(folder) / f"standin-{port}"), "--public-url", url, "--webhook-secret",
                                 WHSEC], cwd=ROOT, env=env, stdout=log, stderr=log,
                                preexec_fn=lambda: signal.alarm(120))
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if http_get(url + "/")[0] == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def standalone(tmp_path):
    with standin_server(tmp_path) as url:
        yield url


def http_get(url, method="GET", body=None, headers=None):
    """One request over a fresh loopback connection, redirects not followed (they point at the shop's BASE_URL)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def recording(shopper, into):
    """Keep every response this browser gets (status line, headers, body) in `into`."""
    original = shopper.do_request

    def do_request(*args, **kwargs):
        response = original(*args, **kwargs)
        into.append(f"{response.status}\n{response.headers}\n{response.text}")
        return response
    shopper.do_request = do_request
    return shopper


def test_keys_and_webhook_secret_never_reach_a_response_or_a_log(make_shopper, standalone, caplog, capfd,
                                                                  monkeypatch, data_dir):
    """A whole purchase, its webhooks and a run of errors against `python -m standin` with an sk_test_ key."""
    monkeypatch.setenv("STRIPE_LOG", "debug")  # the stripe library logs (and prints) requests and responses
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="stripe")
    seen = []
    shopper = recording(make_shopper(stripe_secret_key=KEY, stripe_api_base=standalone, stripe_webhook_secret=WHSEC,
                                     stripe_max_retries=0), seen)
    assert shopper.shop.config.mode == "test"
    cat = shopper.shop.catalog()
    shopper.add(cat.products[0].id)
    to_stripe = shopper.checkout()
    assert to_stripe.location.startswith(standalone + "/offline-checkout/cs_test_")
    status, _, page = http_get(to_stripe.location)
    token = re.search(r'name="pay_token" value="([^"]+)"', page)[1]
    status, headers, _ = http_get(to_stripe.location, "POST", urlencode({**PAY_FORM, "pay_token": token}),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["Location"].startswith(BASE + "/success?session_id=")
    done = urlsplit(headers["Location"])
    assert "Thank you" in shopper.get(f"{done.path}?{done.query}").text
    events = shopper.shop.orders.stripe.v1.events.list({"limit": 100}).data
    assert events
    for event in events:
        body = json.dumps(event.to_dict())
        signature = stripe.WebhookSignature.generate_signature_header(body, WHSEC)
        shopper.post("/webhook", body, headers={"Stripe-Signature": signature, "Content-Type": "application/json"})
    # Errors of every kind: refused webhooks, CSRF, 404s, a Stripe-side 404 and an unreachable Stripe.
    shopper.post("/webhook", "{}", headers={"Stripe-Signature": "t=1,v1=" + "0" * 64}, status=400)
    shopper.post("/webhook", "{}", status=400)
    shopper.post("/checkout", {"csrf_token": "nope"}, status=403)
    shopper.get("/nope", status=404)
    shopper.get("/success?session_id=cs_test_unknown", status=404)
    shopper.put("/cart", status=405)
    broken = recording(make_shopper(stripe_secret_key=KEY, stripe_api_base="http://127.0.0.1:9",
                                    stripe_webhook_secret=WHSEC, stripe_max_retries=0, stripe_timeout=1), seen)
    broken.post("/checkout", {"csrf_token": broken.csrf(), "product_id": cat.products[0].id}, status=503)
    # A live key the API refuses (401): Stripe's error message names part of the key; none of it may get out.
    # (Live mode refuses STRIPE_API_BASE, so this one config is made live after it was loaded.)
    config = load_config({"data_dir": str(data_dir), "base_url": "https://shop.example", "stripe_secret_key": KEY,
                          "stripe_api_base": standalone, "stripe_webhook_secret": WHSEC, "stripe_max_retries": 0})
    live = recording(Shopper(make_app(dataclasses.replace(config, stripe_secret_key=LIVE_KEY, mode="live"))), seen)
    live.extra_environ.update({"wsgi.url_scheme": "https", "HTTP_HOST": "shop.example"})
    page = live.post("/checkout", {"csrf_token": live.csrf(), "product_id": cat.products[0].id}, status=503)
    assert "not answering" in page.text
    out, err = capfd.readouterr()
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    everything = "\n".join(seen) + logs + out + err
    assert "Request to Stripe api" in everything  # the library's own log lines were captured
    for secret in (KEY, KEY[8:], KEY[-12:], LIVE_KEY, LIVE_KEY[8:], LIVE_KEY[-11:], WHSEC, WHSEC[6:]):
        assert secret not in everything, secret
    live.shop.orders.ledger.close()


# -- /healthz names what is wrong, never where ------------------------------------------------------------------------

ABSOLUTE_PATH = re.compile(r"(^|[\s:(\"'=,])/[\w.~-]")


def assert_no_path(text, *paths):
    assert not ABSOLUTE_PATH.search(text), text
    for path in paths:
        assert str(path) not in text, text


def test_healthz_never_prints_an_absolute_path(make_shopper, catalog_copy, data_dir, monkeypatch):
    shopper = make_shopper(catalog=str(catalog_copy))
    # A catalog edit whose first problem names the public folder (an image that is not there) ...
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["image"] = "img/books/not-there.svg"
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))
    assert any("not-there" in p for p in catalog.problems(catalog_copy, ROOT / "public"))
    page = shopper.get("/healthz", status=503)
    assert page.text.startswith("unhealthy\ncatalog: ")
    assert_no_path(page.text, catalog_copy, ROOT, data_dir)

    def unavailable():  # ... a database error whose message names its file ...
        raise sqlite3.OperationalError(f"unable to open database file {data_dir / 'shop.sqlite3'}")
    monkeypatch.setattr(shopper.shop.orders.ledger, "ping", unavailable)
    page = shopper.get("/healthz", status=503)
    assert "database: OperationalError" in page.text
    assert_no_path(page.text, catalog_copy, ROOT, data_dir)
    # ... and a catalog file that is gone.
    catalog_copy.unlink()
    page = shopper.get("/healthz", status=503)
    assert_no_path(page.text, catalog_copy, ROOT, data_dir)


# -- the ledger file --------------------------------------------------------------------------------------------------

@pytest.fixture
def open_umask():
    """A umask that takes nothing away: what a file ends up with is what the shop asked for."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_ledger_is_created_readable_by_the_shops_user_only(make_shopper, data_dir, open_umask):
    shopper = make_shopper()
    shopper.add(shopper.shop.catalog().products[0].id)
    shopper.checkout()  # a write: SQLite's -wal and -shm files exist now
    files = sorted(data_dir.glob("shop.sqlite3*"))
    assert data_dir / "shop.sqlite3" in files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))


# -- the signing secret -----------------------------------------------------------------------------------------------

def ledger_on(data_dir):
    return Ledger(load_config({"data_dir": str(data_dir), "base_url": BASE}, environ={}))


def stored_secret(data_dir):
    with sqlite3.connect(data_dir / "shop.sqlite3") as db:
        return db.execute("SELECT value FROM checkpoints WHERE name = 'secret_key'").fetchone()[0]


def store_secret(data_dir, raw):
    with sqlite3.connect(data_dir / "shop.sqlite3") as db:
        db.execute("UPDATE checkpoints SET value = ? WHERE name = 'secret_key'", (raw,))


def test_the_signing_secret_is_made_once_and_kept(data_dir):
    ledger = ledger_on(data_dir)
    first = ledger.secret()
    assert len(first) >= 32 and ledger.secret() == first
    ledger.close()
    assert ledger_on(data_dir).secret() == first  # another instance on the same ledger signs alike


@pytest.mark.parametrize("raw", [json.dumps(""), json.dumps("x"), json.dumps("a" * 31), "", "null", "12345", "[]",
                                 json.dumps({"key": "a" * 40}), "not json"])
def test_an_emptied_or_truncated_signing_secret_is_replaced(data_dir, raw, make_shopper):
    ledger = ledger_on(data_dir)
    original = ledger.secret()
    store_secret(data_dir, raw)
    replaced = ledger.secret()
    assert len(replaced) >= 32 and replaced != original and replaced.decode() not in raw
    assert ledger.secret() == replaced and json.loads(stored_secret(data_dir)) == replaced.decode()
    ledger.close()
    store_secret(data_dir, raw)
    shopper = make_shopper()  # a shop starting on such a ledger signs with a new, full-length secret
    assert len(shopper.shop.guard.secret) >= 32
    shopper.add(shopper.shop.catalog().products[0].id)
    nonce = shopper.cookies["sid"].split(".")[0]
    assert len(shopper.cookies["sid"].split(".")[1]) >= 24 and nonce
