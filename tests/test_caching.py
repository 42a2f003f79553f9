"""The catalog pages are rendered once per catalog version, yet every browser still gets its own page."""

import json
import os
import re

import pytest

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def big_catalog(catalog_copy):
    """The shop's catalog with 60 products (3 pages of 24)."""
    data = json.loads(catalog_copy.read_text())
    first = data["products"][0]
    data["products"] = [dict(first, id=f"book-{i:02d}", name=f"Book {i}", price=100 + i) for i in range(60)]
    catalog_copy.write_text(json.dumps(data))
    return catalog_copy


def fresh(monkeypatch, shop):
    """Make every page render from the template again, as before caching."""
    monkeypatch.setattr(shop, "render_cached", lambda key, name, **values: shop.render(name, **values).encode())


@pytest.mark.parametrize("page", ["/", "/?page=2", "/?page=3"])
def test_cached_pages_are_byte_for_byte_what_the_template_makes(make_shopper, big_catalog, monkeypatch, page):
    shopper = make_shopper(catalog=str(big_catalog))
    shopper.get("/")  # this browser's sid
    shopper.add("book-07", 3)
    shopper.add("book-42")
    cached = [shopper.get(page).body for _ in range(2)]  # the second one comes from the cache
    fresh(monkeypatch, shopper.shop)
    assert cached[0] == cached[1] == shopper.get(page).body
    assert '<span class="count">(4)</span>' in cached[0].decode()


def test_a_first_visit_gets_a_sid_cookie_and_the_token_that_goes_with_it(make_shopper, monkeypatch):
    shopper = make_shopper()
    shopper.get("/")  # fills the cache
    first = shopper.get("/", headers={"Cookie": ""})
    assert "sid=" in first.headers["Set-Cookie"]
    shopper.post("/cart", {"csrf_token": _CSRF.search(first.text)[1], "action": "add", "product_id": "walden"},
                 status=303)  # the token in the cached page belongs to the new sid


def test_each_browser_gets_its_own_token_and_cart_count(make_shopper):
    alice, bob = make_shopper(), make_shopper()
    alice.get("/"), bob.get("/")
    alice.add("walden", 2)
    a, b = alice.get("/").text, bob.get("/").text
    assert _CSRF.search(a)[1] != _CSRF.search(b)[1]
    assert "Cart <span class=\"count\">(2)</span>" in a and "Cart <span class=\"count\">(0)</span>" in b
    assert set(_CSRF.findall(a)) == {alice.csrf()} and set(_CSRF.findall(b)) == {bob.csrf()}


def test_a_catalog_edit_replaces_the_cached_pages(make_shopper, catalog_copy):
    shopper = make_shopper(catalog=str(catalog_copy))
    assert "A Brand New Title" not in shopper.get("/").text  # cached now
    data = json.loads(catalog_copy.read_text())
    data["products"][0]["name"] = "A Brand New Title"
    catalog_copy.write_text(json.dumps(data))
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))
    assert "A Brand New Title" in shopper.get("/").text


def test_the_cache_keeps_a_bounded_number_of_pages(make_shopper, catalog_copy, monkeypatch):
    import shop as shop_module
    monkeypatch.setattr(shop_module, "_MAX_CACHED_PAGES", 2)
    data = json.loads(catalog_copy.read_text())
    first = data["products"][0]
    data["products"] = [dict(first, id=f"book-{i:03d}", name=f"Book {i}") for i in range(24 * 6)]
    catalog_copy.write_text(json.dumps(data))
    shopper = make_shopper(catalog=str(catalog_copy))
    for page in range(1, 7):
        assert f"Page {page} of 6" in shopper.get(f"/?page={page}").text
    assert len(shopper.shop._pages) <= 3  # the catalog marker and at most two pages


def test_static_files_carry_validators_and_a_repeat_gets_304(shopper):
    css = shopper.get("/static/style.css")
    assert css.headers["ETag"] and css.headers["Last-Modified"]
    assert css.headers["Cache-Control"] == "public, max-age=3600"
    for validator in ({"If-None-Match": css.headers["ETag"]}, {"If-Modified-Since": css.headers["Last-Modified"]}):
        again = shopper.get("/static/style.css", headers=validator, status=304)
        assert again.body == b"" and again.headers["ETag"] == css.headers["ETag"]


def test_pages_stay_small_and_need_no_javascript(shopper):
    """The budget the benchmark reports (bench/run.py figure 4): HTML + CSS + JS ≤ 15 KB (15,000 bytes), no script."""
    shopper.get("/")
    shopper.add("walden")
    shopper.add("moby-dick", 2)
    for path in ("/", "/cart"):
        html = shopper.get(path).text
        assert "<script" not in html.lower()
        sheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
        weight = len(html.encode()) + sum(len(shopper.get(href).body) for href in sheets)
        assert weight <= 15_000, (path, weight)


FAST_CASES = {
    "first visit": {},
    "returning browser": {"Cookie": "sid=returningreturningreturning0001"},
    "with a cart": {"Cookie": "sid=returningreturningreturning0001; cart=walden:2.moby-dick:1"},
    "other cookies too": {"Cookie": "_ga=GA1.2.3.4; sid=returningreturningreturning0001; theme=dark"},
    "malformed sid": {"Cookie": "sid=short"},
    "unknown products in the cart": {"Cookie": "sid=returningreturningreturning0001; cart=nope:3.walden:1"},
}
SLOW_CASES = {
    "quoted cookie": {"Cookie": 'sid="returningreturningreturning0001"'},
    "attribute before the cookie": {"Cookie": "Path=/; sid=returningreturningreturning0001"},
    "a body on a GET": {"Content-Length": "3"},
}


def spy_on_fast_path(app):
    """A list that gets what the fast path returned for each request (None: it passed the request on)."""
    served, fast = [], app.fast
    vars(app)["fast"] = lambda environ, start_response: served.append(fast(environ, start_response)) or served[-1]
    return served


def _normalized(response):
    """Status, headers and body with the per-request parts (request id, a new sid and its token) blanked."""
    headers = sorted((k, v) for k, v in response.headerlist if k != "X-Request-Id")
    body = response.body
    sid = re.search(r"sid=([^;]+)", response.headers.get("Set-Cookie", ""))
    if sid:
        headers = [(k, v.replace(sid[1], "SID")) for k, v in headers]
    token = _CSRF.search(response.text)
    if token:
        body = body.replace(token[1].encode(), b"TOKEN")
    return response.status, headers, body


@pytest.mark.parametrize("query", ["", "?page=2"])
@pytest.mark.parametrize("case", FAST_CASES)
def test_the_fast_path_answers_exactly_as_the_framework_would(make_shopper, big_catalog, query, case):
    shopper = make_shopper(catalog=str(big_catalog))
    app = shopper.app
    shopper.get("/" + query)  # renders and caches the page through the framework
    served = spy_on_fast_path(app)
    headers = FAST_CASES[case]
    quick = shopper.get("/" + query, headers=headers)
    assert served[-1] is not None, "the fast path answered"
    vars(app)["fast"] = None  # bottle refuses plain re-assignment of app attributes
    slow = shopper.get("/" + query, headers=headers)
    assert _normalized(quick) == _normalized(slow)
    assert quick.headers["X-Request-Id"] != slow.headers["X-Request-Id"]


@pytest.mark.parametrize("case", SLOW_CASES)
def test_unusual_requests_take_the_framework_path(shopper, case):
    shopper.get("/")
    served = spy_on_fast_path(shopper.app)
    response = shopper.get("/", headers=SLOW_CASES[case], expect_errors=True)
    assert served == [None] and response.status_int == 200


def test_two_first_visits_get_two_different_sids(shopper):
    shopper.get("/")
    a = shopper.get("/", headers={"Cookie": ""}).headers["Set-Cookie"]
    b = shopper.get("/", headers={"Cookie": ""}).headers["Set-Cookie"]
    assert a != b and a.startswith("sid=") and b.startswith("sid=")


def test_a_failing_fast_path_leaves_the_page_to_the_framework(shopper, monkeypatch, caplog):
    import storefront
    shopper.get("/")

    def broken(header):
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(storefront, "_plain_cookies", broken)
    page = shopper.get("/")
    assert page.status_int == 200 and "Add to cart" in page.text
    assert "fast path failed on /" in caplog.text
