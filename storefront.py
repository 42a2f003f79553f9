"""The shopper's pages: catalog, cart, checkout and the confirmation page."""

import re
from urllib.parse import quote

from bottle import BaseResponse, HTTPResponse, redirect, request, response

import cart as carts
import payments
from logs import request_id
from security import _SID, SID_COOKIE, new_sid
from settings import ShopError

PER_PAGE = 24
SESSION_ID = re.compile(r"cs_(test|live)_[A-Za-z0-9]{1,250}")
_PRODUCT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def install(app, shop):
    """Add the shopper's routes to the app."""

    def see_other(path):
        # A relative Location (RFC 9110, 10.2.2): the browser stays on the origin it used, so its cookies follow,
        # and nothing from the Host header or the scheme a proxy spoke is written into the answer.
        res = response.copy(cls=HTTPResponse)  # as bottle's redirect(), which would make it absolute from Host
        res.status, res.body = 303, ""
        res.set_header("Location", path)
        raise res

    @app.get("/")
    def home():
        """The product grid, 24 products a page."""
        catalog = shop.catalog()
        page = _int(request.query.get("page"), 1, 1, 10**6)
        pages = max(1, -(-len(catalog.products) // PER_PAGE))
        if page > pages:
            raise ShopError(404, "There is no such page of the catalog.")
        products = catalog.products[(page - 1) * PER_PAGE: page * PER_PAGE]
        return shop.render_cached(("index.tpl", page), "index.tpl", title=None, products=products, page=page,
                                  pages=pages)

    @app.get("/cart")
    def show_cart():
        """The cart with line totals and subtotal."""
        catalog = shop.catalog()
        cart = read_cart(catalog)
        items = carts.lines(cart, catalog)
        added = request.query.get("added", "")[:64]
        added = catalog.product(added) if added in cart else None  # a link can't claim what the cart lacks
        pending = shop.ledger.open_checkout_for(shop.guard.browser_id(request, response))
        return shop.render("cart.tpl", title="Your cart", items=items,
                           subtotal=sum(total for _, _, total in items),
                           canceled=request.query.get("canceled") == "1",
                           empty_checkout=request.query.get("empty") == "1",
                           added=added, pending=pending)

    @app.post("/cart")
    def change_cart():
        """Add, set the quantity of, or remove a product; then back to the cart."""
        shop.guard.check(request)
        catalog = shop.catalog()
        cart = read_cart(catalog)
        action = request.forms.get("action", "add")
        product_id = product_field(catalog)
        if action == "add":
            quantity = _int(request.forms.get("quantity"), 1, 1, carts.MAX_QUANTITY, "quantity")
            if product_id not in cart and len(cart) >= carts.MAX_LINES:
                raise ShopError(400, f"A cart holds at most {carts.MAX_LINES} different products.")
            cart[product_id] = carts.clamp(cart.get(product_id, 0) + quantity)
        elif action == "set":
            quantity = _int(request.forms.get("quantity"), 1, 0, carts.MAX_QUANTITY, "quantity")
            if quantity == 0:
                cart.pop(product_id, None)
            elif product_id in cart:
                cart[product_id] = quantity
        elif action == "remove":
            cart.pop(product_id, None)
        else:
            raise ShopError(400, "Unknown cart action.")
        write_cart(cart)
        see_other(f"/cart?added={quote(product_id)}" if action == "add" else "/cart")

    @app.post("/checkout")
    def checkout():
        """Record the order, create a Stripe Checkout Session for it, and send the shopper there (303)."""
        shop.guard.check(request)
        catalog = shop.catalog()
        if request.forms.get("product_id") is not None:  # "Buy now": one product, cart untouched
            product_id = product_field(catalog)
            cart = {product_id: _int(request.forms.get("quantity"), 1, 1, carts.MAX_QUANTITY, "quantity")}
        else:
            cart = read_cart(catalog)
        items = carts.lines(cart, catalog)
        if not items:
            see_other("/cart?empty=1")
        ledger_items = [{"product_id": p.id, "name": p.name, "unit_amount": p.price, "quantity": q}
                        for p, q, _ in items]
        browser = shop.guard.browser_id(request, response)
        replace_open_checkout(browser)
        order_id = shop.ledger.create_order(catalog.currency, ledger_items, browser=browser)
        params = payments.checkout_params(catalog, items, order_id, shop.config.base_url)
        try:
            session = payments.create_session(shop.stripe, params, order_id)
        except ShopError as e:
            # Keep the order (marked) so reconcile can see what happened; the cart cookie is untouched.
            shop.ledger.transition(order_id, ("open",), "checkout_failed", "checkout", e.detail or e.message)
            raise
        shop.ledger.attach_session(order_id, session.id, session.url, session.expires_at)
        redirect(session.url, 303)

    @app.get("/success")
    def success():
        """What was actually charged, straight from Stripe, for a session this shop created."""
        session_id = request.query.get("session_id", "")
        if not SESSION_ID.fullmatch(session_id):
            raise ShopError(404, "We could not find that order.")
        order = shop.ledger.by_session(session_id)
        if order is None:
            raise ShopError(404, "We could not find that order.")
        try:
            session = payments.retrieve_session(shop.stripe, session_id)
        except ShopError as e:
            if e.status == 404:
                raise
            # Stripe is unreachable: never say "failed" — the webhook or reconcile will settle it.
            return shop.render("success.tpl", title="Confirming your payment", state="confirming",
                               order=order, summary=None)
        summary = shop.fulfilment.fulfil(session_id, session=session, source="success page")
        order = shop.ledger.get(order["id"])
        state = _state(session)
        if state == "processing" and order["status"] == "payment_failed":  # a webhook heard of the failure
            state = "failed"
        cart_count = None
        if state == "paid" and read_cart(shop.catalog()) == {i["product_id"]: i["quantity"] for i in order["items"]}:
            # The cart was this order: it is bought. A "Buy now" order, or an old confirmation opened again
            # after the cart changed, leaves the cart alone.
            shop.guard.delete_cookie(response, carts.COOKIE)
            cart_count = 0
        titles = {"paid": "Thank you for your order", "processing": "Your payment is processing",
                  "failed": "Your payment did not go through", "open": "Your payment is not finished",
                  "expired": "This checkout has expired"}
        # An emptied cart: this page's header already shows it empty.
        return shop.render("success.tpl", title=titles[state], state=state, order=order, summary=summary,
                           cart_count=cart_count)

    def replace_open_checkout(browser):
        """A new checkout replaces this browser's open one (left with "Back"): that one is expired at Stripe, so
        the cart's "Continue your payment" can't lead to paying for the same books twice."""
        stale = shop.ledger.open_checkout_for(browser)
        if stale is None:
            return
        try:
            session = payments.expire_session(shop.stripe, stale["session_id"])
        except ShopError:  # paid or expired meanwhile (its events will say), or Stripe unreachable: go on
            return
        shop.fulfilment.sync(stale["session_id"], session, "new checkout", order=stale)

    def read_cart(catalog):
        return carts.parse(request.get_cookie(carts.COOKIE), catalog)

    def write_cart(cart):
        if cart:
            shop.guard.set_cookie(response, carts.COOKIE, carts.serialize(cart), max_age=60 * 60 * 24 * 30)
        else:
            shop.guard.delete_cookie(response, carts.COOKIE)


def fast_home(shop):
    """GET / (and ?page=N) straight from Shop.render_cached's pages, without the framework's per-request work.

    The page is the same bytes, headers and cookie that the route above and the app's hooks produce (tests/
    test_caching.py compares them); anything unusual (no cached page yet, a query or cookie header this does
    not parse exactly like bottle, a body) returns None and takes the normal path. On 2 cores this is what
    lets GET / keep up with a bare WSGI app serving the same bytes (bench/run.py figure 1).
    """
    probe = BaseResponse()
    shop.guard.headers(probe)
    static = [(k, v) for k, v in probe.headerlist if k not in ("Content-Length", "Set-Cookie")]
    # The sid cookie exactly as Guard sets it, with a slot for the value (bottle's cookie code is slow).
    probe = BaseResponse()
    probe_sid = shop.guard.browser_id(_FirstVisit(), probe)
    sid_cookie = [v for k, v in probe.headerlist if k == "Set-Cookie"][0].split(probe_sid)
    assert len(sid_cookie) == 2, "the sid appears once in its cookie"

    def serve(environ, start_response):
        if (environ["REQUEST_METHOD"] != "GET" or environ.get("PATH_INFO") != "/"
                or environ.get("CONTENT_LENGTH", "0") not in ("", "0")):
            return None
        query = environ.get("QUERY_STRING")
        page = 1
        if query:
            m = _PAGE_QUERY.fullmatch(query)
            if not m:
                return None
            page = int(m[1])
        catalog = shop.catalog()
        pieces = shop.cached_page(catalog, ("index.tpl", page))
        cookies = _plain_cookies(environ.get("HTTP_COOKIE"))
        if pieces is None or cookies is None:
            return None
        headers = static.copy()
        sid = cookies.get(SID_COOKIE)
        if sid is None or not _SID.fullmatch(sid):  # a first visit: a new sid, as Guard.browser_id makes it
            sid = new_sid(shop.guard)
            headers.append(("Set-Cookie", sid.join(sid_cookie)))
        count = carts.count(carts.parse(cookies.get(carts.COOKIE), catalog))
        body = shop.fill_page(pieces, shop.guard.token_for(sid), count)
        headers += [("Content-Length", str(len(body))), ("X-Request-Id", request_id(environ))]
        start_response("200 OK", headers)
        return [body]

    return serve


_PAGE_QUERY = re.compile(r"page=([0-9]{1,6})")
_COOKIE_PART = re.compile(r"([A-Za-z0-9_-]{1,64})=([A-Za-z0-9_.:-]*)")
# Names that http.cookies (bottle's parser) takes as attributes of the cookie before, not as cookies.
_ATTRIBUTES = {"expires", "path", "comment", "domain", "max-age", "secure", "httponly", "version", "samesite"}


class _FirstVisit:
    """The request as Guard.browser_id sees it when the browser sent no usable sid."""

    def __init__(self):
        self.environ = {}

    def get_cookie(self, name):
        return None


def _plain_cookies(header):
    """{name: value} for a Cookie header of plain `name=value` pairs (the last one wins, as in bottle); None for
    anything else (quotes, spaces inside values, attributes), which bottle's own parser then handles."""
    cookies = {}
    if header:
        for part in header.split(";"):
            m = _COOKIE_PART.fullmatch(part.strip(" "))
            if m is None or m[1].lower() in _ATTRIBUTES:
                if part.strip(" "):
                    return None
                continue
            cookies[m[1]] = m[2]
    return cookies


def _state(session):
    status, paid = session.get("status"), session.get("payment_status")
    if status == "complete" and paid in ("paid", "no_payment_required"):
        return "paid"
    if status == "complete":
        intent = session.get("payment_intent")
        if hasattr(intent, "get") and intent.get("status") in ("canceled", "requires_payment_method"):
            return "failed"
        return "processing"
    return "expired" if status == "expired" else "open"


def product_field(catalog):
    """The posted product id, which must name a product in the catalog."""
    product_id = request.forms.get("product_id", "")
    if not _PRODUCT_ID.fullmatch(product_id) or catalog.product(product_id) is None:
        raise ShopError(400, "That product is not in the catalog (it may have just been removed).")
    return product_id


def _int(raw, default, low, high, name=None):
    if raw is None or raw == "":
        return default
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        if name is None:
            return default
        raise ShopError(400, f"The {name} must be a whole number from {max(low, 1)} to {high}.")
    value = int(raw)
    if not low <= value <= high:
        if name is None:
            return default
        raise ShopError(400, f"The {name} must be a whole number from {max(low, 1)} to {high}.")
    return value
