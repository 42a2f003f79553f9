"""/admin, the orders page (list, search, details, refunds, CSV) behind Basic auth, when ADMIN_PASSWORD is set."""

import hashlib
import hmac
import io
import re
import threading
import time
import unicodedata
from urllib.parse import urlencode

import bottle
from bottle import request, response

from . import mail
from .catalog import currency_exponent, money
from .fulfilment import CSV_ROWS, write_csv
from .ledger import ORDER_ID, STATUSES, refundable
from .security import counted
from .settings import ShopError
from .storefront import see_other

FAILURES, WINDOW, PAGE = 10, 600, 100  # 10 failed sign-ins per address (IPv6: per /64) in 10 minutes; 100 orders a page
TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,15}Z")


def install(app, shop):
    """Add /admin and its pages to the app, when ADMIN_PASSWORD is set (otherwise they are 404s)."""
    if not shop.config.admin_password:
        return
    failed, lock, ledger = {}, threading.Lock(), shop.orders.ledger

    def authorize():
        """401 without the right user and password; 429 for an address with too many failures lately."""
        address, now = counted(shop.guard.client_address(request)), time.monotonic()
        with lock:  # an address is kept only once it fails: visits from many addresses must not grow the table
            recent = failed.get(address, [])
            recent[:] = [t for t in recent if now - t <= WINDOW]  # in place: a parallel request's failure counts
            if len(recent) >= FAILURES:
                raise ShopError(429, "Too many failed sign-ins. Please wait a few minutes and try again.",
                                detail=f"admin sign-ins from {address}", retry_after=int(WINDOW - now + recent[0]) + 1)
        user, password = request.auth or (None, None)
        if hmac.compare_digest((user or "").encode(), b"admin") & hmac.compare_digest(  # &: both always compared
                (password or "").encode(), shop.config.admin_password.encode()):
            return
        if user is not None:  # a first visit without credentials is not a failed attempt
            with lock:
                failed.setdefault(address, recent).append(now)
                if len(failed) > 10000:  # many addresses: forget those without recent failures
                    for key in [k for k, v in failed.items() if not v or now - v[-1] > WINDOW]:
                        del failed[key]
        message = "Sign in as admin to see the orders."
        raise bottle.HTTPError(401, message, ShopError(401, message),
                               **{"WWW-Authenticate": 'Basic realm="Shop admin", charset="UTF-8"'})

    def filters():
        status, search = request.query.get("status", ""), request.query.getunicode("q")
        if search is None and "q" in request.query:  # %ff: not UTF-8, which would have listed every order
            raise ShopError(400, "The search could not be read: it must be UTF-8 text.")
        search = (search or "").strip()[:100]
        # A control character matches no order (and a NUL would end SQLite's pattern early: every order).
        search = "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in search)
        return (status if status in STATUSES else None), search or None

    def find(order_id):
        found = ledger.get(order_id) if ORDER_ID.fullmatch(order_id) else None
        if found is None:
            raise ShopError(404, "There is no such order.")
        return found

    @app.get("/admin")
    def orders_page():
        authorize()
        status, search = filters()
        before, after = request.query.get("before", ""), request.query.get("after", "")  # the last order listed
        rows = ledger.list(status=status, search=search, limit=PAGE, before=TIME.fullmatch(before) and before,
                           after_id=ORDER_ID.fullmatch(after) and after)
        query = {k: v for k, v in (("status", status), ("q", search)) if v}
        last = rows[-1] if len(rows) == PAGE else None
        older = last and urlencode({**query, "before": last["created"], "after": last["id"]})
        shop.catalogs.current(force=True)  # the merchant sees an edit that was not loaded, and why
        return shop.render("admin.tpl", title="Orders", orders=rows, status=status or "", search=search or "",
                           statuses=STATUSES, query=urlencode(query), older=older, amount=money,
                           catalog_error=shop.catalogs.summary, catalog_problems=shop.catalogs.found)

    @app.get("/admin/orders.csv")
    def orders_csv():
        authorize()
        status, search = filters()
        out = io.StringIO()
        out.write("\ufeff")  # a byte order mark: Excel reads it as UTF-8 ("1 × Walden"), not in the PC's code page
        write_csv(out, ledger.list(status=status, search=search, limit=CSV_ROWS))
        response.content_type = "text/csv; charset=utf-8"
        response.set_header("Content-Disposition", 'attachment; filename="orders.csv"')
        return out.getvalue()

    @app.get("/admin/orders/<order_id>")
    def order_page(order_id):
        authorize()
        return show_order(find(order_id))

    def show_order(o, error=None, typed="", restock=False):
        """An order's page; with a refund form's error, a 400 showing it beside what was typed."""
        response.status = 400 if error else 200
        catalog = shop.catalog()  # copies go back only to a stock the catalog counts
        stocked = any(getattr(catalog.product(i.get("product_id")), "stock", None) is not None
                      for i in o["items"])
        return shop.render("admin_order.tpl", title=("Error: " if error else "") + f"Order {o['id']}", o=o,
                           history=ledger.history(o["id"]), stocked=stocked, tax_label=mail.tax_label,
                           error=error, typed=typed, restock=restock, example=_example(o["currency"]),
                           record=ledger.handoff_record(o["id"]), mails=ledger.outbox(order_id=o["id"]),
                           refundable=refundable(o) and o["payment_intent"] and o["amount_total"],
                           left=(o["amount_total"] or 0) - o["amount_refunded"], amount=money,
                           refunded=_notice(o["id"]), replayed=request.query.get("replayed") == "1",
                           # the refunded total at the refund (unknown: wait); once it has grown, the event arrived
                           arrived=o["amount_refunded"] > _whole(request.query.get("before", ""), 10**13))

    def _notice(order_id):
        """The refund id of the refund's own redirect, which the shop signed: a link from anyone else says nothing."""
        q = request.query
        sig = notice_sig(order_id, q.get("refunded", ""), q.get("before", ""), q.get("replayed", ""))
        return hmac.compare_digest(q.get("sig", "").encode(), sig.encode()) and q.get("refunded")

    def notice_sig(order_id, refunded, before, replayed):
        return shop.guard.sign("refund notice", f"{order_id} {refunded} {before} {replayed}")

    @app.post("/admin/orders/<order_id>/refund")
    def refund(order_id):
        """The form asks, a confirmation page repeats the amount, and only its button refunds (through Stripe)."""
        authorize()
        shop.guard.check(request)
        o, form = find(order_id), request.forms
        restock = form.get("restock") == "1"
        left, currency = (o["amount_total"] or 0) - o["amount_refunded"], o["currency"]
        if not refundable(o):
            raise ShopError(409, f"Order {o['id']} is {o['status']}: only paid orders can be refunded.")
        if form.get("confirm") == "yes":  # the confirmation page always sends its amount, in minor units: a missing
            amount = _whole(form.get("minor", ""))  # or malformed one is a broken form, never "all that is left"
        else:
            # An amount typed in counts even with "Everything left" still selected: refunding less is the safe side.
            partial = form.get("how") == "partial" or form.get("amount", "").strip()
            amount = minor(form.getunicode("amount", default=""), currency) if partial else left
        if amount is None or not 0 < amount <= left:  # said on the order's page, the form as it was sent
            return show_order(o, f"Enter an amount from {money(1, currency)} to {money(left, currency)} (what is left "
                                 "to refund).", form.getunicode("amount", default="")[:16], restock)
        # The key is this order, amount and refunded total: confirming again (a double submit), or going Back to the
        # form and on through this page again before the refund's event arrives, replays one refund. Any other key
        # (made up, or from before a refund arrived) gets this page again, with the amount and key as they are now.
        key = f"{o['id']} {amount} {o['amount_refunded']} {o['refund_failures']}"  # after a failed refund, another
        key = hashlib.sha256(key.encode()).hexdigest()[:32]
        if form.get("confirm") != "yes" or not hmac.compare_digest(form.get("key", "").encode(), key.encode()):
            return shop.render("admin_refund.tpl", title="Confirm the refund", o=o, refund=amount, restock=restock,
                               amount=money, key=key)
        try:
            _, result, replayed, _ = shop.orders.refund(o["id"], amount, restock, "admin refund", key)
        except ShopError as e:  # the idempotency key makes the same confirmation safe to send again
            if e.status in (404, 409):
                raise
            # Stripe keeps its answer to a key for 24 hours (https://docs.stripe.com/api/idempotent_requests).
            raise ShopError(e.status, f"Stripe did not confirm the refund ({e.detail or e.message}). Confirming "
                                      "again cannot refund twice, but for 24 hours Stripe may give the same answer: "
                                      "check the payment in the Stripe Dashboard.") from None
        query = {"refunded": result.id, "before": o["amount_refunded"], **({"replayed": 1} if replayed else {})}
        query["sig"] = notice_sig(o["id"], result.id, o["amount_refunded"], query.get("replayed", ""))
        see_other(f"/admin/orders/{o['id']}?{urlencode(query)}")


def _whole(text, unknown=None):
    return int(text) if re.fullmatch(r"[0-9]{1,12}", text) else unknown


def _example(currency):
    """An amount to type, written with the currency's decimals: 5.00, or 500 in yen."""
    exponent = currency_exponent(currency)
    return f"5.{'0' * exponent}" if exponent else "500"


def minor(text, currency):
    """An amount in the currency's major unit ('12.50', '$1,234.50', '12.50 USD') as minor units (1250), or None."""
    exponent, text = currency_exponent(currency), text.strip()
    symbol = re.escape(re.sub(r"[0-9.,\s]", "", money(0, currency)))  # as the pages write amounts: $, €, CHF
    # 1,234 groups thousands as the pages write them; with three decimals (KWD) only before a point: 1,500 is 1.500
    grouped = r"[1-9][0-9]{0,2}(?:,[0-9]{3})+" + (r"(?=\.)" if exponent == 3 else "")
    m = len(text) <= 40 and re.fullmatch(rf"(?i)(?:{symbol}|{currency})?\s*({grouped}|[0-9]{{1,10}})"
                                         rf"(?:[.,]([0-9]{{0,{exponent}}}))?(?:\s*{currency})?", text)
    return int(m[1].replace(",", "")) * 10 ** exponent + int((m[2] or "").ljust(exponent, "0") or 0) if m else None
