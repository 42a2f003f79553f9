"""The shopper's pages: the catalog, the cart (a cookie), checkout, and the confirmation page."""

import logging
import re
import time
from typing import NamedTuple
from urllib.parse import quote

from bottle import HTTPResponse, redirect, request, response

from . import mail, payments
from .catalog import format_money
from .catalog_rules import MAX_AMOUNT
from .ledger import BOUGHT, HELD, ORDER_ID, PAID, held_back, iso_utc, too_few
from .security import MONTH, cookies
from .settings import ShopError

log = logging.getLogger("shop")
PER_PAGE, LOW_STOCK = 24, 5  # "Only N left" from LOW_STOCK copies down
SESSION_ID = re.compile(r"cs_(test|live)_[A-Za-z0-9]{1,250}")
MAX_QUANTITY, MAX_LINES, MAX_ID = 99, 50, 64
# The longest cart the shop writes (50 lines of a 64-character id at 99, and the order it went to checkout as),
# within the 4,096 bytes every browser keeps for a cookie: https://www.rfc-editor.org/rfc/rfc6265#section-6.1
MAX_COOKIE = MAX_LINES * (MAX_ID + 4) - 1 + len(".ord_") + 24
_ITEM = re.compile(rf"([a-z0-9][a-z0-9-]{{0,{MAX_ID - 1}}}):([0-9]{{1,6}})")
_CHECKED_OUT = re.compile(rf"\.({ORDER_ID.pattern})$")  # the order a cart was sent to checkout as, after its lines
TITLES = {"paid": "Thank you for your order", "processing": "Your payment is processing",
          "failed": "Your payment did not go through", "open": "Your payment is not finished",
          "expired": "This checkout has expired"}


class CartCookie(NamedTuple):
    """This browser's cart cookie, read: the cart, and the order it last went to checkout as (the mark after its
    lines)."""
    items: dict  # {product id: quantity}; once that order is bought, without its books (what was added since stays)
    mark: str | None  # that order's id, kept through changes to the cart
    checked_out: dict | None  # that order, while the cart is still just what it pays for
    paid: dict | None  # that order once bought (paid, or a bank payment processing)
    failed: dict | None  # that order once its bank payment has failed


def install(app, shop):
    """Add the shopper's routes to the app."""

    @app.get("/")
    def home():
        """The product grid, 24 products a page."""
        catalog = shop.catalog()
        raw = request.query.get("page")
        page = _int(raw, 1, 1, 10**6)
        pages = max(1, -(-len(catalog.products) // PER_PAGE))
        if page is None or page > pages or raw and raw != str(page):  # one address per page: no "01" or " 1"
            raise ShopError(404, "There is no such page of the catalog.")
        products = catalog.products[(page - 1) * PER_PAGE: page * PER_PAGE]
        left, held = copies_left(shop, products)
        return shop.render("index.tpl", products=products, page=page, pages=pages, low_stock=LOW_STOCK,
                           left=left, held=held)

    @app.get("/cart")
    def show_cart():
        """The cart with line totals and subtotal, and the browser's open checkout if it left one."""
        sid, catalog = shop.guard.valid_sid(request), shop.catalog()
        pending = sid and shop.orders.ledger.open_checkout_for(sid)  # the open checkout it left (with Back), if any
        if changed := cookies(request).get(shop.guard.prefix + "notice") == "changed":  # a checkout an edit canceled
            shop.guard.delete_cookie(response, "notice")
        canceled = request.query.get("canceled") == "1"
        if canceled and closed_by_edit():  # back from Stripe's page, which said only that it had expired
            changed, canceled = True, False
        cookie = read_cart(shop, catalog)
        kept, paid, failed = cookie.items, cookie.paid, cookie.failed  # a failed one: the cookie then loses its mark
        # Books the merchant withdrew since: said once, then gone from the cookie.
        written = cart_cookie()
        gone = [p for p in written if catalog.product(p) is None]
        if paid and paid["status"] in PAID:  # and the confirmation page that takes them out never seen
            write_cart(shop.guard, kept)
        elif gone or failed:  # (a bank payment still processing may fail: its books stay, hidden, in the cookie)
            write_cart(shop.guard, {p: q for p, q in written.items() if p not in gone},
                       checked_out=None if failed else cookie.mark)
        elif ORDER_ID.fullmatch(request.query.get("paid", "")):  # an add started a new cart after that one was paid
            said = own_order(shop, request.query["paid"])
            paid = said if said and said["status"] in PAID else None
        elif canceled and not kept and (last := sid and shop.orders.ledger.last_checkout(sid)) and (
                last["status"] in BOUGHT):  # an older checkout's Cancel, after the cart was paid: that is said
            paid, canceled = last, False
        cart, notes = in_stock(shop, kept, catalog)
        names = {i["product_id"]: i["name"] for o in (pending, paid) if o for i in o["items"]}
        withdrawn = shop.catalogs.withdrawn  # the names this process saw leave the catalog
        paid_for = quantities(paid["items"]) if paid else {}  # left the cart as bought, not as withdrawn
        notes += [f"Sorry, {names.get(p) or withdrawn.get(p, 'one of your books')} is no longer sold, so it is not "
                  "in your cart." for p in gone if p not in paid_for]
        items = lines(cart, catalog)
        subtotal, added = sum(t for _, _, t in items), request.query.get("added", "")[:MAX_ID]
        # An open checkout the cart did not go to ("Buy now", or the cart changed since) says what it pays: paying
        # it takes its books out only of a cart that went to checkout as it.
        if pending and (not shop.priced(catalog, pending) or pending["session_id"] in shop.unbacked(catalog, [])):
            pending = None  # never offered at old terms, or beyond a stock
        own = pending and not gone and (cookie.checked_out or {}).get("id") == pending["id"]
        other = pending and not own and ", ".join(f"{i['quantity']} × {i['name']}" for i in pending["items"])
        return shop.render("cart.tpl", title="Your cart", items=items, subtotal=subtotal,
                           cart_count=sum(cart.values()), tax=(catalog.tax_mode, catalog.tax_behavior),
                           canceled=canceled, held=request.query.get("held") == "1",
                           empty_checkout=request.query.get("empty") == "1", changed=changed,
                           added=catalog.product(added) if added in cart else None,
                           most=request.query.get("most") == "1" and cart.get(added),  # the add was held to it
                           pending=pending, pending_other=other, stock_notes=notes, paid=paid,
                           failed=failed if failed and said_back(shop, failed) else None,
                           shipping=[(o, payments.shipping_fee(o, subtotal)) for o in catalog.shipping_options])

    @app.post("/cart")
    def change_cart():
        """Add, set the quantity of, or remove a product; then back to the cart."""
        shop.guard.check(request)
        catalog = shop.catalog()
        cookie, action = read_cart(shop, catalog), request.forms.get("action", "add")
        cart, paid = cookie.items, cookie.paid
        if paid and paid["status"] in PAID and action != "add":
            see_other("/cart")  # a stale page of a cart paid since (in a closed tab): the cart page says so first
        if action in ("set", "remove") and request.forms.get("product_id") in set(cart_cookie()) - set(cart):
            see_other("/cart")  # a book withdrawn since this page was loaded: the cart page says so, and drops it
        product_id = product_field(catalog)
        if action == "add":
            if product_id not in cart and len(cart) >= MAX_LINES:
                raise ShopError(400, f"A cart holds at most {MAX_LINES} different products.")
            left = enough_left(shop, catalog.product(product_id), 1)
            wanted = cart.get(product_id, 0) + quantity_field(1)
            cart[product_id] = max(cart.get(product_id, 0), min(MAX_QUANTITY, left, wanted))  # an add never lowers
            most = "&most=1" if cart[product_id] < wanted else ""
        elif action in ("set", "remove"):
            quantity = quantity_field(0) if action == "set" else 0
            if quantity == 0:
                cart.pop(product_id, None)
            elif product_id in cart:
                cart[product_id] = quantity
        else:
            raise ShopError(400, "Unknown cart action.")
        mark = None if paid else cookie.mark
        if paid and paid["status"] not in PAID:
            # A bank payment still processing: its books stay in the cookie under its mark, hidden, so that they
            # show again if it fails; unless they no longer fit in a cart, then they go.
            hidden = quantities(paid["items"])
            merged = {p: cart.get(p, 0) + hidden.get(p, 0) for p in {**cart, **hidden}}
            if len(merged) <= MAX_LINES and max(merged.values()) <= MAX_QUANTITY:
                cart, mark = merged, paid["id"]
        write_cart(shop.guard, cart, checked_out=mark)
        # An add to a cart paid since goes to what is left of it, and the cart page says what was paid.
        said = f"&paid={paid['id']}" if paid and paid["status"] in PAID else ""
        see_other(f"/cart?added={quote(product_id)}{most}{said}" if action == "add" else "/cart")

    @app.get("/checkout")
    def checkout_again():
        """A checkout's address opened again (a restored tab, Back after an error): the cart, where it starts."""
        see_other("/cart")

    @app.post("/checkout")
    def checkout():
        """Record the order, create its Stripe Checkout Session, and send the shopper there (303)."""
        shop.guard.check(request)
        browser, catalog = shop.guard.browser_id(request, response), shop.catalog()
        kept = cookie = None
        # What to buy is settled first (a refusal leaves an open checkout payable).
        if request.forms.get("product_id") is not None:  # "Buy now": one product, the cart untouched
            product = catalog.product(product_field(catalog))
            cart = {product.id: quantity_field(1)}
            enough_left(shop, product, cart[product.id])
        else:
            cookie = read_cart(shop, catalog)
            kept = cookie.items
            cart = in_stock(shop, kept, catalog)[0]
        items = lines(cart, catalog)
        if not items:  # nothing to buy, or bought already (the cart page says which)
            # a cart page left open in a tab after its cart was paid in another (whose confirmation emptied it)
            last = cookie and not cookie.paid and shop.orders.ledger.last_checkout(browser)
            recent = last and last["status"] in PAID and (last["fulfilled_at"] or "") > iso_utc(time.time() - 1800)
            said = f"&paid={last['id']}" if recent else ""
            see_other("/cart" if cookie and cookie.paid else f"/cart?empty=1{said}")
        subtotal = sum(t for _, _, t in items)  # and the dearest shipping option's fee: any the shopper may pick
        shipping = max((payments.shipping_fee(o, subtotal) for o in catalog.shipping_options), default=0)
        if subtotal + shipping > MAX_AMOUNT:
            raise ShopError(409, f"A payment can be at most {format_money(MAX_AMOUNT, catalog.currency)}, and this "
                                 "order comes to more. Please buy fewer copies.")
        orders, order_id, per_client = shop.orders, None, shop.config.address_checkout_limit or None
        wanted = [{"product_id": p.id, "name": p.name, "unit_amount": p.price, "quantity": q} for p, q, _ in items]
        try:
            for again in (False, True):  # again if an order it replaces was paid meanwhile (in another tab)
                order_id, held, replaced = orders.ledger.start_order(
                    browser, catalog.currency, wanted, per_minute=None if again else shop.config.checkout_limit,
                    stock={p.id: p.stock for p, _, _ in items if p.stock is not None},
                    cap=kept is not None,  # a cart is held to the copies left now (a click elsewhere may take some)
                    client=per_client and shop.guard.client(request), per_client=None if again else per_client)
                for session_id in replaced:  # left with "Back", or a click's at the same moment: expired at Stripe
                    expire(session_id, "new checkout", must=True)  # first, so that only one can be paid
                paid = [o for o in map(orders.ledger.by_session, replaced) if o["status"] in BOUGHT]
                if not paid:
                    break
                orders.ledger.transition(order_id, ("open",), "expired", "checkout", "replaced an order paid meanwhile")
                if cookie and cookie.mark in {o["id"] for o in paid}:
                    see_other("/cart")  # the cart's checkout was just paid (in Stripe's tab): the cart page says so
            else:  # paid meanwhile twice over: the shopper looks again rather than paying for what they have
                raise ShopError(409, "Your earlier checkout has just been paid. Please check your cart and try again.")
            cart = quantities(held)
            items = lines(cart, catalog)
            session = payments.create_session(orders.stripe, payments.checkout_params(
                catalog, items, order_id, shop.config.base_url, from_cart=kept is not None,
                held=kept is not None and cart != kept), order_id)
            attached = orders.ledger.attach_session(order_id, session.id, session.url, session.expires_at)
            if attached is None:
                raise ShopError(502, payments.REFUSED, detail=f"Stripe answered with {session.id}, another order's")
        except ShopError as e:  # the order stays, marked, for reconcile; the cart is untouched
            if order_id:
                orders.ledger.transition(order_id, ("open",), "checkout_failed", "checkout", e.detail or e.message)
            raise
        if not attached:
            expire(session.id, "replaced by a newer click")  # a second click won the race: never payable
            see_other("/cart")
        if (now := shop.catalog()) is not catalog:  # an edit came while Stripe answered: looked at again
            try:
                if session.id in shop.unbacked(now, shop.stale(now)):  # this checkout, the newest, goes first
                    expire(session.id, shop.EDITED[2])
                    if orders.ledger.get(order_id)["status"] == "open":  # Stripe did not answer: never sent to pay
                        raise ShopError(503, payments.UNAVAILABLE, detail="a checkout the catalog no longer backs")
                    shop.guard.set_cookie(response, "notice", "changed", max_age=60)  # the cart page says why, once
                    see_other("/cart")
            finally:  # then the others started meanwhile, after the edit's own look (and this one, if it failed)
                shop.close_later()
        if kept is not None:  # the cart becomes what it pays for, marked with its order, so paying empties it
            write_cart(shop.guard, cart, checked_out=order_id)
        redirect(session.url, 303)

    @app.get("/success")
    def success():
        """What was actually charged, for a session this shop created; from the ledger once the order is paid."""
        session_id = request.query.get("session_id", "")
        order = shop.orders.ledger.by_session(session_id) if SESSION_ID.fullmatch(session_id) else None
        if order is None:
            raise ShopError(404, "We could not find that order.")
        charged, state, tax_later = order["charged"], "paid", False
        if order["status"] == "expired":  # final at Stripe: the ledger has what it came to, with no call
            charged, state = expired(order), "expired"
        elif not (order["fulfilled_at"] and charged):  # not settled yet: ask Stripe (shared reads, ~1 call a second)
            try:
                session = shop.reads.retrieve(session_id)
                charged, _ = shop.orders.sync(session_id, session, "success page", order=order)
            except ShopError as e:
                if e.status == 404:
                    raise
                if e.status != 503:  # an answer the shop cannot use (stripe-mock's, say): the merchant should know
                    log.warning("confirmation of %s not shown: %s", session_id, e.detail or e.message)
                # Stripe is unreachable, or its answer is not this session's: never say "failed" or "refused" to
                # a shopper who may have paid (the webhook or reconcile will settle it). The header
                # leaves out the books of the cart that went to checkout as this order; the cookie keeps them.
                catalog = shop.catalog()
                cookie = read_cart(shop, catalog)
                mine = cookie.mark == order["id"] and not cookie.paid
                left = without(cookie.items, order["items"]) if mine else cookie.items  # (a bought one's are out)
                return shop.render("success.tpl", title="Confirming your payment", state="confirming", order=order,
                                   cart_count=sum(in_stock(shop, left, catalog)[0].values()))
            order = shop.orders.ledger.get(order["id"])
            state = payments.state(session)
            tax_later = state == "open" and payments.tax_later(session)
            if state == "processing" and order["status"] == "payment_failed":  # a webhook heard of the failure
                state = "failed"
        count, restored, catalog = None, False, shop.catalog()
        bought, cookie = quantities(order["items"]), read_cart(shop, catalog)
        cart = cookie.items
        if cookie.paid and cookie.paid["status"] in PAID:
            # Its books leave the cart, and what was added since stays; "Buy now" and an old confirmation leave the
            # cart alone. (A bank payment still processing only hides them: they show again if it fails.)
            write_cart(shop.guard, cart)
        elif state == "failed" and order["browser"] == shop.guard.valid_sid(request):
            # Its books were hidden in the cart while it processed, and show again; or, if that cart has gone
            # (emptied since, or from before carts were marked), they go back into an empty one. "Buy now" left the
            # cart alone, so it still does. Said once.
            hidden = cookie.mark == order["id"]
            from_cart = (session.get("metadata") or {}).get("checkout") != "buy now"
            if (hidden or not cart and from_cart) and said_back(shop, order):
                restored = bool(cart) if hidden else write_cart(
                    shop.guard, {p: q for p, q in bought.items() if catalog.product(p)})
                count = sum(in_stock(shop, restored, catalog)[0].values()) if restored and not hidden else None
        return shop.render("success.tpl", title=TITLES[state], state=state, order=order, summary=charged,
                           cart_count=count, restored=restored, tax_later=tax_later,
                           mailed=mail.mailable(charged["email"]))

    def cart_cookie():
        """The cart as its cookie has it, withdrawn books included."""
        return parse_cart(cookies(request).get(shop.guard.prefix + "cart", ""), None)

    def closed_by_edit():
        """Whether the checkout this browser last went to was closed by a catalog edit before it was paid."""
        sid, ledger = shop.guard.valid_sid(request), shop.orders.ledger
        last = sid and ledger.last_checkout(sid)
        return bool(last and last["status"] == "expired" and
                    any(h["source"] in shop.EDITED for h in ledger.history(last["id"])))

    def expire(session_id, why, must=False):
        try:
            refused = shop.orders.expire(session_id, why)[1]
        except ShopError as e:  # Stripe unreachable: `must` answers the shopper so, rather than risk a payable one
            if must and e.status != 404:
                raise
            refused = e.detail or e.message
            if must:  # unknown to this key, yet perhaps payable where it was made
                log.warning("could not expire %s (%s): %s", session_id, why, refused)
                raise ShopError(409, "Your earlier checkout could not be closed, so a new one cannot start yet. "
                                     "Please finish that one, or try again once it has expired.") from None
        if refused:  # paid meanwhile (in another tab) is no fault: its order is marked paid now
            paid = (shop.orders.ledger.by_session(session_id) or {}).get("status") in BOUGHT
            log.log(logging.INFO if paid else logging.WARNING, "could not expire %s (%s): %s", session_id, why, refused)


def copies_left(shop, products):
    """({product id: copies left}, {product id: copies other shoppers' open checkouts hold, which come back unless
    paid for}) for the products with limited stock; this browser's own open checkouts' copies count as left:
    checking out again gives them back first."""
    stocked = {p.id: p.stock for p in products if p.stock is not None}
    taken = shop.orders.ledger.stock_levels(stocked, shop.guard.valid_sid(request)) if stocked else {}
    return ({pid: max(0, n - sum(taken.get(pid, ()))) for pid, n in stocked.items()},
            {pid: held_back(stocked[pid], counts) for pid, counts in taken.items()})


def enough_left(shop, product, wanted):
    """The copies of a product left (MAX_QUANTITY when unlimited); a 409 when fewer than `wanted`."""
    left, held = copies_left(shop, [product])
    left = left.get(product.id, MAX_QUANTITY)
    if wanted > left:
        raise too_few(product.name, left, held.get(product.id))
    return left


def in_stock(shop, cart, catalog):
    """The cart held to the copies left (what every page's header counts), and what the shopper is told."""
    notes, cart = [], dict(cart)
    left_of, held = copies_left(shop, [catalog.product(p) for p in cart])
    for pid, left in left_of.items():
        if cart[pid] > left:
            name = catalog.product(pid).name
            notes.append(f"Sorry, {name} is sold out for now, so it is not in your cart: {HELD}." if not left and
                         held.get(pid) else f"Sorry, {name} is sold out, so it is not in your cart." if not left else
                         f"Only {left} of {name} left: your cart holds that many.")
            cart[pid] = left
    return {p: q for p, q in cart.items() if q}, notes


def read_cart(shop, catalog):
    """This browser's CartCookie, for every page alike: once the checkout it last went to is bought,
    without that order's books, as the confirmation page would."""
    raw = cookies(request).get(shop.guard.prefix + "cart", "")
    cart, mark = parse_cart(raw, catalog), _CHECKED_OUT.search(raw)
    # Its order is looked up once a request (every page's header counts the cart too), every book withdrawn since
    # perhaps; still the cart that went to checkout as it (changed, and back, perhaps)? Withdrawn books count.
    if (found := request.environ.get("shop.checkout")) is None:
        mine = own_order(shop, mark[1]) if mark else None
        same = mine if mine and parse_cart(raw, None) == quantities(mine["items"]) else None
        found = request.environ["shop.checkout"] = (mine and mine["id"], same, mine if mine and
                                                    mine["status"] in BOUGHT else None,
                                                    mine if mine and mine["status"] == "payment_failed" else None)
    paid = found[2]
    return CartCookie(without(cart, paid["items"]) if paid else cart, *found)


def said_back(shop, order):
    """True the first time a failed payment's books are said to be back in the cart, on this page or the other."""
    return shop.orders.ledger.first_time(f"cart back {order['id']}")


def expired(order):
    """What an expired checkout came to, for its page, from the ledger: its lines, and the amounts Stripe had."""
    items = [{"name": i["name"], "quantity": i["quantity"], "amount_subtotal": i["unit_amount"] * i["quantity"]}
             for i in order["items"]]
    amounts = {k: order[k] or 0 for k in ("amount_subtotal", "amount_shipping", "amount_tax", "amount_discount")}
    return {**amounts, "items": items, "currency": order["currency"], "promotion_code": order["promotion_code"],
            "amount_total": order["amount_total"] or order["amount_subtotal"], "email": order["customer_email"],
            "payment_intent": order["payment_intent"]}


def without(cart, items):
    """The cart less an order's copies of each book."""
    taken = quantities(items)
    return {p: q - taken.get(p, 0) for p, q in cart.items() if q > taken.get(p, 0)}


def own_order(shop, order_id):
    """The order, if this browser made it (an id from a cookie or a link is never trusted alone)."""
    order = shop.orders.ledger.get(order_id)
    return order if order and order["browser"] == shop.guard.valid_sid(request) else None


def quantities(items):
    """An order's lines as a cart: {product id: quantity}."""
    return {i["product_id"]: i["quantity"] for i in items}


def write_cart(guard, cart, checked_out=None):
    """Keep the cart in its cookie 30 days (empty: no cookie), marked with its checkout's order; returns the cart."""
    if cart:
        marked = [f"{p}:{q}" for p, q in cart.items()] + ([checked_out] if checked_out else [])
        guard.set_cookie(response, "cart", ".".join(marked), max_age=MONTH)
        if sid := guard.valid_sid(request):  # the browser id lasts as long as the cart that names its orders
            guard.set_cookie(response, "sid", sid, max_age=MONTH)
    else:
        guard.delete_cookie(response, "cart")
    return cart


def parse_cart(raw, catalog):
    """The cart cookie as an ordered {product_id: quantity}: unknown ids (none if no catalog) and none of a product
    dropped, at most 99 each."""
    cart = {}
    for part in raw.split(".") if len(raw) <= MAX_COOKIE else ():
        m = _ITEM.fullmatch(part)
        if m and int(m[2]) and (catalog is None or catalog.product(m[1]) is not None) and (
                m[1] in cart or len(cart) < MAX_LINES):
            cart[m[1]] = max(1, min(MAX_QUANTITY, cart.get(m[1], 0) + int(m[2])))
    return cart


def lines(cart, catalog):
    """Priced lines from the server's catalog: [(product, quantity, line total)]."""
    return [(catalog.product(p), q, catalog.product(p).price * q) for p, q in cart.items() if catalog.product(p)]


def see_other(path):
    """303 to a path on this shop: a relative Location (RFC 9110, 10.2.2) keeps the browser on the origin it used,
    and nothing from the Host header or a proxy's scheme is written into the answer."""
    res = response.copy(cls=HTTPResponse)
    res.status, res.body = 303, ""
    res.set_header("Location", path)
    raise res


def product_field(catalog):
    """The posted product id, which must name a product in the catalog."""
    product_id = request.forms.get("product_id", "")
    if catalog.product(product_id) is None:
        raise ShopError(400, "That product is not in the catalog (it may have just been removed).")
    return product_id


def quantity_field(low):
    """The posted quantity: 1 when an add leaves it out; a change (low 0: remove) must give one."""
    value = _int(request.forms.get("quantity"), 1 if low else None, low, MAX_QUANTITY)
    if value is None:
        raise ShopError(400, f"The quantity must be a whole number from {low} to {MAX_QUANTITY}"
                             f"{' (0 removes the book)' if not low else ''}.")
    return value


def _int(raw, default, low, high):
    """A whole number from a form or query: default when absent, None when malformed or out of range."""
    raw = (raw or "").strip()
    if not raw:
        return default
    ok = raw.isascii() and raw.isdigit() and len(raw) <= 7 and low <= int(raw) <= high
    return int(raw) if ok else None
