"""Pages and protections every request gets: error pages, CSRF, headers, cookies, static files, hot reload."""

import json
import os
from wsgiref.util import setup_testing_defaults

import pytest

from tests.conftest import BASE, as_served, edit_catalog, wsgi
from webshop.catalog import CatalogError


def test_every_form_field_on_the_catalog_says_which_book_it_is_for(shopper):
    """A screen reader lists the fields by their labels: 24 "Quantity" boxes could not be told apart."""
    page = shopper.get("/").html
    for card in page.find_all("li", class_="card"):
        name = card.find("h2").get_text(strip=True)
        field = card.find("input", {"name": "quantity"})
        assert page.find("label", {"for": field["id"]}).get_text(" ", strip=True) == f"Quantity of {name}"


def test_error_pages_use_the_shop_layout(shopper):
    for path, status in (("/no-such-page", 404), ("/static/../shop.py", 404), ("/static/.env", 404)):
        page = shopper.get(path, status=status)
        assert "Paper Lantern Books" in page.text and "Traceback" not in page.text
    page = shopper.put("/cart", status=405)
    assert "does not take this kind of request" in page.text
    assert sorted(page.headers["Allow"].split(",")) == ["GET", "HEAD", "POST"]  # HEAD works: it is allowed


@pytest.mark.parametrize("path", ["/cart", "/checkout"])
def test_posts_without_a_csrf_token_are_refused(shopper, path):
    shopper.get("/")
    page = shopper.post(path, {"action": "add", "product_id": "walden"}, status=403)
    assert "did not come from this shop" in page.text
    assert not shopper.cart_cookie()


def test_csrf_token_is_tied_to_the_browser(shopper, make_shopper):
    token = shopper.csrf()
    other = make_shopper()
    other.get("/")
    other.post("/cart", {"csrf_token": token, "action": "add", "product_id": "walden"}, status=403)


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}])
def test_cross_site_posts_are_refused_even_with_a_token(shopper, headers):
    token = shopper.csrf()
    shopper.post("/cart", {"csrf_token": token, "action": "add", "product_id": "walden"}, headers=headers,
                 status=403)


def test_same_origin_post_is_accepted(shopper):
    token = shopper.csrf()
    shopper.post("/cart", {"csrf_token": token, "action": "add", "product_id": "walden"},
                 headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"}, status=303)


def test_security_headers_on_pages_errors_and_redirects(shopper):
    for response in (shopper.get("/"), shopper.get("/nope", status=404), shopper.add("walden")):
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "form-action 'self' https:;" in csp + ";"  # Checkout: stripe.com or a custom domain; never http
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"]
        assert "Strict-Transport-Security" not in response.headers  # http BASE_URL


def test_https_base_url_adds_hsts_and_secure_cookies(make_shopper):
    shopper = make_shopper(base_url="https://shop.example.com")
    page = shopper.get("/")
    assert "max-age=" in page.headers["Strict-Transport-Security"]
    cookie = page.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()


def test_cookies_are_httponly_and_samesite(shopper):
    cookies = shopper.add("walden").headers.getall("Set-Cookie")
    assert {c.split("=")[0] for c in cookies} >= {"sid", "cart"}
    for header in cookies:
        assert "HttpOnly" in header and "samesite=lax" in header.lower()


def test_static_files_are_served_with_cache_validators(shopper):
    css = shopper.get("/static/style.css")
    assert css.content_type == "text/css"
    assert css.headers["ETag"] and css.headers["Last-Modified"] and "max-age" in css.headers["Cache-Control"]
    again = shopper.get("/static/style.css", headers={"If-None-Match": css.headers["ETag"]}, status=304)
    assert again.body == b""


@pytest.mark.parametrize("range_", ["bytes=0-9", "bytes=abc", "bytes=999999-", "pages=1-2", "bytes=0-1,5-9"])
def test_a_range_is_ignored_and_the_whole_file_served(shopper, range_):
    whole = shopper.get("/static/style.css").body
    part = shopper.get("/static/style.css", headers={"Range": range_}, status=200)
    assert part.body == whole and "Content-Range" not in part.headers


@pytest.mark.parametrize("path", ["/\xff\xfe", "/cart\xff", "/static/style.css\xc3"])
def test_a_path_that_is_not_utf8_is_a_400_page_not_another_page(shopper, path):
    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path  # as a server hands over /%ff%fe: the raw bytes as latin-1
    answer = {}
    body = b"".join(shopper.app(environ, lambda status, headers, exc=None: answer.update(status=status,
                                                                                          headers=dict(headers))))
    assert answer["status"].startswith("400") and "Content-Security-Policy" in answer["headers"]
    assert b"The address or the Content-Length is not valid." in body and b"Traceback" not in body


@pytest.mark.parametrize("path", ["/static/%2e%2e/shop.py", "/static/..%2fshop.py", "/static/img/",
                                  "/static/img", "/static/.gitignore", "/static/../../etc/passwd"])
def test_no_traversal_dotfiles_or_listings(shopper, path):
    response = shopper.get(path, expect_errors=True)
    assert response.status_int in (400, 403, 404)
    assert "import" not in response.text and "root:" not in response.text


def test_catalog_edit_is_picked_up_without_restart(make_shopper, catalog_copy):
    shopper = make_shopper(catalog=str(catalog_copy))
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["name"] = "A Brand New Title"
        data["products"][0]["price"] = 4321
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))
    page = shopper.get("/")
    assert "A Brand New Title" in page.text and "$43.21" in page.text


def test_invalid_catalog_edit_keeps_the_shop_serving(make_shopper, catalog_copy):
    shopper = make_shopper(catalog=str(catalog_copy))
    name = json.loads(catalog_copy.read_text())["products"][0]["name"]
    catalog_copy.write_text(catalog_copy.read_text().replace('"price": ', '"price": -', 1))
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))
    page = shopper.get("/")
    assert name in page.text  # the last good catalog
    health = shopper.get("/healthz", status=503)
    assert health.text.splitlines() == ["unhealthy",
                                        "catalog: the last edit was not loaded (see `python shop.py check`)"]
    assert str(catalog_copy) not in health.text


def test_a_restart_while_the_catalog_is_broken_serves_the_version_last_loaded(make_shopper, catalog_copy):
    make_shopper(catalog=str(catalog_copy)).get("/")
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["name"] = "The Edited Title"
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))
    assert "The Edited Title" in make_shopper(catalog=str(catalog_copy)).get("/").text  # loaded, so kept
    good = catalog_copy.read_text()
    catalog_copy.write_text(good.replace('"price": ', '"price": -', 1))

    shopper = make_shopper(catalog=str(catalog_copy))  # a restart: the shop starts, and says why it is not current
    assert "The Edited Title" in shopper.get("/").text
    assert shopper.get("/healthz", status=503).text.splitlines()[1].startswith("catalog: the last edit was not loaded")
    error = shopper.shop.catalogs.error
    assert error.startswith("catalog.json: the last edit was not loaded (1 problem, first: products[0].price: ")
    assert error.endswith("; serving the last good version, kept from before the restart")
    catalog_copy.write_text(good)
    os.utime(catalog_copy, ns=(1, 3_000_000_000_000_000_000))
    assert shopper.get("/healthz").text == "ok\n"

    other = catalog_copy.parent / "other.json"  # a file never loaded: nothing kept for it
    other.write_text(good.replace('"price": ', '"price": -', 1))
    with pytest.raises(CatalogError):
        make_shopper(catalog=str(other))


def test_a_kept_catalog_garbled_by_hand_or_of_another_file_is_as_if_none_were_kept(make_shopper, catalog_copy):
    ledger = make_shopper(catalog=str(catalog_copy)).shop.orders.ledger
    with ledger.db.tx() as c:
        c.execute("UPDATE checkpoints SET value = 'not JSON' WHERE name = 'catalog'")
    assert make_shopper(catalog=str(catalog_copy)).get("/").status_int == 200  # starts, and keeps its text again
    other = catalog_copy.parent / "other.json"
    other.write_text(catalog_copy.read_text())
    make_shopper(catalog=str(other))  # the newest kept: another file's
    catalog_copy.write_text("{")
    with pytest.raises(CatalogError):
        make_shopper(catalog=str(catalog_copy))


def test_healthz_ok(shopper):
    assert shopper.get("/healthz").text == "ok\n"


def test_secret_key_never_reaches_a_page(make_shopper):
    shopper = make_shopper()
    for path in ("/", "/cart", "/nope"):
        page = shopper.get(path, expect_errors=True)
        assert "sk_test" not in page.text and "whsec_" not in page.text


def test_the_server_looks_at_the_catalog_at_most_once_per_interval(make_shopper, catalog_copy, monkeypatch):
    """CATALOG_CHECK_SECONDS: no stat() per request; an edit goes live once the interval has passed."""
    from webshop import catalog as catalog_module
    clock = [1000.0]
    monkeypatch.setattr(catalog_module.time, "monotonic", lambda: clock[0])
    shopper = make_shopper(catalog=str(catalog_copy), catalog_check_seconds=1.0)
    stats = []
    real_stat = shopper.shop.catalogs._stat
    monkeypatch.setattr(shopper.shop.catalogs, "_stat", lambda: stats.append(1) or real_stat())
    shopper.get("/")
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["name"] = "Edited Within The Second"
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))
    for _ in range(5):
        assert "Edited Within The Second" not in shopper.get("/").text
    assert len(stats) <= 1
    clock[0] += 1.01
    assert "Edited Within The Second" in shopper.get("/").text


def test_refusals_before_any_route_say_what_was_wrong(shopper):
    broken = shopper.post("/cart", b"--x\r\nContent-Disposition: form-data\r\n", status=400,
                          content_type="multipart/form-data; boundary=x")
    assert "The form data could not be read." in broken.text and "Bad request" in broken.text
    big = shopper.post("/cart", "a=" + "x" * 20_000, content_type="application/x-www-form-urlencoded", status=413)
    assert "That request is too large." in big.text


def test_the_catalog_is_24_products_a_page_and_other_pages_are_404(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        book = data["products"][0]
        data["products"] = [dict(book, id=f"book-{i}", name=f"Book {i}") for i in range(30)]
    shopper = make_shopper(catalog=str(catalog_copy))
    first, second = shopper.get("/"), shopper.get("/?page=2")
    assert first.text.count('class="card"') == 24 and "Page 1 of 2" in first.text and "Book 23<" in first.text
    assert second.text.count('class="card"') == 6 and "Book 24<" in second.text and 'rel="prev"' in second.text
    assert shopper.get("/?page=1").text == first.text and shopper.get("/?page=").text == first.text
    for page in ("3", "0", "-1", "abc", "1.5", "\u0663", "01", "+2", " 2"):
        assert "There is no such page" in shopper.get("/", {"page": page}, status=404).text


@pytest.mark.parametrize("host", ["localhost:8000", "LOCALHOST:8000", "[::1]:8000"])
def test_the_shop_opened_as_localhost_sends_the_browser_to_its_own_address(make_shopper, host):
    """Cookies and forms work at one origin, the one Stripe sends shoppers back to: the shop's BASE_URL."""
    shopper = make_shopper(base_url="http://127.0.0.1:8000")
    page = shopper.get("/cart?added=walden&x=%C3%A9", headers={"Host": host}, status=307)
    assert page.location == "http://127.0.0.1:8000/cart?added=walden&x=%C3%A9" and not page.headers.get("Set-Cookie")
    assert shopper.get("/static/style.css", headers={"Host": host}, status=307).location.startswith(
        "http://127.0.0.1:8000/static/")
    assert shopper.get("/healthz", headers={"Host": host}).status_int == 200  # probes are answered where they ask
    assert shopper.post("/cart", {"action": "add", "product_id": "walden"}, headers={"Host": host},
                        status=403)  # a form is never redirected: the browser would drop its body
    assert shopper.get("/", headers={"Host": "127.0.0.1:8000"}).status_int == 200


@pytest.mark.parametrize("path, query, location", [
    (as_served("/café"), as_served("q=café"), "http://127.0.0.1:8000/caf%C3%A9?q=caf%C3%A9"),  # the bytes as sent
    ("/a b%", "", "http://127.0.0.1:8000/a%20b%25"),  # PATH_INFO is decoded: what was escaped is again
    ("@evil.example/", "", None), ("*", "", None)])  # request targets no browser sends: never after the origin
def test_the_redirect_to_the_shops_own_address_keeps_the_bytes_and_never_leaves_it(make_shopper, path, query,
                                                                                     location):
    app = make_shopper(base_url="http://127.0.0.1:8000").app
    status, headers, _, errors = wsgi(app, path=path, query=query, headers={"Host": "localhost:8000"})
    assert (headers.get("Location") if status == 307 else None) == location and "Traceback" not in errors


@pytest.mark.parametrize("base_url, host", [("https://shop.example.com", "localhost:8000"),  # behind a proxy
                                            ("http://127.0.0.1:8000", "localhost:9000"),  # another server
                                            ("http://127.0.0.1:8000", "evil.example")])
def test_other_host_names_are_served_as_they_are_never_redirected(make_shopper, base_url, host):
    shopper = make_shopper(base_url=base_url)
    assert shopper.get("/", headers={"Host": host}).status_int == 200
