"""Hostile cookies: hand-made carts, made-up or foreign browser ids, other apps' cookies on the same host. A cookie
counts only when the shop wrote it, and a bad one costs only itself."""

import re

import pytest

from tests.conftest import BASE, as_served, browser_at, pay_form

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')

# Cookies other apps on the host may set, none of which Python's cookie parser accepts: with it, one of them in the
# header used to throw away the whole header (the shop's sid and cart with it).
FOREIGN = {"space in value": "theme=dark mode", "json": 'prefs={"lang":"en"}', "non-ascii": as_served("name=café"),
           "nameless": "=x", "quote": 'a="b', "bare word": "flag"}


def browser_with_a_cart(shopper):
    """This shopper's sid and cart cookie after adding two books; (sid, cart, first product)."""
    product = shopper.shop.catalog().products[0]
    shopper.add(product.id, 2)
    return shopper.cookies["sid"], shopper.cart_cookie(), product


def set_cookies(response):
    return [c.split("=", 1)[0] for c in response.headers.getall("Set-Cookie")]


@pytest.mark.parametrize("foreign", [*FOREIGN.values(), "; ".join(FOREIGN.values())], ids=[*FOREIGN, "all"])
@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_another_apps_malformed_cookie_costs_only_itself(shopper, foreign, where):
    sid, cart, product = browser_with_a_cart(shopper)
    ours = [f"sid={sid}", f"cart={cart}"]
    cookie = "; ".join({"before": [foreign, *ours], "between": [ours[0], foreign, ours[1]],
                        "after": [*ours, foreign]}[where])
    headers = {"Cookie": cookie}
    page = shopper.get("/cart", headers=headers)
    assert product.name in page.text and 'value="2"' in page.text  # the cart is still shown
    assert "sid" not in set_cookies(page)  # the browser keeps its id
    token = TOKEN.search(page.text)[1]
    added = shopper.post("/cart", {"csrf_token": token, "action": "add", "product_id": product.id}, headers=headers,
                         status=303)  # forms are still accepted
    written = added.headers.getall("Set-Cookie")  # the cart, and the browser's own id renewed with it
    assert sorted(set_cookies(added)) == ["cart", "sid"] and f"sid={sid};" in " ".join(written)
    assert any(c.startswith(f"cart={product.id}:3;") for c in written)
    to_stripe = shopper.post("/checkout", {"csrf_token": token}, headers=headers, status=303)
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    assert order["browser"] == sid and [(i["product_id"], i["quantity"]) for i in order["items"]] == [(product.id, 2)]


def test_of_two_same_named_cookies_the_first_counts(shopper):
    """A browser sends the cookie of the more specific path first (RFC 6265, 5.4): a /shop-wide cart cookie another
    app set on the host comes after the shop's own."""
    sid, cart, product = browser_with_a_cart(shopper)
    page = shopper.get("/cart", headers={"Cookie": f"sid={sid}; cart={cart}; cart=; sid=forged"})
    assert product.name in page.text and "sid" not in set_cookies(page)


# -- browser ids: only the ones this shop signed count --------------------------------------------------------------

def made_up_ids(sid):
    """Browser ids an attacker could make: random-looking ones, and variations of a real one without its key."""
    nonce, _, mac = sid.partition(".")
    other = "B" if nonce[-1] != "B" else "C"
    return ["A" * 32, "made-up-browser-id-0123456789abcdef", nonce, f"{nonce}.", f"{nonce}.{'A' * len(mac)}",
            f"{nonce}.{mac[:-1]}", f"{nonce[:-1]}{other}.{mac}", f".{mac}", f"{nonce}.{mac}.{mac}", f"{nonce}.{mac}x"]


def test_a_made_up_sid_is_replaced_with_one_the_shop_signed(shopper):
    real = shopper.get("/").headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    for sid in made_up_ids(real):
        shopper.reset()
        page = shopper.get("/", headers={"Cookie": f"sid={sid}"})
        assert "sid" in set_cookies(page), sid
        new, token = shopper.cookies["sid"], TOKEN.search(page.text)[1]
        assert new not in (sid, real)
        # The page's token is the new id's: posted with the made-up id it is refused, with the new one accepted.
        shopper.post("/cart", {"csrf_token": token, "action": "add", "product_id": "walden"},
                     headers={"Cookie": f"sid={sid}"}, status=403)
        shopper.post("/cart", {"csrf_token": token, "action": "add", "product_id": "walden"},
                     headers={"Cookie": f"sid={new}"}, status=303)


def test_a_planted_or_made_up_sid_gives_no_access_to_another_browsers_checkout(make_shopper):
    """Session fixation: an attacker plants an id of their choosing in the victim's browser (or guesses from a real
    one) and then looks at the cart with it, for the victim's "Continue your payment" link."""
    planted = "fixated-browser-id-0123456789abcdefgh"
    victim = make_shopper()
    victim.set_cookie("sid", planted)
    victim.add(victim.shop.catalog().products[0].id)
    assert victim.cookies["sid"] != planted  # the shop gave the victim its own id
    to_stripe = victim.checkout()
    victim.get("/cart?canceled=1")  # back from the payment page without paying
    link = to_stripe.location
    assert "Continue your payment" in victim.get("/cart").text and link in victim.get("/cart").text
    order = victim.shop.orders.ledger.by_session(victim.session_id(to_stripe))
    assert order["browser"] == victim.cookies["sid"]
    attacker = make_shopper()
    for sid in [planted, *made_up_ids(victim.cookies["sid"])]:
        attacker.reset()
        page = attacker.get("/cart", headers={"Cookie": f"sid={sid}"})
        assert "Continue your payment" not in page.text and link not in page.text, sid
        assert "sid" in set_cookies(page), sid


def test_a_token_without_its_cookie_is_refused(shopper):
    token = shopper.csrf()
    product = shopper.shop.catalog().products[0].id
    shopper.reset()  # a browser without the cookie the token belongs to (cookies blocked): told what will help
    page = shopper.post("/cart", {"csrf_token": token, "product_id": product}, status=403)
    assert "please allow cookies for this site" in page.text
    for sid in ("x" * 200, "short", "", "a" * 32 + ";", "../" * 11):
        shopper.reset()
        shopper.post("/cart", {"csrf_token": token, "product_id": product}, headers={"Cookie": f"sid={sid}"},
                     status=403)
    assert not shopper.cart_cookie()


# -- https: __Host- cookies -------------------------------------------------------------------------------------------

def recorded_set_cookies(shopper):
    """Every Set-Cookie header this shopper receives from now on."""
    seen, original = [], shopper.do_request

    def record(*args, **kwargs):
        response = original(*args, **kwargs)
        seen.extend(response.headers.getall("Set-Cookie"))
        return response
    shopper.do_request = record
    return seen


def attributes(cookie):
    """{attribute name, lowercased: value} of a Set-Cookie header."""
    pairs = [a.strip().partition("=") for a in cookie.split(";")[1:]]
    return {name.lower(): value for name, _, value in pairs}


def test_on_https_the_cookies_are_host_only_secure_and_named_host(make_shopper):
    shopper = browser_at(make_shopper, "https://shop.example")
    seen = recorded_set_cookies(shopper)
    shopper.add(shopper.shop.catalog().products[0].id)
    to_stripe = shopper.checkout()
    done = pay_form(shopper, to_stripe.location)
    assert "Thank you" in shopper.get(done.location).text
    assert {c.split("=", 1)[0] for c in seen} == {"__Host-sid", "__Host-cart"}
    assert seen[-1].startswith('__Host-cart="";') and "Max-Age=-1" in seen[-1]  # paid: the cart is emptied
    for cookie in seen:
        found = attributes(cookie)
        assert {"httponly", "secure"} <= set(found) and found["path"] == "/" and "domain" not in found, cookie
        assert found["samesite"].lower() == "lax", cookie


def test_on_https_cookies_without_the_host_prefix_do_not_count(make_shopper):
    """A sibling subdomain can plant `sid` and `cart` for the whole domain, never `__Host-` ones."""
    shopper = browser_at(make_shopper, "https://shop.example")
    product = shopper.shop.catalog().products[0]
    shopper.add(product.id)
    sid, cart = shopper.cookies["__Host-sid"], shopper.cookies["__Host-cart"]
    planted = shopper.get("/cart", headers={"Cookie": f"sid={sid}; cart={cart}"})
    assert "Your cart is empty" in planted.text and "__Host-sid" in set_cookies(planted)
    token = shopper.csrf()
    shopper.post("/cart", {"csrf_token": token, "action": "add", "product_id": product.id},
                 headers={"Cookie": f"sid={sid}"}, status=403)
    own = shopper.get("/cart", headers={"Cookie": f"__Host-sid={sid}; __Host-cart={cart}"})
    assert product.name in own.text and not set_cookies(own)
    # Nor inside another cookie's value, which a browser keeps whole, commas and all.
    hidden = shopper.get("/cart", headers={"Cookie": f"pref=x, __Host-sid={sid}, __Host-cart={cart}"})
    assert "Your cart is empty" in hidden.text and "__Host-sid" in set_cookies(hidden)


def test_on_http_the_cookies_are_plain_host_only_and_not_secure(shopper):
    seen = recorded_set_cookies(shopper)
    shopper.add(shopper.shop.catalog().products[0].id)
    assert {c.split("=", 1)[0] for c in seen} == {"sid", "cart"} and BASE.startswith("http:")
    for cookie in seen:
        found = attributes(cookie)
        assert "httponly" in found and "secure" not in found and found["path"] == "/" and "domain" not in found


# -- the cart cookie --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cookie", ["x" * 3000, "pride-and-prejudice:" + "9" * 100, "\u00e9:1", "a:1." * 900])
def test_oversized_or_odd_cart_cookies_are_ignored(shopper, cookie):
    shopper.get("/")
    response = shopper.get("/cart", headers={"Cookie": f"sid={shopper.cookies['sid']}; cart={as_served(cookie)}"})
    assert response.status_int == 200 and "Your cart is empty" in response.text


@pytest.mark.parametrize("cookie, lines", [
    ("{a}:999999", {"a": 99}), ("{a}:1000000", {}), ("{a}:0", {}), ("{a}:-3", {}), ("{a}:1:1", {}),
    ("{a}:2.{a}:3", {"a": 5}), ("{a}:1.no-such-book:5", {"a": 1}), ("{a}:1;price=1", {"a": 1}), ("{a}=1", {}),
    ("%7Ba%7D:1", {})])
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
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(response))
    assert {i["product_id"]: i["quantity"] for i in order["items"]} == {a: lines["a"]}
    assert all(i["unit_amount"] == cat.product(i["product_id"]).price for i in order["items"])
