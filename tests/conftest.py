"""Fixtures: a fresh shop per test on a temporary DATA_DIR, driven through WebTest."""

import json
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import bottle
import pytest
import stripe
import webtest

from webshop.settings import SETTINGS
from shop import make_app
from standin import StandIn

ROOT = Path(__file__).resolve().parents[1]
BASE = "http://shop.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Tests never pick up a developer's real keys or settings."""
    for s in SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    monkeypatch.delenv("STANDIN_FAULTS", raising=False)
    monkeypatch.delenv("STANDIN_LATENCY_MS", raising=False)


def at_once(count, target, *args):
    """Call target(*args) (a module's function) in `count` new processes released at the same moment: what each
    ended with, "ok" or its error."""
    # Forked from a server process that has no threads: a fork of this one, with the threads of earlier tests (the
    # browser's, a shop's) holding a lock at that moment, may hang in the child.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.conftest"])  # what the shop and the stand-in import, imported once
    barrier, ended = context.Barrier(count), context.Queue()
    processes = [context.Process(target=_released, args=(barrier, ended, target, args)) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    return sorted(ended.get(timeout=5) for _ in processes)


def _released(barrier, ended, target, args):
    barrier.wait()
    try:
        target(*args)
        ended.put("ok")
    except Exception as e:  # noqa: BLE001 — reported to the test
        ended.put(repr(e))


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_waitress(server, thread):
    """Stop a waitress server running in `thread`: its sockets are closed by its own loop, woken by its trigger.
    Closed from here instead, they can vanish under the loop's select() (EBADF in the loop thread)."""
    from waitress import wasyncore
    server.task_dispatcher.shutdown()
    try:
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    except OSError:  # its trigger is closed already (seen once, EBADF): the loop is not there to close them
        wasyncore.close_all(server._map)
    thread.join(5)


def wait_for(condition, what, timeout=20):
    """condition()'s first truthy value, polled until `timeout` seconds; AssertionError naming `what` after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {what}")


def settled(shop):
    """Once the shop's closer thread (closing the checkouts a catalog edit no longer backs) has nothing left to do."""
    for _ in range(10):
        if (closer := shop.closer) is None:
            return
        closer.join(30)
    raise AssertionError("the closer thread did not finish")


def slow_to_expire(shop, monkeypatch):
    """Stripe slow to expire: each of the shop's expire calls waits for `release`, and the request that loads an edit
    waits a moment for them, not the seconds it would. (release, the session ids asked about, an event set at the
    first ask)."""
    release, asked, at_work, expire = threading.Event(), [], threading.Event(), shop.orders.expire
    monkeypatch.setattr("shop.CLOSE_WAIT", 0.05)

    def held(*args):
        asked.append(args[0])
        at_work.set()
        release.wait(10)
        return expire(*args)
    monkeypatch.setattr(shop.orders, "expire", held)
    return release, asked, at_work


class Shopper(webtest.TestApp):
    """A browser on the shop: WebTest plus the steps a shopper takes."""

    def __init__(self, app):
        super().__init__(app, extra_environ={"HTTP_HOST": "shop.test"})
        self.shop = app.config["shop"]
        self.standin = self.shop.orders.standin

    def edited(self, path="/"):
        """A page that loads the merchant's edit, once the shop has closed the checkouts the edit no longer backs."""
        page = self.get(path)
        settled(self.shop)
        return page

    def csrf(self):
        """The CSRF token of this browser, from a page's form."""
        page = self.get("/")
        return _CSRF.search(page.text).group(1)

    def add(self, product_id, quantity=1):
        return self.post("/cart", {"csrf_token": self.csrf(), "action": "add", "product_id": product_id,
                                   "quantity": str(quantity)}, status=303)

    def set_quantity(self, product_id, quantity):
        return self.post("/cart", {"csrf_token": self.csrf(), "action": "set", "product_id": product_id,
                                   "quantity": str(quantity)}, status=303)

    def remove(self, product_id):
        return self.post("/cart", {"csrf_token": self.csrf(), "action": "remove", "product_id": product_id},
                         status=303)

    def checkout(self, **fields):
        """POST /checkout; returns the 303 response to Stripe's (the stand-in's) page."""
        return self.post("/checkout", {"csrf_token": self.csrf(), **fields}, status=303)

    def session_id(self, checkout_response):
        return urlsplit(checkout_response.location).path.rsplit("/", 1)[-1]

    def cart_cookie(self):
        """The cart cookie's lines (without the order it was last sent to checkout as)."""
        raw = self.cookies.get("cart")
        return raw and re.sub(r"\.ord_[0-9a-f]{24}$", "", raw)


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def make_shopper(data_dir, database_url):
    """Build a shop with settings overrides; each call is a new app on the same DATA_DIR and database."""
    apps = []

    def factory(**overrides):
        # Look at catalog.json on every request, so a test's edit shows at once (the server: once a second).
        config = {"data_dir": str(data_dir), "base_url": BASE, "catalog_check_seconds": 0,
                  "database_url": database_url, **overrides}
        apps.append(make_app(config))
        return Shopper(apps[-1])
    yield factory
    for app in apps:
        settled(app.config["shop"])
        app.config["shop"].orders.ledger.close()


# Test modules whose tests run on both ledgers: SQLite (the default) and PostgreSQL.
BOTH_BACKENDS = {"test_ledger", "test_fulfilment", "test_purchase", "test_webhooks", "test_webhooks_chaos",
                 "test_merchant", "test_checkout_races", "test_stock", "test_mail",
                 "test_admin", "test_promotions"}


def pytest_generate_tests(metafunc):
    if "database_url" in metafunc.fixturenames:
        both = metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_BACKENDS
        metafunc.parametrize("database_url", ["sqlite", "postgresql"] if both else ["sqlite"], indirect=True)


def postgres_server():
    """The URL of a PostgreSQL server for tests (TEST_DATABASE_URL, else the local one), or a skip; CI must have it."""
    import psycopg
    url = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {type(e).__name__}")
        pytest.skip("no PostgreSQL reachable (set TEST_DATABASE_URL)")
    return url


@pytest.fixture
def database_url(request):
    """'' (SQLite in DATA_DIR), or a fresh PostgreSQL database for this test, dropped after it."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield ""
        return
    yield from fresh_postgres_database()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for this test, dropped after it."""
    yield from fresh_postgres_database()


def fresh_postgres_database():
    """A URL whose connections see only a schema of their own (fast to make and drop, unlike a database)."""
    import psycopg
    server = postgres_server()
    name = "shop_test_" + secrets.token_hex(6)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield server + ("&" if "?" in server else "?") + f"options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def spawn(tmp_path):
    """start(args, port, env): a process (killed after the test) that listens on 127.0.0.1:port; its output
    goes to a file, shown if it exits early."""
    started = []

    def start(args, port, env=None):
        log = open(tmp_path / f"process-{len(started)}.log", "w+")
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT)
        started.append((proc, log))

        def listening():
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"{args} exited with {proc.returncode}: {log.read()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, f"{args} listening on {port}", timeout=60)
        return proc
    yield start
    for proc, log in started:
        proc.kill()
        proc.wait()
        log.close()


@pytest.fixture
def shopper(make_shopper):
    return make_shopper()


@pytest.fixture
def catalog_copy(tmp_path):
    """A private copy of catalog.json that a test may edit."""
    path = tmp_path / "catalog.json"
    shutil.copy(ROOT / "catalog.json", path)
    return path


@contextmanager
def edit_catalog(path):
    """The catalog file's JSON to change in the block; written back when the block ends."""
    data = json.loads(path.read_text())
    yield data
    path.write_text(json.dumps(data))


# -- helpers of the purchase, webhook, fulfilment and merchant tests ----------------------------------------------

DISPUTED = "4000000000000259"  # the stand-in's card whose payment is disputed at once
INQUIRY = "4000000000001976"  # and whose payment the bank inquires about (no money taken: refundable)
ADDRESS = {"line1": "1 Canal Street", "city": "Berlin", "postal_code": "10115", "country": "DE"}


def pay(shopper, checkout_response, card="4242424242424242", address=ADDRESS):
    """Pay on the stand-in's page as a shopper would: fill the form, press Pay."""
    page = shopper.get(checkout_response.location)
    form = page.forms["pay"]
    values = {"email": "reader@example.com", "name": "Ada Reader", "card_number": card, "card_expiry": "12 / 34",
              "card_cvc": "123", "cardholder_name": "Ada Reader", "phone": "+49 30 1234567",
              **{f"address_{k}": v for k, v in address.items()}}
    for name, value in values.items():
        if name in form.fields:
            form[name] = value
    return form.submit(expect_errors=True)


def wire(shopper):
    """Let the stand-in deliver its webhooks to this shopper's app (call deliver_pending between requests)."""
    def deliver(url, body, headers):
        return shopper.post(urlsplit(url).path, body, headers=headers, expect_errors=True).status_int
    shopper.standin.deliver = deliver
    shopper.standin.webhook_retry_base = 0  # a failed delivery is due again at once
    return shopper


def start(shopper, product=None, quantity=1):
    """Check out one product ("Buy now"); returns the Checkout Session id."""
    product = product or shopper.shop.catalog().products[0].id
    return shopper.session_id(shopper.checkout(product_id=product, quantity=str(quantity)))


def buy(shopper, card="4242424242424242", **kwargs):
    """Check out and pay on the stand-in; webhooks stay queued until delivered."""
    session_id = start(shopper, **kwargs)
    shopper.standin.pay(session_id, card=card)
    return session_id


def order(shopper, session_id):
    """The ledger's order of a Checkout Session."""
    return shopper.shop.orders.ledger.by_session(session_id)


def paid(shopper, **kwargs):
    """Buy, and deliver the payment's events: the paid order, as the ledger has it."""
    session_id = buy(shopper, **kwargs)
    shopper.standin.deliver_pending()
    return order(shopper, session_id)


def handoff(shopper):
    """The hand-off records so far: the lines of fulfilments.jsonl, or the database's own on PostgreSQL (no file)."""
    orders = shopper.shop.orders
    if orders.jsonl is None:
        return [record for _, record in orders.ledger.fulfilments()]
    return [json.loads(line) for line in orders.jsonl.read_text().splitlines()] if orders.jsonl.exists() else []


def event(type_, obj, event_id=None):
    """A Stripe event envelope around an object, as Stripe sends it."""
    return {"id": event_id or "evt_" + secrets.token_hex(12), "object": "event", "api_version": stripe.api_version,
            "created": int(time.time()), "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": type_}


def sign(body, secret, timestamp=None):
    """The Stripe-Signature header the way Stripe computes it."""
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)


def post_raw(shopper, body, signature=None):
    """POST bytes to /webhook, with a Stripe-Signature header when given; returns the response."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return shopper.post("/webhook", body, headers=headers, expect_errors=True)


def post_event(shopper, evt, secret=None, timestamp=None):
    """Sign and POST an event to /webhook; returns the response."""
    body = json.dumps(evt)
    return post_raw(shopper, body.encode(), sign(body, secret or shopper.standin.webhook_secret, timestamp))


def pending(shopper, type_):
    """The stand-in's undelivered events of one type."""
    return [e for e in shopper.standin.pending_events() if e["type"] == type_]


# -- helpers of the hostile-input tests: a bare WSGI client (no linting or encoding: what a socket could carry) --

def wsgi(app, method="GET", path="/", query="", headers=None, body=b"", content_type=None, length=None):
    """(status, response headers as wsgiref Headers, body bytes, what the app wrote to wsgi.errors) of one request.

    path, query and header values are str as a server hands them over (see as_served())."""
    import io
    from wsgiref.headers import Headers
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "shop.test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)) if length is None else length,
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), Headers(list(response_headers))
    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return seen["status"], seen["headers"], data, environ["wsgi.errors"].getvalue()


def as_served(s):
    """Text or bytes as a server hands them to WSGI: the bytes (UTF-8 for text) decoded as latin-1."""
    return s.encode("utf-8", "surrogatepass").decode("latin-1") if isinstance(s, str) else s.decode("latin-1")


def survived(result):
    """A wsgi() answer to a hostile request: no 5xx, no traceback anywhere, the shop's headers present."""
    status, headers, body, errors = result
    assert status < 500, (status, body[:300])
    assert errors == "", errors
    assert b"Traceback" not in body and b'File "' not in body
    assert headers.get("X-Content-Type-Options") == "nosniff" and "Content-Security-Policy" in headers
    return result


def browser_of(app):
    """(sid cookie value, CSRF token) of a new browser on `app`, as its first page gives them."""
    status, headers, body, _ = wsgi(app, "GET", "/")
    assert status == 200, status
    (sid,) = [c.split(";", 1)[0].split("=", 1)[1] for c in headers.get_all("Set-Cookie") if "sid=" in c]
    return sid, _CSRF.search(body.decode()).group(1)


PAY_FORM = {"email": "reader@example.com", "name": "Ada Reader", "cardholder_name": "Ada Reader",
       "card_number": "4242424242424242", "card_expiry": "12 / 34", "card_cvc": "123", "phone": "+1 555 010 0000",
       "address_line1": "1 Main St", "address_city": "Springfield", "address_postal_code": "12345",
       "address_country": "US"}


def pay_form(shopper, location, **changes):
    """Fill in and submit the offline payment page at `location` with PAY_FORM and `changes`; returns the response."""
    form = shopper.get(location).forms["pay"]
    for name, value in {**PAY_FORM, **changes}.items():
        if name in form.fields:
            try:
                form[name] = value
            except ValueError:  # not one of a <select>'s options: sent anyway, as a hand-made request would
                form[name].force_value(value)
    return form.submit(expect_errors=True)


def browser_at(make_shopper, base_url, **overrides):
    """A shopper on a shop whose BASE_URL is base_url, browsing it there (so https cookies come back too)."""
    shopper = make_shopper(base_url=base_url, **overrides)
    shopper.extra_environ.update({"wsgi.url_scheme": base_url.split(":", 1)[0], "HTTP_HOST": base_url.split("://")[1]})
    return shopper


def assert_ledger_consistent(ledger):
    """Every order has a known status, integer amounts, and items priced and counted as a cart allows."""
    from webshop.ledger import STATUSES
    for order in ledger.list(limit=100_000):
        assert order["status"] in STATUSES
        assert isinstance(order["amount_subtotal"], int) and order["amount_subtotal"] > 0
        for key in ("amount_shipping", "amount_tax", "amount_total"):
            assert order[key] is None or isinstance(order[key], int)
        assert order["items"] and all(isinstance(i["unit_amount"], int) and i["unit_amount"] > 0
                                      and isinstance(i["quantity"], int) and 1 <= i["quantity"] <= 99
                                      for i in order["items"])
        assert order["amount_subtotal"] == sum(i["unit_amount"] * i["quantity"] for i in order["items"])


@pytest.fixture(scope="module")
def module_app(tmp_path_factory):
    """One offline shop for a whole test module (fuzzing runs many examples against it, one browser may start as
    many checkouts as it makes)."""
    with pytest.MonkeyPatch.context() as env:  # module scope: made before the per-test clean environment
        for name in [s.env for s in SETTINGS] + ["STANDIN_FAULTS"]:
            env.delenv(name, raising=False)
        return make_app({"data_dir": str(tmp_path_factory.mktemp("shop") / "data"), "base_url": BASE,
                         "checkout_limit": 10_000})


@pytest.fixture(scope="module")
def module_session_id(module_app):
    """An open Checkout Session of the module's shop, from a browser of its own."""
    sid, token = browser_of(module_app)
    product = module_app.config["shop"].catalog().products[0].id
    status, headers, _, _ = wsgi(module_app, "POST", "/checkout", headers={"Cookie": f"sid={sid}"},
                                 body=urlencode({"csrf_token": token, "product_id": product}).encode(),
                                 content_type="application/x-www-form-urlencoded")
    assert status == 303
    return headers["Location"].rsplit("/", 1)[-1]


@pytest.fixture
def two_clicks(monkeypatch):
    """two_clicks(click) -> (first answer, second answer): the same click twice, the second made while the first
    waits inside its Checkout Session create call (its order written, its session not made yet)."""
    from webshop import payments
    create, reached, second_done, answers = payments.create_session, threading.Event(), threading.Event(), []

    def held(*args, **kwargs):
        if threading.current_thread() is first:
            reached.set()
            assert second_done.wait(30), "the second click waited for the first"
        return create(*args, **kwargs)
    monkeypatch.setattr(payments, "create_session", held)

    def run(click):
        nonlocal first

        def first_click():
            try:
                answers.append(click())
            except BaseException as e:  # noqa: BLE001 — shown by the test's own thread, below
                answers.append(e)
        first = threading.Thread(target=first_click)
        first.start()
        while not reached.wait(0.05):
            assert first.is_alive(), f"the first click ended before it reached Stripe: {answers}"
        try:
            second = click()
        finally:
            second_done.set()
            first.join(30)
        if isinstance(answers[0], BaseException):
            raise answers[0]
        return answers[0], second
    first = None
    return run


def same_browser(shopper):
    """A WebTest client per thread that sends this shopper's cookies: the same browser clicking again."""
    cookie = "; ".join(f"{k}={v}" for k, v in shopper.cookies.items())
    return lambda: webtest.TestApp(shopper.app, extra_environ={"HTTP_HOST": "shop.test", "HTTP_COOKIE": cookie})


def together(count, fn):
    """Run fn(i) in `count` threads released at the same moment; their results in order."""
    results, gate = [None] * count, threading.Barrier(count)

    def run(i):
        gate.wait()
        results[i] = fn(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# -- the stand-in (package standin) -----------------------------------------------------------------------------------
STANDIN_KEY = "sk_test_offline"


@pytest.fixture
def pay_page(standin):
    """A browser (WebTest) on the stand-in's payment page alone, outside any shop."""
    app = bottle.Bottle()
    standin.install_pay_page(app)
    return webtest.TestApp(app)


@pytest.fixture
def standin(tmp_path):
    """A stand-in on its own data directory, serving its pay page at http://127.0.0.1:8000."""
    s = StandIn(tmp_path / "data", public_url="http://127.0.0.1:8000", load_env_faults=False)
    yield s
    s.close()


@pytest.fixture
def client(standin):
    """The official SDK talking to `standin` in-process."""
    return stripe.StripeClient(STANDIN_KEY, http_client=standin.http_client(), max_network_retries=2)


@pytest.fixture
def app(standin):
    """`standin`'s Stripe API as raw WSGI, authorised with the test key."""
    return webtest.TestApp(standin.wsgi_api, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {STANDIN_KEY}"})


def openapi_dir():
    """The directory holding Stripe's fixtures3.json and spec3.json, or None."""
    for cand in (os.environ.get("STRIPE_OPENAPI_DIR"), ROOT.parent / "shared" / "stripe-openapi"):
        if cand and (Path(cand) / "fixtures3.json").is_file() and (Path(cand) / "spec3.json").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="module")
def stripe_refs():
    """(fixtures3's resources, spec3's schemas); the test is skipped when Stripe's OpenAPI files are not here."""
    d = openapi_dir()
    if d is None:
        pytest.skip("Stripe's OpenAPI files not found: set STRIPE_OPENAPI_DIR or put them in ../shared/stripe-openapi/")
    fixtures = json.loads((d / "fixtures3.json").read_text())["resources"]
    schemas = json.loads((d / "spec3.json").read_text())["components"]["schemas"]
    return fixtures, schemas
