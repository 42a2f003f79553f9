"""A hostile catalog: catalog.json broken, removed or filled with markup while the shop runs never breaks a page, and
markup in the catalog or in what shoppers type is shown as text, never run."""

import json
import os
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from tests.conftest import BASE, ROOT, assert_ledger_consistent, browser_of, edit_catalog, pay_form, survived, wsgi
from shop import make_app
from webshop.catalog import CatalogError, load_catalog

VALID = json.loads((ROOT / "catalog.json").read_text())
PRODUCT_IDS = [p["id"] for p in VALID["products"]]
anything = st.text(max_size=80)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=False), anything)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(anything, inner, max_size=3)),
                          max_leaves=8)


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


hostile_app_tick = [0]


@pytest.fixture
def hostile_app(tmp_path):
    """(app, its catalog file): a shop on a catalog the test may break; a good file brings it back afterwards."""
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(VALID))
    app = make_app({"data_dir": str(tmp_path / "data"), "base_url": BASE, "catalog": str(path),
                    "catalog_check_seconds": 0, "checkout_limit": 10_000})
    yield app, path
    path.write_text(json.dumps(VALID))
    os.utime(path, ns=(1, 3_000_000_000_000_000_000))
    assert wsgi(app, "GET", "/healthz")[:3:2] == (200, b"ok\n")
    assert_ledger_consistent(app.config["shop"].orders.ledger)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=hostile_catalogs())
def test_a_catalog_that_turns_hostile_mid_run_never_breaks_a_page(hostile_app, content):
    app, path = hostile_app
    sid, token = browser_of(app)  # before the edit: the page of the last good catalog
    path.write_bytes(content)
    hostile_app_tick[0] += 1
    os.utime(path, ns=(1, 2_000_000_000_000_000_000 + hostile_app_tick[0]))  # a new mtime, whatever the size
    cookie = f"sid={sid}; cart=" + ".".join(f"{p}:2" for p in PRODUCT_IDS[:3])
    for method, route, body in (("GET", "/", ""), ("GET", "/?page=2", ""), ("GET", "/cart", ""),
                                ("POST", "/cart", urlencode({"csrf_token": token, "product_id": PRODUCT_IDS[1]})),
                                ("POST", "/checkout", urlencode({"csrf_token": token})),
                                ("GET", "/static/style.css", "")):
        status, _, page, _ = survived(wsgi(app, method, route, headers={"Cookie": cookie}, body=body.encode(),
                                           content_type="application/x-www-form-urlencoded"))
        assert status in (200, 303, 400, 404, 409), (route, status, page[:200])  # 409: over the largest payment
        for markup in MARKUP[:2]:
            assert markup.encode() not in page
    status, _, body, _ = wsgi(app, "GET", "/healthz")
    assert status in (200, 503) and (status == 503) == body.startswith(b"unhealthy")


def test_the_hostile_catalogs_include_valid_and_invalid_ones(tmp_path):
    """Guards the test above: its catalogs must both load and be refused now and then."""
    def loads(content):
        path = tmp_path / "catalog.json"
        path.write_bytes(content)
        try:
            return load_catalog(path, ROOT / "public") is not None
        except CatalogError:
            return False
    find(hostile_catalogs(), loads, settings=settings(database=None))  # raises NoSuchExample if none exists
    find(hostile_catalogs(), lambda content: not loads(content), settings=settings(database=None))


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


# -- markup in the catalog and in what shoppers type is shown, never run ------------------------------------------

SCRIPT, IMG = '<script>alert("x")</script>', '"><img src=x onerror=alert(1)>'


class _Tags(HTMLParser):
    """The tags and attribute names a browser would see in a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes = [], set()

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
    assert "x" not in parser.attributes, where  # `src=x` only exists inside the injected <img


def test_markup_in_catalog_text_and_echoed_input_is_escaped_on_every_page(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["shop"]["name"] = "Books </title><h1>" + SCRIPT
        for i, product in enumerate(data["products"][:3]):
            product["name"] = [SCRIPT, IMG, "</title><h1>x{{csrf}}"][i]
            product["description"] = IMG + SCRIPT
        data["shipping"]["options"][0]["name"] = SCRIPT + " shipping"
    shopper = make_shopper(catalog=str(catalog_copy), stripe_max_retries=0)
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
    pages["pay declined"] = pay_form(shopper, to_stripe.location, **echoed)
    pages["pay invalid"] = pay_form(shopper, to_stripe.location, **{**echoed, "email": f"{IMG}@x.example"})
    assert pages["pay declined"].status_int == 402 and pages["pay invalid"].status_int == 400
    done = pay_form(shopper, to_stripe.location, name=SCRIPT, address_line1=IMG)
    pages["success"] = shopper.get(done.location)
    assert "Thank you" in pages["success"].text
    pages["error"] = shopper.get("/success?session_id=" + SCRIPT, status=404)
    shopper.standin.faults.add("POST /v1/checkout/sessions", "reset")  # Stripe unreachable
    pages["503"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": ids[1]}, status=503)
    with pytest.raises(AssertionError):  # the check itself would see an injection
        assert_inert('<p>"><img src=x onerror=alert(1)></p>', "self-check")
    for where, page in pages.items():
        assert_inert(page.text, where)
    assert "x{{csrf}}" in pages["home"].text  # template syntax in catalog text stays text
