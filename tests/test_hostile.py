"""Hostile input: whatever a client sends (fields, query strings, cookies, headers, content types, bodies, signed
events, a catalog file broken mid-run), the shop answers below 500 and its ledger stays consistent."""

import contextlib
import hashlib
import hmac
import http.client
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.shoppers import free_port
from ledger import STATUSES
from shop import PUBLIC, make_app
from tests.conftest import ROOT

BASE = "http://shop.test"
SID = "hostile-browser-0123456789abcdefghij"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
PRODUCT_IDS = [p["id"] for p in json.loads((ROOT / "catalog.json").read_text())["products"]]


# -- a bare WSGI client: no linting or encoding, so anything a socket could carry reaches the app -------------------

def wsgi(app, method="GET", path="/", query="", headers=None, body=b"", content_type=None, length=None):
    """(status int, headers dict, body bytes, what the app wrote to wsgi.errors) for one request."""
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
        seen["status"], seen["headers"] = int(status.split()[0]), dict(response_headers)
    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return seen["status"], seen["headers"], data, environ["wsgi.errors"].getvalue()


def wire(s):
    """Bytes as a server hands them to WSGI (latin-1 decoded)."""
    return s.encode("utf-8", "surrogatepass").decode("latin-1") if isinstance(s, str) else s.decode("latin-1")


def survived(result):
    """The answer to a hostile request: no 5xx, no traceback anywhere, the shop's headers present."""
    status, headers, body, errors = result
    assert status < 500, (status, body[:300])
    assert errors == "", errors
    assert b"Traceback" not in body and b'File "' not in body
    assert "nosniff" == headers.get("X-Content-Type-Options") and "Content-Security-Policy" in headers
    return result


def csrf_for(app, sid=SID):
    shop = app.config["shop"]
    return hmac.new(shop.guard.secret, sid.encode(), hashlib.sha256).hexdigest()[:40]


def assert_ledger_consistent(ledger):
    """Every order has a known status, integer amounts, and items priced from the catalog."""
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
def app(tmp_path_factory):
    """One shop for the fuzzing tests (Hypothesis runs many examples against it)."""
    data = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as env:  # module scope: made before conftest's per-test clean environment
        for name in [k for k in os.environ if k.startswith(("STRIPE_", "STANDIN_"))] + ["BASE_URL", "CATALOG"]:
            env.delenv(name, raising=False)
        return make_app({"data_dir": str(data), "base_url": BASE})


@pytest.fixture(scope="module")
def session_id(app):
    """An open Checkout Session of this shop, for the success and payment pages."""
    cookie = f"sid={SID}"
    body = urlencode({"csrf_token": csrf_for(app), "product_id": PRODUCT_IDS[0], "quantity": "1"}).encode()
    status, headers, _, _ = wsgi(app, "POST", "/checkout", headers={"Cookie": cookie}, body=body,
                                 content_type="application/x-www-form-urlencoded")
    assert status == 303
    return headers["Location"].rsplit("/", 1)[-1]


# -- strategies --------------------------------------------------------------------------------------------------

latin1 = st.text(st.characters(min_codepoint=0, max_codepoint=255, blacklist_characters="\r\n"), max_size=60)
anything = st.text(max_size=80)
FIELD_NAMES = ["csrf_token", "action", "product_id", "quantity", "price", "unit_amount", "currency", "amount",
               "amount_total", "tax", "shipping", "success_url", "cancel_url", "line_items[0][price_data][unit_amount]",
               "pay_token", "email", "card_number", "address_country", "shipping_option", "page", "session_id"]
field_value = st.one_of(anything, st.sampled_from(PRODUCT_IDS), st.sampled_from(["add", "set", "remove"]),
                        st.integers(-10**9, 10**9).map(str), st.sampled_from(["", "0", "1", "99", "100", "1e3",
                                                                             "٣", " 5 ", "0x10", "NaN"]))
fields = st.lists(st.tuples(st.one_of(st.sampled_from(FIELD_NAMES), anything), field_value), max_size=8)
PATHS = ["/", "/cart", "/checkout", "/success", "/healthz", "/webhook", "/static/style.css", "/static/img/",
         "/offline-checkout/", "/static/", "/favicon.ico"]
paths = st.one_of(st.sampled_from(PATHS), st.sampled_from(PATHS), st.sampled_from(PATHS), st.builds(lambda a, b: a + b, st.sampled_from(PATHS), anything),
                  anything.map(lambda s: "/" + s))
methods = st.sampled_from(["GET"] * 4 + ["POST"] * 6 + ["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
content_types = st.one_of(st.none(), st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data", "multipart/form-data; boundary=b0undary", "multipart/form-data; boundary=",
    "application/json", "text/plain", "text/html; charset=utf-9", "*/*", ";;;", "application/xml"]), latin1)
cookie_values = st.one_of(latin1, st.sampled_from(["walden:1", "x:1", ":", "a" * 5000]),
                          st.lists(st.tuples(st.sampled_from(PRODUCT_IDS), st.integers(-5, 10**7)), max_size=60).map(
                              lambda items: ".".join(f"{p}:{q}" for p, q in items)))


def encode_body(kind, pairs, raw):
    if kind == "urlencoded":
        return urlencode(pairs).encode()
    if kind == "multipart":
        parts = [f'--b0undary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in pairs]
        return ("".join(parts) + "--b0undary--\r\n").encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(dict(pairs)).encode()
    return raw


@st.composite
def requests(draw, with_token=True):
    """One hostile request: (method, path, query, headers, body, content type)."""
    method = draw(methods)
    path = draw(paths)
    query = draw(st.one_of(st.lists(st.tuples(st.sampled_from(["page", "session_id", "added", "canceled", "empty"]),
                                              field_value), max_size=4).map(urlencode), latin1))
    pairs = draw(fields)
    token = with_token and draw(st.booleans())
    if token:
        pairs = [("csrf_token", csrf_for_app[0])] + pairs
    kind = draw(st.sampled_from(["urlencoded", "multipart", "json", "raw"]))
    body = encode_body(kind, pairs, draw(st.binary(max_size=300)))
    ctype = {"urlencoded": "application/x-www-form-urlencoded", "multipart": "multipart/form-data; boundary=b0undary",
             "json": "application/json"}.get(kind) if draw(st.booleans()) else draw(content_types)
    cookie = draw(st.one_of(st.none(), latin1, st.builds(lambda sid, cart: f"sid={sid}; cart={cart}",
                                                         st.one_of(st.just(SID), latin1), cookie_values)))
    if token and draw(st.integers(0, 4)):
        cookie = f"sid={SID}; cart={draw(cookie_values)}"
    headers = {k: v for k, v in draw(st.dictionaries(st.sampled_from(
        ["Origin", "Sec-Fetch-Site", "Referer", "Host", "Accept", "Accept-Encoding", "If-None-Match",
         "If-Modified-Since", "Range", "X-Forwarded-For", "X-Forwarded-Host", "Stripe-Signature", "Content-Encoding",
         "Transfer-Encoding", "Expect"]), st.one_of(latin1, st.sampled_from(
             ["same-origin", "cross-site", "none", BASE, "null", "bytes=0-5", "bytes=99999-", "*", "chunked"])),
        max_size=4)).items()}
    if cookie is not None:
        headers["Cookie"] = cookie
    return method, wire(path), wire(query), {k: wire(v) for k, v in headers.items()}, body, ctype


csrf_for_app = [None]  # filled in by the fixture below: strategies are built before the app exists


@pytest.fixture(scope="module", autouse=True)
def _token(app):
    csrf_for_app[0] = csrf_for(app)


# -- fuzzing ------------------------------------------------------------------------------------------------------

@FUZZ
@given(requests())
def test_no_request_gets_a_5xx(app, request_):
    survived(wsgi(app, *request_[:3], headers=request_[3], body=request_[4], content_type=request_[5]))


@FUZZ
@given(st.sampled_from(["/cart", "/checkout"]), fields, cookie_values, st.sampled_from(["add", "set", "remove"]))
def test_cart_and_checkout_with_a_valid_token_never_fail(app, path, pairs, cart, action):
    pairs = [("csrf_token", csrf_for(app)), ("action", action)] + pairs
    status, headers, body, _ = survived(wsgi(app, "POST", path, headers={"Cookie": f"sid={SID}; cart={cart}"},
                                             body=urlencode(pairs).encode(),
                                             content_type="application/x-www-form-urlencoded"))
    assert status in (303, 400, 403), (status, body[:200])
    if status == 400:
        assert b'role="alert"' in body  # a message that says what was wrong


ascii_only = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["email", "name", "phone", "address_line1", "address_city",
                                           "address_postal_code", "address_state", "address_country",
                                           "shipping_option", "card_number", "card_expiry", "card_cvc",
                                           "cardholder_name", "amount"]), field_value), max_size=12),
       st.booleans(), ascii_only)
def test_payment_page_posts_never_fail(app, session_id, pairs, with_token, forged):
    """Any form on the offline payment page: a decline, an error message, or a payment; never a crash."""
    from standin.page import pay_token
    shop = app.config["shop"]
    pairs = [("pay_token", pay_token(shop.standin, session_id) if with_token else forged)] + pairs
    status, _, body, _ = survived(wsgi(app, "POST", f"/offline-checkout/{session_id}", body=urlencode(pairs).encode(),
                                       content_type="application/x-www-form-urlencoded"))
    assert status in (200, 303, 400, 402, 409, 410), status


def test_payment_page_with_a_non_ascii_token(app, session_id):
    """hmac.compare_digest raises TypeError on non-ASCII str: the token must be compared as bytes."""
    survived(wsgi(app, "POST", f"/offline-checkout/{session_id}", body=b"pay_token=%C2%80",
                  content_type="application/x-www-form-urlencoded"))


# Events as Stripe could send them: every field has the type Stripe's API gives it, with values the shop does not
# expect (other shops' sessions, unknown statuses, odd amounts, metadata naming someone else's order).
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=False), anything)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(anything, inner, max_size=3)), max_leaves=8)
EVENT_TYPES = ["checkout.session.completed", "checkout.session.async_payment_succeeded",
               "checkout.session.async_payment_failed", "checkout.session.expired", "charge.refunded",
               "charge.dispute.created", "charge.dispute.closed", "payment_intent.succeeded", "other"]
amounts = st.one_of(st.none(), st.integers(-10**12, 10**12))
ids = st.one_of(st.none(), anything, st.sampled_from(["cs_test_nope", "ch_x", "du_x", "pi_x", "ord_x"]))
OBJECT_FIELDS = {
    "object": st.sampled_from(["checkout.session", "charge", "dispute", "payment_intent"]),
    "status": st.one_of(st.sampled_from(["open", "complete", "expired", "won", "lost", "needs_response",
                                         "succeeded"]), anything),
    "payment_status": st.one_of(st.sampled_from(["paid", "unpaid", "no_payment_required"]), anything),
    "client_reference_id": ids, "payment_intent": st.one_of(ids, st.fixed_dictionaries({"id": ids})),
    "charge": ids, "amount_total": amounts, "amount": amounts, "amount_refunded": amounts,
    "amount_captured": amounts, "currency": st.one_of(st.sampled_from(["usd", "eur", "jpy"]), anything),
    "metadata": st.dictionaries(anything, anything, max_size=3),
    "customer_details": st.one_of(st.none(), st.fixed_dictionaries({"email": st.one_of(st.none(), anything)})),
    "url": st.one_of(st.none(), anything), "expires_at": amounts,
}


@st.composite
def events(draw, session_id):
    keys = draw(st.lists(st.sampled_from(sorted(OBJECT_FIELDS)), unique=True))
    obj = {k: draw(OBJECT_FIELDS[k]) for k in keys}
    obj["id"] = draw(st.one_of(st.sampled_from([session_id, "cs_test_nope", "ch_x", "du_x", "pi_x"]), anything))
    if draw(st.booleans()):
        obj["metadata"] = {"order_id": draw(st.one_of(anything, st.just("ord_x")))}
    return {"id": draw(st.text("0123456789abcdef", min_size=8, max_size=24).map("evt_".__add__)),
            "object": "event", "type": draw(st.one_of(st.sampled_from(EVENT_TYPES), anything)),
            "api_version": stripe.api_version, "created": int(time.time()), "data": {"object": obj}}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_signed_events_of_any_shape_never_fail(app, session_id, data):
    """Only Stripe can sign, but an event shape the shop does not expect must still not crash it."""
    shop = app.config["shop"]
    evt = data.draw(events(session_id))
    body = json.dumps(evt)
    signature = stripe.WebhookSignature.generate_signature_header(body, shop.standin.webhook_secret)
    status, _, payload, _ = survived(wsgi(app, "POST", "/webhook", headers={"Stripe-Signature": signature},
                                          body=body.encode(), content_type="application/json"))
    assert status in (200, 400), (status, payload)


@FUZZ
@given(st.one_of(anything, st.lists(st.sampled_from(["..", "%2e%2e", "%2f", ".", "", "img", "books", ".git",
                                                     "style.css", "%00", "\\", "..%5c", "~", "%252e"]),
                                    max_size=6).map("/".join)))
def test_static_files_come_only_from_public(app, tail):
    status, _, body, _ = survived(wsgi(app, "GET", wire("/static/" + tail)))
    if status == 200:
        served = [p for p in PUBLIC.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts)]
        assert any(body == p.read_bytes() for p in served)


def test_the_ledger_is_consistent_after_all_that(app):
    assert_ledger_consistent(app.config["shop"].ledger)
    assert wsgi(app, "GET", "/")[0] == 200 and wsgi(app, "GET", "/healthz")[0] == 200


# -- the catalog file turns hostile while the shop runs ------------------------------------------------------------

VALID = json.loads((ROOT / "catalog.json").read_text())


def _paths(value, prefix=()):
    """Every path into a JSON document, for mutating one place of the valid catalog."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]
MARKUP = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "</title><h1>x", "{{x}}", "% end"]


@st.composite
def hostile_catalogs(draw):
    """Bytes for catalog.json: garbage, a half-written file, or the valid catalog with one place changed."""
    kind = draw(st.sampled_from(["bytes", "truncated", "json", "mutated", "mutated", "mutated", "deleted"]))
    text = json.dumps(VALID, indent=2)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        return text.encode()[:draw(st.integers(0, len(text) - 1))]
    if kind == "json":
        return json.dumps(draw(json_value)).encode()
    data = json.loads(text)
    path = draw(st.sampled_from(ALL_PATHS))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if kind == "deleted":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(st.one_of(json_value, st.sampled_from(MARKUP), st.integers(-10**30, 10**30)))
    return json.dumps(data).encode()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=hostile_catalogs())
def test_a_catalog_that_turns_hostile_mid_run_never_breaks_a_page(hostile_app, content):
    app, path = hostile_app
    path.write_bytes(content)
    hostile_app_tick[0] += 1
    os.utime(path, ns=(1, 2_000_000_000_000_000_000 + hostile_app_tick[0]))  # a new mtime, whatever the size
    cookie = f"sid={SID}; cart=" + ".".join(f"{p}:2" for p in PRODUCT_IDS[:3])
    token = csrf_for(app)
    for method, route, body in (("GET", "/", b""), ("GET", "/?page=2", b""), ("GET", "/cart", b""),
                                ("POST", "/cart", urlencode({"csrf_token": token, "product_id": PRODUCT_IDS[1]})),
                                ("POST", "/checkout", urlencode({"csrf_token": token})),
                                ("GET", "/static/style.css", b"")):
        status, _, page, _ = survived(wsgi(app, method, route, query="", headers={"Cookie": cookie},
                                           body=body.encode() if isinstance(body, str) else body,
                                           content_type="application/x-www-form-urlencoded"))
        assert status in (200, 303, 400, 404), (route, status, page[:200])
        for markup in MARKUP[:2]:
            assert markup.encode() not in page
    status, _, body, _ = wsgi(app, "GET", "/healthz")
    assert status in (200, 503) and (status == 503) == body.startswith(b"unhealthy")
    hostile_app_seen.add(status)


hostile_app_tick = [0]
hostile_app_seen = set()


@pytest.fixture
def hostile_app(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(VALID))
    app = make_app({"data_dir": str(tmp_path / "data"), "base_url": BASE, "catalog": str(path)})
    yield app, path
    # Whatever it went through, a good file brings the shop back, and no order is inconsistent.
    path.write_text(json.dumps(VALID))
    os.utime(path, ns=(1, 3_000_000_000_000_000_000))
    assert wsgi(app, "GET", "/healthz")[:3:2] == (200, b"ok\n")
    assert_ledger_consistent(app.config["shop"].ledger)


@pytest.mark.parametrize("break_it", ["delete", "directory", "empty", "huge-number", "deep-nesting", "not-utf8"])
def test_catalog_file_gone_or_unreadable_keeps_the_last_good_one(hostile_app, break_it):
    app, path = hostile_app
    name = VALID["products"][0]["name"].encode()
    if break_it == "delete":
        path.unlink()
    elif break_it == "directory":
        path.unlink()
        path.mkdir()
    elif break_it == "empty":
        path.write_bytes(b"")
    elif break_it == "huge-number":
        path.write_text('{"shop": {"name": "x", "currency": "usd"}, "products": [' + "9" * 100_000 + "]}")
    elif break_it == "deep-nesting":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_bytes(b"\xff\xfe" + json.dumps(VALID).encode("utf-16-le"))
    if path.is_file():
        os.utime(path, ns=(1, 2_500_000_000_000_000_000))
    status, _, page, _ = survived(wsgi(app, "GET", "/"))
    assert status == 200 and name in page
    status, _, body, _ = wsgi(app, "GET", "/healthz")
    assert status == 503 and b"catalog" in body
    if path.is_dir():
        path.rmdir()


def test_the_hostile_catalogs_included_valid_and_invalid_ones():
    """Guards the test above: its catalogs must both load (200) and be refused (503) now and then."""
    if len(hostile_app_seen) == 0:
        pytest.skip("run together with test_a_catalog_that_turns_hostile_mid_run_never_breaks_a_page")
    assert hostile_app_seen == {200, 503}


# == attacks with a browser: CSRF, cookies, headers, limits, tampering, markup ==================================


FORM = re.compile(r'<form\b[^>]*method="post"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S | re.I)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
PAY = {"email": "reader@example.com", "name": "Ada Reader", "cardholder_name": "Ada Reader",
       "card_number": "4242424242424242", "card_expiry": "12 / 34", "card_cvc": "123", "phone": "+1 555 010 0000",
       "address_line1": "1 Main St", "address_city": "Springfield", "address_postal_code": "12345",
       "address_country": "US"}


def pay(shopper, location, **changes):
    """Fill in and submit the offline payment page; returns the response."""
    form = shopper.get(location).forms["pay"]
    for name, value in {**PAY, **changes}.items():
        if name in form.fields:
            try:
                form[name] = value
            except ValueError:  # not one of a <select>'s options: send it anyway, as a hand-made request would
                form[name].force_value(value)
    return form.submit(expect_errors=True)


def browser(make_shopper, base_url=BASE, **overrides):
    """A shopper on a shop at base_url (its cookies come back to it on https too)."""
    shopper = make_shopper(base_url=base_url, **overrides)
    host = base_url.split("://", 1)[1]
    shopper.extra_environ.update({"wsgi.url_scheme": base_url.split(":", 1)[0], "HTTP_HOST": host})
    return shopper


def forms_on(text):
    """[(action, {hidden field: value})] of every POST form on a page."""
    return [(action, dict(HIDDEN.findall(body))) for action, body in FORM.findall(text)]


def every_shop_form(shopper):
    """The POST forms on every page a shopper sees (catalog, cart), with their hidden fields."""
    cat = shopper.shop.catalog()
    shopper.add(cat.products[0].id)
    found = {}
    for path in ("/", "/cart"):
        for action, fields_ in forms_on(shopper.get(path).text):
            found.setdefault((action, fields_.get("action")), fields_)
    return found


def test_every_shop_form_carries_a_token_and_is_refused_without_it(shopper, make_shopper):
    forms = every_shop_form(shopper)
    assert {a for a, _ in forms} == {"/cart", "/checkout"}
    assert {kind for _, kind in forms} >= {"add", "set", "remove", None}
    stranger = make_shopper()
    stranger.get("/")
    for (action, _), hidden in forms.items():
        assert hidden["csrf_token"] and len(hidden["csrf_token"]) >= 32
        before = (shopper.cart_cookie(), len(shopper.shop.ledger.list()))
        for data, headers, who in (
                ({k: v for k, v in hidden.items() if k != "csrf_token"}, {}, shopper),   # no token
                ({**hidden, "csrf_token": hidden["csrf_token"][::-1]}, {}, shopper),     # a wrong one
                (hidden, {}, stranger),                                                  # another browser's
                (hidden, {"Origin": "https://evil.example"}, shopper),
                (hidden, {"Origin": BASE + ":8443"}, shopper),
                (hidden, {"Origin": BASE.replace("http:", "https:")}, shopper),
                (hidden, {"Sec-Fetch-Site": "cross-site"}, shopper),
                (hidden, {"Sec-Fetch-Site": "same-site"}, shopper),
                (hidden, {"Sec-Fetch-Site": "cross-site", "Origin": BASE}, shopper)):
            page = who.post(action, data, headers=headers, status=403)
            assert "did not come from this shop" in page.text and "reload the page" in page.text
            assert page.headers["Content-Security-Policy"] and "cart=" not in page.headers.get("Set-Cookie", "")
        assert (shopper.cart_cookie(), len(shopper.shop.ledger.list())) == before
        assert shopper.post(action, hidden, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"}).status_int == 303


def test_a_token_without_its_cookie_is_refused(shopper):
    token = shopper.csrf()
    product = shopper.shop.catalog().products[0].id
    shopper.reset()  # a browser without the cookie the token belongs to
    shopper.post("/cart", {"csrf_token": token, "product_id": product}, status=403)
    for sid in ("x" * 200, "short", "", "a" * 32 + ";", "../" * 11):
        shopper.reset()
        shopper.post("/cart", {"csrf_token": token, "product_id": product}, headers={"Cookie": f"sid={sid}"},
                     status=403)
    assert not shopper.cart_cookie()


def test_gets_never_change_anything(shopper):
    product = shopper.shop.catalog().products[0].id
    shopper.get("/cart", {"action": "add", "product_id": product, "quantity": "3"})
    shopper.get("/checkout", status=405)
    shopper.get("/?action=add&product_id=" + product)
    assert not shopper.cart_cookie() and shopper.shop.ledger.list() == []


def test_webhook_is_exempt_from_csrf_and_relies_on_its_signature(shopper):
    body = json.dumps({"id": "evt_1", "object": "event", "type": "ping", "data": {"object": {"id": "x"}}})
    hostile = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}
    assert shopper.post("/webhook", body, headers=hostile, expect_errors=True).status_int == 400  # not 403: unsigned
    signed = stripe.WebhookSignature.generate_signature_header(body, shopper.standin.webhook_secret)
    assert shopper.post("/webhook", body, headers={**hostile, "Stripe-Signature": signed}).status_int == 200
    forged = stripe.WebhookSignature.generate_signature_header(body, "whsec_" + "0" * 32)
    assert shopper.post("/webhook", body, headers={**hostile, "Stripe-Signature": forged},
                        expect_errors=True).status_int == 400


def test_cookies_over_a_whole_purchase_are_httponly_lax_and_secure_on_https(make_shopper):
    shopper = browser(make_shopper, "https://shop.example")
    seen = []
    original = shopper.do_request

    def record(*args, **kwargs):
        response = original(*args, **kwargs)
        seen.extend(response.headers.getall("Set-Cookie"))
        return response
    shopper.do_request = record
    shopper.add(shopper.shop.catalog().products[0].id)
    to_stripe = shopper.checkout()
    done = pay(shopper, to_stripe.location)
    assert "Thank you" in shopper.get(done.location).text
    names = {c.split("=", 1)[0] for c in seen}
    assert {"sid", "cart"} <= names
    for cookie in seen:
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "secure", "path"} <= attributes, cookie
        assert "samesite=lax" in cookie.lower()


def csp(response):
    return {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split(";") if d.strip()}


def every_kind_of_response(shopper, monkeypatch):
    """One response of each kind the shop gives: pages, each error status, redirects, static, health, payment."""
    cat = shopper.shop.catalog()
    out = {"home": shopper.get("/"), "cart": shopper.get("/cart"), "404": shopper.get("/nope", status=404),
           "405": shopper.put("/cart", status=405), "403": shopper.post("/cart", {}, status=403),
           "400": shopper.post("/cart", {"csrf_token": shopper.csrf(), "product_id": "nope"}, status=400),
           "413": shopper.post("/cart", {"csrf_token": "x" * 20000}, status=413),
           "static": shopper.get("/static/style.css"), "static 404": shopper.get("/static/.gitignore", status=404),
           "health": shopper.get("/healthz"), "webhook 400": shopper.post("/webhook", "{}", status=400),
           "redirect": shopper.add(cat.products[0].id)}
    out["304"] = shopper.get("/static/style.css", headers={"If-None-Match": out["static"].headers["ETag"]}, status=304)
    to_stripe = shopper.checkout()
    out["to stripe"] = to_stripe
    out["pay page"] = shopper.get(to_stripe.location)
    out["pay 402"] = pay(shopper, to_stripe.location, card_number="4000000000000002")
    out["pay 400"] = pay(shopper, to_stripe.location, address_country="ZZ", card_expiry="13 / 99")
    assert (out["pay 402"].status_int, out["pay 400"].status_int) == (402, 400)
    out["pay 404"] = shopper.get("/offline-checkout/cs_test_nope", status=404)
    out["confirm"] = shopper.get(pay(shopper, to_stripe.location).location)
    out["success 404"] = shopper.get("/success?session_id=cs_test_nope", status=404)
    shopper.standin.faults.add("POST /v1/checkout/sessions", "500", times=10)
    out["503"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": cat.products[1].id},
                              status=503)
    shopper.standin.faults.clear()
    monkeypatch.setattr(shopper.shop.ledger, "create_order", lambda *a, **k: 1 / 0)
    out["500"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": cat.products[1].id},
                              status=500, expect_errors=True)
    monkeypatch.setattr(shopper.shop.ledger, "ping", lambda: 1 / 0)
    out["health 503"] = shopper.get("/healthz", status=503)
    return out


@pytest.mark.parametrize("base_url", [BASE, "https://shop.example"])
def test_security_headers_on_every_kind_of_response(make_shopper, monkeypatch, base_url):
    shopper = browser(make_shopper, base_url, stripe_max_retries=0)
    for kind, response in every_kind_of_response(shopper, monkeypatch).items():
        policy = csp(response)
        assert policy["default-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"], kind
        assert policy["script-src"] == ["'self'"] and policy["object-src"] == ["'none'"], kind
        assert {"'self'", "https://checkout.stripe.com"} <= set(policy["form-action"]), kind
        assert not any("unsafe" in v for values in policy.values() for v in values), kind
        assert response.headers["X-Content-Type-Options"] == "nosniff", kind
        assert response.headers["Referrer-Policy"] in ("strict-origin-when-cross-origin", "no-referrer",
                                                       "same-origin", "strict-origin"), kind
        assert ("Strict-Transport-Security" in response.headers) == base_url.startswith("https:"), kind
        assert response.headers["X-Request-Id"], kind
        if response.content_type == "text/html":
            html = response.text
            assert not re.search(r"<script\b(?![^>]*\bsrc=)", html, re.I), kind  # no inline script
            assert not re.search(r"\son[a-z]+\s*=", html, re.I), kind           # no inline handlers
            assert not re.search(r"\sstyle\s*=|<style\b|javascript:", html, re.I), kind
            assert response.headers.get("Cache-Control") == "no-store", kind


def test_forms_post_only_to_this_shop_or_stripe(shopper):
    every_shop_form(shopper)
    for path in ("/", "/cart", shopper.checkout().location):
        for action, _ in forms_on(shopper.get(path).text):
            assert action.startswith("/") and not action.startswith("//"), action


# -- limits ---------------------------------------------------------------------------------------------------------

def test_oversized_bodies_are_refused_before_they_are_read(shopper, app):
    token = shopper.csrf()
    page = shopper.post("/cart", {"csrf_token": token, "product_id": "x", "pad": "x" * 17_000}, status=413)
    assert "too large" in page.text
    shopper.post("/webhook", b"{" + b" " * (600 * 1024) + b"}", headers={"Content-Type": "application/json"},
                 status=413)
    # A Content-Length the app cannot trust is refused whatever the body is.
    for length in ("abc", "-1", "1e9", "99999999999999999999"):
        status, _, body, _ = survived(wsgi(app, "POST", "/cart", body=b"a=1", length=length,
                                           content_type="application/x-www-form-urlencoded"))
        assert status in (400, 403, 413), (length, status)  # refused, if not for its length then for its token


MULTIPART = "multipart/form-data; boundary=b0undary"


@pytest.mark.parametrize("body, content_type", [
    (b'--b0undary\r\nContent-Disposition: form-data; name="\n"\r\n\r\nx\r\n--b0undary--\r\n', MULTIPART),
    (b'--b0undary\r\nContent-Disposition: form-data; name="a\x00b"\r\n\r\nx\r\n--b0undary--\r\n', MULTIPART),
    (b"--b0undary\r\nno colon here\r\n\r\nx\r\n--b0undary--\r\n", MULTIPART),
    (b'--b0undary\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nx', MULTIPART),  # never ends
    (b"--b0undary\r\n" + b"X: " + b"y" * 5000 + b"\r\n\r\n--b0undary--\r\n", MULTIPART),
    (b"anything", "multipart/form-data"), (b"anything", "multipart/form-data; boundary="),
    (b"a=%ff%fe&csrf_token=%00", "application/x-www-form-urlencoded"), (b"\xff\xfe", "text/plain"),
    (b'{"csrf_token": 1}', "application/json")])
@pytest.mark.parametrize("path", ["/cart", "/checkout", "/offline-checkout/cs_test_x"])
def test_malformed_form_bodies_are_a_400_or_403_never_a_crash(app, path, body, content_type):
    status, _, page, _ = survived(wsgi(app, "POST", path, body=body, content_type=content_type,
                                       headers={"Cookie": f"sid={SID}"}))
    assert status in (400, 403, 404), status


@pytest.mark.parametrize("quantity", ["0", "100", "-1", "1e3", "1.5", "٣", "9" * 40, " ", "0x10", "+1"])
def test_quantities_outside_1_to_99_are_refused_with_a_message(shopper, quantity):
    product = shopper.shop.catalog().products[0].id
    for data in ({"action": "add", "product_id": product, "quantity": quantity},
                 {"product_id": product, "quantity": quantity}):  # "Buy now" posts to /checkout
        path = "/cart" if "action" in data else "/checkout"
        response = shopper.post(path, {"csrf_token": shopper.csrf(), **data}, expect_errors=True)
        assert response.status_int == 400, (path, quantity)
        assert "whole number from 1 to 99" in response.text
    assert shopper.shop.ledger.list() == [] or all(
        i["quantity"] == 1 for o in shopper.shop.ledger.list() for i in o["items"])


def test_quantities_add_up_to_99_at_most(shopper):
    product = shopper.shop.catalog().products[0].id
    for _ in range(3):
        shopper.add(product, 60)
    assert shopper.cart_cookie() == f"{product}:99"
    shopper.set_quantity(product, 0)
    assert not shopper.cart_cookie()


def test_a_cart_holds_at_most_50_lines(make_shopper, catalog_copy):
    data = json.loads(catalog_copy.read_text())
    template = data["products"][0]
    data["products"] = [{**template, "id": f"book-{i}", "name": f"Book {i}"} for i in range(60)]
    catalog_copy.write_text(json.dumps(data))
    shopper = make_shopper(catalog=str(catalog_copy))
    for i in range(50):
        shopper.add(f"book-{i}")
    page = shopper.post("/cart", {"csrf_token": shopper.csrf(), "action": "add", "product_id": "book-50"}, status=400)
    assert "at most 50 different products" in page.text
    shopper.add("book-3")  # a product already in the cart can still be added
    # A hand-made cookie with more lines is cut to 50 when read.
    cookie = ".".join(f"book-{i}:1" for i in range(60))
    shopper.set_cookie("cart", cookie)
    order = shopper.shop.ledger.by_session(shopper.session_id(shopper.checkout()))
    assert len(order["items"]) == 50


@pytest.mark.parametrize("field, value, status", [
    ("product_id", "a" * 65, 400), ("product_id", "x" * 5000, 400), ("action", "add" * 2000, 400),
    ("product_id", "../catalog", 400), ("product_id", "<script>", 400), ("csrf_token", "x" * 10_000, 403)])
def test_long_or_odd_fields_are_refused_with_a_message(shopper, field, value, status):
    data = {"csrf_token": shopper.csrf(), "action": "add", "product_id": shopper.shop.catalog().products[0].id,
            field: value}
    page = shopper.post("/cart", data, status=status)
    assert 'role="alert"' in page.text and value not in page.text


@pytest.mark.parametrize("cookie", ["x" * 3000, "pride-and-prejudice:" + "9" * 100, "\u00e9:1", "a:1." * 900])
def test_oversized_or_odd_cart_cookies_are_ignored(shopper, cookie):
    shopper.get("/")
    response = shopper.get("/cart", headers={"Cookie": f"sid={shopper.cookies['sid']}; cart={cookie}"})
    assert response.status_int == 200


@pytest.mark.parametrize("query", ["page=" + "9" * 50, "page=-1", "page=0", "page=%00", "session_id=" + "a" * 5000,
                                   "added=" + "x" * 5000])
def test_long_query_strings_are_harmless(shopper, query):
    path = "/success" if query.startswith("session_id") else "/cart" if query.startswith("added") else "/"
    response = shopper.get(f"{path}?{query}", expect_errors=True)
    assert response.status_int in (200, 404)
    assert "x" * 100 not in response.text and "a" * 100 not in response.text


# -- nothing the shopper sends sets what they pay ------------------------------------------------------------------

TAMPER = {"price": "1", "unit_amount": "1", "amount": "1", "amount_total": "1", "amount_subtotal": "1",
          "currency": "jpy", "tax": "0", "amount_tax": "0", "tax_behavior": "inclusive", "shipping": "0",
          "amount_shipping": "0", "shipping_options[0][shipping_rate_data][fixed_amount][amount]": "0",
          "success_url": "https://evil.example/ok", "cancel_url": "https://evil.example/no",
          "line_items[0][price_data][unit_amount]": "1", "line_items[0][quantity]": "1000",
          "metadata[order_id]": "ord_someone_else", "client_reference_id": "ord_someone_else", "mode": "setup",
          "automatic_tax[enabled]": "false", "discounts[0][coupon]": "FREE", "allow_promotion_codes": "true",
          "customer_email": "attacker@evil.example", "expires_at": "1", "name": "Free book", "quantity": "1"}


def expected(cat, cart, country="US", option=0):
    """Subtotal, shipping, tax and total as Checkout computes them from the catalog alone."""
    from standin import tax
    rate = tax.rate(country)
    lines = [cat.product(p).price * q for p, q in cart.items()]
    shipping = cat.shipping_options[option].amount
    amount_tax = sum(tax.tax_for(a, rate, cat.tax_behavior) for a in lines + [shipping])
    return sum(lines), shipping, amount_tax, sum(lines) + shipping + amount_tax


@pytest.mark.parametrize("how", ["cart", "buy now"])
def test_extra_fields_never_change_prices_amounts_or_urls(shopper, how):
    cat = shopper.shop.catalog()
    a, b = cat.products[0], cat.products[1]
    if how == "cart":
        shopper.add(a.id, 2)
        shopper.add(b.id)
        to_stripe = shopper.post("/checkout", {"csrf_token": shopper.csrf(), **TAMPER}, status=303)
        cart = {a.id: 2, b.id: 1}
    else:
        to_stripe = shopper.post("/checkout", {"csrf_token": shopper.csrf(), **TAMPER, "product_id": a.id,
                                               "quantity": "2"}, status=303)
        cart = {a.id: 2}
    assert to_stripe.location.startswith(BASE + "/offline-checkout/cs_test_")
    session_id = shopper.session_id(to_stripe)
    session = shopper.shop.stripe.v1.checkout.sessions.retrieve(session_id, {"expand": ["line_items"]}).to_dict()
    order = shopper.shop.ledger.by_session(session_id)
    assert session["currency"] == cat.currency and session["mode"] == "payment"
    assert [(i["price"]["unit_amount"], i["quantity"]) for i in session["line_items"]["data"]] == \
        [(cat.product(p).price, q) for p, q in cart.items()]
    assert session["success_url"] == BASE + "/success?session_id={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == BASE + "/cart?canceled=1"
    assert session["metadata"] == {"order_id": order["id"]} and session["client_reference_id"] == order["id"]
    assert session["automatic_tax"]["enabled"] == (cat.tax_mode == "automatic")
    assert not session.get("customer_email") and not session.get("discounts")
    # On the payment page, amounts and currency in the form are ignored too.
    done = pay(shopper, to_stripe.location, amount_total="1", amount="1", currency="jpy", unit_amount="1")
    assert done.status_int == 303 and done.location == f"{BASE}/success?session_id={session_id}"
    page = shopper.get(done.location)
    subtotal, shipping, amount_tax, total = expected(cat, cart)
    from catalog import format_money
    assert format_money(total, cat.currency) in page.text
    order = shopper.shop.ledger.get(order["id"])
    assert (order["amount_subtotal"], order["amount_shipping"], order["amount_tax"], order["amount_total"]) == \
        (subtotal, shipping, amount_tax, total)
    assert [(i["product_id"], i["unit_amount"], i["quantity"]) for i in order["items"]] == \
        [(p, cat.product(p).price, q) for p, q in cart.items()]


@pytest.mark.parametrize("cookie, lines", [
    ("{a}:999999", {"a": 99}), ("{a}:1000000", {}), ("{a}:0", {"a": 1}), ("{a}:-3", {}), ("{a}:1:1", {}), ("{a}:2.{a}:3", {"a": 5}),
    ("{a}:1.no-such-book:5", {"a": 1}), ("{a}:1;price=1", {"a": 1}), ("{a}=1", {}), ("%7Ba%7D:1", {})])
def test_a_hand_made_cart_cookie_only_ever_names_catalog_products_and_quantities(shopper, cookie, lines):
    cat = shopper.shop.catalog()
    a = cat.products[0].id
    shopper.get("/")
    sid = shopper.cookies["sid"]
    response = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=303,
                            headers={"Cookie": f"sid={sid}; cart={cookie.format(a=a)}"})
    if not lines:
        assert response.location.endswith("/cart?empty=1")
        return
    order = shopper.shop.ledger.by_session(shopper.session_id(response))
    assert {i["product_id"]: i["quantity"] for i in order["items"]} == {a: lines["a"]}
    assert all(i["unit_amount"] == cat.product(i["product_id"]).price for i in order["items"])


def test_the_success_page_shows_what_stripe_charged_whatever_the_url_says(shopper):
    cat = shopper.shop.catalog()
    shopper.add(cat.products[0].id)
    to_stripe = shopper.checkout()
    done = pay(shopper, to_stripe.location)
    page = shopper.get(done.location + "&amount_total=1&status=failed&currency=jpy&payment_status=unpaid")
    from catalog import format_money
    assert "Thank you" in page.text and format_money(expected(cat, {cat.products[0].id: 1})[3], "usd") in page.text


# -- markup in the catalog and in what shoppers type is shown, never run ------------------------------------------

SCRIPT, IMG = '<script>alert("x")</script>', '"><img src=x onerror=alert(1)>'


class _Tags(HTMLParser):
    """The tags and attribute names a browser would see in a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.title = [], set(), None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)


def assert_inert(text, where):
    """Markup from the catalog or a form never becomes a tag or an attribute in the page."""
    parser = _Tags()
    parser.feed(text)
    assert "script" not in parser.tags, where
    assert parser.tags.count("title") <= 1 and parser.tags.count("h1") <= 1, where
    assert not [a for a in parser.attributes if a.startswith("on")], where
    assert "x" not in [a for a in parser.attributes], where  # `src=x` only exists inside the injected <img


def test_markup_in_catalog_text_and_echoed_input_is_escaped_on_every_page(make_shopper, catalog_copy):
    data = json.loads(catalog_copy.read_text())
    data["shop"]["name"] = "Books </title><h1>" + SCRIPT
    for i, product in enumerate(data["products"][:3]):
        product["name"] = [SCRIPT, IMG, "</title><h1>x{{csrf}}"][i]
        product["description"] = IMG + SCRIPT
    data["shipping"]["options"][0]["name"] = SCRIPT + " shipping"
    catalog_copy.write_text(json.dumps(data))
    shopper = make_shopper(catalog=str(catalog_copy))
    ids = [p["id"] for p in data["products"][:3]]
    pages = {"home": shopper.get("/"), "404": shopper.get("/nope", status=404)}
    assert "&lt;script&gt;" in pages["home"].text  # shown as text
    for product in ids:
        shopper.add(product)
    pages["cart"] = shopper.get(f"/cart?added={ids[0]}")
    pages["400"] = shopper.post("/cart", {"csrf_token": shopper.csrf(), "product_id": SCRIPT}, status=400)
    to_stripe = shopper.checkout()
    pages["pay"] = shopper.get(to_stripe.location)
    assert "&lt;script&gt;" in pages["pay"].text
    echoed = {"name": SCRIPT, "address_line1": IMG, "address_city": SCRIPT,
              "cardholder_name": IMG, "card_number": "4000000000000002"}
    pages["pay declined"] = pay(shopper, to_stripe.location, **echoed)
    pages["pay invalid"] = pay(shopper, to_stripe.location, **{**echoed, "email": f"{IMG}@x.example"})
    assert pages["pay declined"].status_int == 402 and pages["pay invalid"].status_int == 400
    done = pay(shopper, to_stripe.location, name=SCRIPT, address_line1=IMG)
    pages["success"] = shopper.get(done.location)
    assert "Thank you" in pages["success"].text
    pages["error"] = shopper.get("/success?session_id=" + SCRIPT, status=404)
    shopper.standin.faults.add("POST /v1/checkout/sessions", "429")
    pages["503"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": ids[1]}, status=503)
    with pytest.raises(AssertionError):  # the check itself would see an injection
        assert_inert('<p>"><img src=x onerror=alert(1)></p>', "self-check")
    for where, page in pages.items():
        assert_inert(page.text, where)
    assert "x{{csrf}}" in pages["home"].text  # template syntax in catalog text stays text


# -- secrets never reach a response or a log -------------------------------------------------------------------------


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
                                                                  monkeypatch):
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
    form = urlencode({**PAY, "pay_token": token})
    status, headers, _ = http_get(to_stripe.location, "POST", form,
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["Location"].startswith(BASE + "/success?session_id=")
    assert "Thank you" in shopper.get(urlsplit(headers["Location"]).path + "?" +
                                      urlsplit(headers["Location"]).query).text
    events_ = shopper.shop.stripe.v1.events.list({"limit": 100}).data
    assert events_
    for event in events_:
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
    live = recording(make_shopper(stripe_secret_key=LIVE_KEY, stripe_api_base=standalone, stripe_webhook_secret=WHSEC,
                                  base_url="https://shop.example", stripe_max_retries=0), seen)
    live.extra_environ.update({"wsgi.url_scheme": "https", "HTTP_HOST": "shop.example"})
    page = live.post("/checkout", {"csrf_token": live.csrf(), "product_id": cat.products[0].id}, status=503)
    assert "not answering" in page.text
    out, err = capfd.readouterr()
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    everything = "\n".join(seen) + logs + out + err
    assert "Request to Stripe api" in everything  # the library's own log lines were captured
    for secret in (KEY, KEY[8:], KEY[-12:], LIVE_KEY, LIVE_KEY[8:], LIVE_KEY[-11:], WHSEC, WHSEC[6:]):
        assert secret not in everything, secret


# -- over a real socket: paths as the server decodes them -------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from bench.shoppers import ShopServer
    server = ShopServer(tmp_path_factory.mktemp("served") / "data").start()
    yield server
    server.stop()


RAW = ["/static/../shop.py", "/static/%2e%2e/shop.py", "/static/..%2fshop.py", "/static/%2e%2e%2fshop.py",
       "/static/img/..%2f..%2fshop.py", "/static/..%5cshop.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
       "/static/img/", "/static/img", "/static/", "/static/.gitignore", "/static/%2egitignore", "/static/style.css%00",
       "/static/img/books/", "//static/../shop.py", "/static/%252e%252e/shop.py", "/static/..;/shop.py",
       "/static/img/../../catalog.json", "/static/%c0%ae%c0%ae/shop.py", "/static/.%2e/.%2e/etc/passwd",
       "/static/..%00/shop.py", "http://127.0.0.1/static/../shop.py", "/static/~/.bashrc", "/static/*"]


@pytest.mark.parametrize("path", RAW)
def test_static_paths_sent_raw_never_leave_public(served, path):
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{served.port}")
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status in (400, 403, 404), (path, response.status)
    for leaked in (b"import ", b"root:", b'"products"', b"*.pyc", b"Index of"):
        assert leaked not in body, (path, leaked)
    if response.status != 400:  # waitress itself refuses what is not HTTP; everything else is the shop's
        assert response.getheader("Content-Security-Policy") and response.getheader("X-Content-Type-Options")


def test_oversized_headers_and_bodies_are_refused_by_the_server(served):
    status, _, _ = http_get(served.url + "/", headers={"X-Big": "a" * 100_000})
    assert status in (400, 413, 431)
    status, _, _ = http_get(served.url + "/cart", "POST", b"a" * (600 * 1024),
                            {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    try:  # beyond waitress's own limit the server may close the connection before the body is sent
        status = http_get(served.url + "/webhook", "POST", b"a" * (2 * 1024 * 1024))[0]
    except ConnectionError:
        status = 413
    assert status == 413
    assert http_get(served.url + "/healthz")[0] == 200
