"""Hostile requests and forms: whatever a client sends (methods, paths, fields, query strings, headers, content types,
bodies), the shop answers below 500, refuses what it must with a message, and its ledger stays consistent."""

import json
import re
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BASE, ROOT, as_served, assert_ledger_consistent, browser_of, edit_catalog, survived, wsgi

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
PRODUCT_IDS = [p["id"] for p in json.loads((ROOT / "catalog.json").read_text())["products"]]
BROWSER = {}  # the fuzzing browser's sid cookie and CSRF token: strategies are built before the app exists


@pytest.fixture(scope="module")
def app(module_app):
    return module_app


@pytest.fixture(scope="module", autouse=True)
def _browser(app):
    BROWSER["sid"], BROWSER["token"] = browser_of(app)


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
paths = st.one_of(st.sampled_from(PATHS), st.sampled_from(PATHS), st.sampled_from(PATHS),
                  st.builds(lambda a, b: a + b, st.sampled_from(PATHS), anything), anything.map(lambda s: "/" + s))
methods = st.sampled_from(["GET"] * 4 + ["POST"] * 6 + ["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
content_types = st.one_of(st.none(), st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data", "multipart/form-data; boundary=b0undary", "multipart/form-data; boundary=",
    "application/json", "text/plain", "text/html; charset=utf-9", "*/*", ";;;", "application/xml"]), latin1)
cookie_values = st.one_of(latin1, st.sampled_from(["walden:1", "x:1", ":", "a" * 5000]),
                          st.lists(st.tuples(st.sampled_from(PRODUCT_IDS), st.integers(-5, 10**7)), max_size=60).map(
                              lambda items: ".".join(f"{p}:{q}" for p, q in items)))
the_sid = st.builds(lambda: BROWSER["sid"])


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
def requests(draw):
    """One hostile request: (method, path, query, headers, body, content type)."""
    method = draw(methods)
    path = draw(paths)
    query = draw(st.one_of(st.lists(st.tuples(st.sampled_from(["page", "session_id", "added", "canceled", "empty"]),
                                              field_value), max_size=4).map(urlencode), latin1))
    pairs = draw(fields)
    token = draw(st.booleans())
    if token:
        pairs = [("csrf_token", BROWSER["token"])] + pairs
    kind = draw(st.sampled_from(["urlencoded", "multipart", "json", "raw"]))
    body = encode_body(kind, pairs, draw(st.binary(max_size=300)))
    ctype = {"urlencoded": "application/x-www-form-urlencoded", "multipart": "multipart/form-data; boundary=b0undary",
             "json": "application/json"}.get(kind) if draw(st.booleans()) else draw(content_types)
    cookie = draw(st.one_of(st.none(), latin1, st.builds(lambda sid, cart: f"sid={sid}; cart={cart}",
                                                         st.one_of(the_sid, latin1), cookie_values)))
    if token and draw(st.integers(0, 4)):
        cookie = f"sid={BROWSER['sid']}; cart={draw(cookie_values)}"
    headers = dict(draw(st.dictionaries(st.sampled_from(
        ["Origin", "Sec-Fetch-Site", "Referer", "Host", "Accept", "Accept-Encoding", "If-None-Match",
         "If-Modified-Since", "Range", "X-Forwarded-For", "X-Forwarded-Host", "Stripe-Signature", "Content-Encoding",
         "Transfer-Encoding", "Expect"]), st.one_of(latin1, st.sampled_from(
             ["same-origin", "cross-site", "none", BASE, "null", "bytes=0-5", "bytes=99999-", "*", "chunked"])),
        max_size=4)))
    if cookie is not None:
        headers["Cookie"] = cookie
    return method, as_served(path), as_served(query), {k: as_served(v) for k, v in headers.items()}, body, ctype


# -- fuzzing ------------------------------------------------------------------------------------------------------

@FUZZ
@given(requests())
def test_no_request_gets_a_5xx(app, request_):
    survived(wsgi(app, *request_[:3], headers=request_[3], body=request_[4], content_type=request_[5]))


@FUZZ
@given(st.sampled_from(["/cart", "/checkout"]), fields, cookie_values, st.sampled_from(["add", "set", "remove"]))
def test_cart_and_checkout_with_a_valid_token_never_fail(app, path, pairs, cart, action):
    pairs = [("csrf_token", BROWSER["token"]), ("action", action)] + pairs
    status, _, body, _ = survived(wsgi(app, "POST", path, headers={"Cookie": f"sid={BROWSER['sid']}; cart={cart}"},
                                       body=urlencode(pairs).encode(),
                                       content_type="application/x-www-form-urlencoded"))
    assert status in (303, 400, 403), (status, body[:200])
    if status == 400:
        assert b'role="alert"' in body  # a message that says what was wrong


def test_the_ledger_is_consistent_after_all_that(app):
    assert_ledger_consistent(app.config["shop"].orders.ledger)
    assert wsgi(app, "GET", "/")[0] == 200 and wsgi(app, "GET", "/healthz")[0] == 200


# -- CSRF: every form carries a token, and nothing changes without it ------------------------------------------------

FORM = re.compile(r'<form\b[^>]*method="post"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S | re.I)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


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
    ledger = shopper.shop.orders.ledger
    for (action, _), hidden in forms.items():
        assert hidden["csrf_token"] and len(hidden["csrf_token"]) >= 24
        before = (shopper.cart_cookie(), len(ledger.list()))
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
            foreign = headers.get("Origin", BASE) != BASE  # sent from a page at another address: it says the shop's
            assert "nothing was changed" in page.text and (f"Please open the shop at {BASE}" if foreign else
                                                           "reload the page") in page.text
            assert page.headers["Content-Security-Policy"] and "cart=" not in page.headers.get("Set-Cookie", "")
        assert (shopper.cart_cookie(), len(ledger.list())) == before
        filled = {"quantity": "1", **hidden}  # the visible quantity box, as a browser sends it
        assert shopper.post(action, filled, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"}).status_int == 303


def test_forms_post_only_to_this_shop_or_stripe(shopper):
    every_shop_form(shopper)
    for path in ("/", "/cart", shopper.checkout().location):
        for action, _ in forms_on(shopper.get(path).text):
            assert action.startswith("/") and not action.startswith("//"), action


def test_gets_never_change_anything(shopper):
    product = shopper.shop.catalog().products[0].id
    shopper.get("/cart", {"action": "add", "product_id": product, "quantity": "3"})
    assert shopper.get("/checkout", {"product_id": product}, status=303).location.endswith("/cart")  # nothing made
    shopper.get("/?action=add&product_id=" + product)
    assert not shopper.cart_cookie() and shopper.shop.orders.ledger.list() == []


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
    (b'{"csrf_token": 1}', "application/json"),
    # a charset Python does not know, or a codec that is not one of text, for the body or for one part
    (b'--b0undary\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nx\r\n--b0undary--\r\n',
     MULTIPART + "; charset=utf-99"),
    (b'--b0undary\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nx\r\n--b0undary--\r\n',
     MULTIPART + "; charset=rot13"),
    (b'--b0undary\r\nContent-Disposition: form-data; name="csrf_token"\r\nContent-Type: text/plain; charset=zlib'
     b'\r\n\r\nx\r\n--b0undary--\r\n', MULTIPART)])
@pytest.mark.parametrize("path", ["/cart", "/checkout", "/offline-checkout/cs_test_x"])
def test_malformed_form_bodies_are_a_400_or_403_never_a_crash(app, path, body, content_type):
    status, _, page, _ = survived(wsgi(app, "POST", path, body=body, content_type=content_type,
                                       headers={"Cookie": f"sid={BROWSER['sid']}"}))
    assert status in (400, 403, 404), status


@pytest.mark.parametrize("quantity", ["0", "100", "-1", "1e3", "1.5", "٣", "9" * 40, "0x10", "+1", "1 1"])
def test_quantities_outside_1_to_99_are_refused_with_a_message(shopper, quantity):
    product = shopper.shop.catalog().products[0].id
    for data in ({"action": "add", "product_id": product, "quantity": quantity},
                 {"product_id": product, "quantity": quantity}):  # "Buy now" posts to /checkout
        path = "/cart" if "action" in data else "/checkout"
        response = shopper.post(path, {"csrf_token": shopper.csrf(), **data}, expect_errors=True)
        assert response.status_int == 400, (path, quantity)
        assert "whole number from 1 to 99" in response.text
    orders = shopper.shop.orders.ledger.list()
    assert all(i["quantity"] == 1 for o in orders for i in o["items"])


@pytest.mark.parametrize("quantity", [None, "", " ", "100", "-1", "x"])
def test_a_cart_change_without_a_quantity_from_0_to_99_is_refused_and_leaves_the_cart(shopper, quantity):
    product = shopper.shop.catalog().products[0].id
    shopper.add(product, 5)
    data = {"csrf_token": shopper.csrf(), "action": "set", "product_id": product}
    response = shopper.post("/cart", data if quantity is None else {**data, "quantity": quantity}, expect_errors=True)
    assert response.status_int == 400 and "whole number from 0 to 99 (0 removes the book)" in response.text
    assert shopper.cart_cookie() == f"{product}:5"


@pytest.mark.parametrize("quantity", ["", " ", "\t"])
def test_a_blank_quantity_means_one(shopper, quantity):
    product = shopper.shop.catalog().products[0].id
    shopper.post("/cart", {"csrf_token": shopper.csrf(), "action": "add", "product_id": product, "quantity": quantity},
                 status=303)
    assert shopper.cart_cookie() == f"{product}:1"


def test_quantities_add_up_to_99_at_most(shopper):
    product = shopper.shop.catalog().products[0].id
    for _ in range(3):
        shopper.add(product, 60)
    assert shopper.cart_cookie() == f"{product}:99"
    shopper.set_quantity(product, 0)
    assert not shopper.cart_cookie()


def test_a_cart_holds_at_most_50_lines(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        template = data["products"][0]
        data["products"] = [{**template, "id": f"book-{i}", "name": f"Book {i}"} for i in range(60)]
    shopper = make_shopper(catalog=str(catalog_copy))
    for i in range(50):
        shopper.add(f"book-{i}")
    page = shopper.post("/cart", {"csrf_token": shopper.csrf(), "action": "add", "product_id": "book-50"}, status=400)
    assert "at most 50 different products" in page.text
    shopper.add("book-3")  # a product already in the cart can still be added
    # A hand-made cookie with more lines is cut to 50 when read.
    shopper.set_cookie("cart", ".".join(f"book-{i}:1" for i in range(60)))
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(shopper.checkout()))
    assert len(order["items"]) == 50


@pytest.mark.parametrize("field, value, status", [
    ("product_id", "a" * 65, 400), ("product_id", "x" * 5000, 400), ("action", "add" * 2000, 400),
    ("product_id", "../catalog", 400), ("product_id", "<script>", 400), ("csrf_token", "x" * 10_000, 403)])
def test_long_or_odd_fields_are_refused_with_a_message(shopper, field, value, status):
    data = {"csrf_token": shopper.csrf(), "action": "add", "product_id": shopper.shop.catalog().products[0].id,
            field: value}
    page = shopper.post("/cart", data, status=status)
    assert 'role="alert"' in page.text and value not in page.text


@pytest.mark.parametrize("query", ["page=" + "9" * 50, "page=-1", "page=0", "page=%00", "session_id=" + "a" * 5000,
                                   "added=" + "x" * 5000])
def test_long_query_strings_are_harmless(shopper, query):
    path = "/success" if query.startswith("session_id") else "/cart" if query.startswith("added") else "/"
    response = shopper.get(f"{path}?{query}", expect_errors=True)
    assert response.status_int in (200, 404)
    assert "x" * 100 not in response.text and "a" * 100 not in response.text
