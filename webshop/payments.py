"""Talking to Stripe: the one `StripeClient`, the Checkout Session the shop asks for, and what it says back."""

import calendar
import hashlib
import json
import logging
import random
import threading
import time
from concurrent.futures import Future

import stripe

from .settings import ShopError

log = logging.getLogger("shop.stripe")

OFFLINE_KEY = "sk_test_offline_standin"
UNAVAILABLE = "The payment service is not answering right now. Please try again in a minute."  # the error page
REFUSED = "The payment service refused the request."  # adds "Your cart is kept." where there is one
# The events the webhook endpoint subscribes to (README: "Webhooks"); anything else is acknowledged and ignored.
SESSION_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded",
                  "checkout.session.async_payment_failed", "checkout.session.expired")
CHARGE_EVENTS = ("charge.refunded", "refund.failed", "charge.dispute.created", "charge.dispute.closed")
EVENTS = SESSION_EVENTS + CHARGE_EVENTS


def make_client(config, business_name):
    """(StripeClient, stand-in or None): API version pinned, a timeout, retries; offline, the stand-in plays Stripe."""
    # Retries reuse the request's idempotency key: https://docs.stripe.com/error-low-level#idempotency
    options = dict(stripe_version=stripe.api_version, max_network_retries=config.stripe_max_retries)
    if config.mode != "offline":
        base = {"api": config.stripe_api_base} if config.stripe_api_base else None
        return stripe.StripeClient(config.stripe_secret_key, base_addresses=base,
                                   http_client=stripe.RequestsClient(timeout=config.stripe_timeout), **options), None
    from standin import StandIn  # offline test mode only
    standin = config.standin or StandIn(config.data_dir, public_url=config.base_url, business_name=business_name,
                                        webhook_url=config.base_url + "/webhook", enabled_events=EVENTS,
                                        webhook_secret=config.stripe_webhook_secret or None)
    return stripe.StripeClient(OFFLINE_KEY, http_client=standin.http_client(timeout=config.stripe_timeout),
                               **options), standin


def checkout_params(catalog, lines, order_id, base_url, from_cart=True, held=False):
    """Checkout Session parameters built only from the server's catalog, never from the request."""
    # https://docs.stripe.com/api/checkout/sessions/create
    automatic, subtotal = catalog.tax_mode == "automatic", sum(total for _, _, total in lines)
    taxed = {"tax_behavior": catalog.tax_behavior} if automatic else {}
    items = []
    for product, quantity, _ in lines:
        data = {"name": product.name, "description": product.description, "metadata": {"product_id": product.id},
                "images": [f"{base_url}/static/{product.checkout_image}"]}
        if automatic and product.tax_code:
            data["tax_code"] = product.tax_code
        items.append({"price_data": {"currency": catalog.currency, "unit_amount": product.price,
                                     "product_data": data, **taxed}, "quantity": quantity})
    shipping = []
    for option in catalog.shipping_options:
        rate = {"type": "fixed_amount", "display_name": option.name, **taxed,
                "fixed_amount": {"currency": catalog.currency,
                                 "amount": shipping_fee(option, subtotal)},  # decided now: Checkout cannot change it
                "delivery_estimate": {"minimum": {"unit": "business_day", "value": option.min_days},
                                      "maximum": {"unit": "business_day", "value": option.max_days}}}
        if automatic and option.tax_code:
            rate["tax_code"] = option.tax_code
        shipping.append({"shipping_rate_data": rate})
    params = {
        "mode": "payment", "line_items": items, "locale": "auto", "shipping_options": shipping,  # 1 to 5 options
        "shipping_address_collection": {"allowed_countries": list(catalog.countries)},
        "phone_number_collection": {"enabled": True},
        "client_reference_id": order_id,
        # `checkout`: where the shopper started. A failed payment gives a cart's books back, never "Buy now"'s.
        "metadata": {"order_id": order_id, "checkout": "cart" if from_cart else "buy now"},
        "payment_intent_data": {"metadata": {"order_id": order_id}},
        # Stripe fills in {CHECKOUT_SESSION_ID}: https://docs.stripe.com/payments/checkout/custom-success-page
        "success_url": f"{base_url}/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base_url}/cart?canceled=1" + ("&held=1" if held else ""),  # held: the cart got less
    }
    if automatic:
        params["automatic_tax"] = {"enabled": True}
    if any(product.stock is not None for product, _, _ in lines):
        # Held copies come back once an abandoned session has expired: Stripe's shortest lifetime, 30 min (+1 for
        # the call), then Stripe's word that it expired unpaid (ledger.HOLD_AFTER_EXPIRY).
        params["expires_at"] = int(time.time()) + 31 * 60
    if catalog.promotions:  # the shopper types a code on Stripe's page
        params["allow_promotion_codes"] = True
    if catalog.terms_url:  # https://docs.stripe.com/payments/checkout/customization/policies
        params["consent_collection"] = {"terms_of_service": "required"}
        params["custom_text"] = {"terms_of_service_acceptance": {
            "message": f"I agree to the [Terms of Service]({catalog.terms_url})"}}
    if catalog.collect_tax_ids:  # https://docs.stripe.com/tax/checkout/tax-ids
        params["tax_id_collection"] = {"enabled": True}
    return params


def shipping_fee(option, subtotal):
    """What a shipping option costs on an order of this subtotal: nothing from its `free_over` on."""
    return 0 if option.free_over and subtotal >= option.free_over else option.amount


def call(what, fn, *args, **kwargs):
    """One Stripe call, logged (endpoint, status, ms, Request-Id); failures become ShopError, a rate limit's 429 is
    retried twice."""
    for attempt in range(3):
        start, status, request_id = time.monotonic(), "ok", "-"
        try:
            result = fn(*args, **kwargs)
            response = getattr(result, "last_response", None)
            status, request_id = getattr(response, "code", "ok"), getattr(response, "request_id", None) or "-"
            return result
        except stripe.RateLimitError as e:
            status, request_id = 429, e.request_id or "-"
            if attempt == 2 or (e.headers or {}).get("stripe-should-retry") == "true":  # a lock timeout: the SDK
                # retried it already, as Stripe asked (https://docs.stripe.com/rate-limits#object-lock-timeouts)
                raise shop_error(e) from None
        except stripe.StripeError as e:
            status = e.http_status or ("unreachable" if isinstance(e, stripe.APIConnectionError) else "error")
            request_id = e.request_id or "-"
            raise shop_error(e) from None
        finally:
            log.info("stripe %s status=%s duration_ms=%.1f request_id=%s", what, status,
                     (time.monotonic() - start) * 1000, request_id)
        # Backoff with jitter, as Stripe advises: https://docs.stripe.com/rate-limits#handling-limiting-gracefully
        time.sleep((0.5 * 2 ** attempt) * (1 + random.random()))


def listed(what, fn, *args):
    """Every object of a Stripe list, as dicts: its first page through `call`, the later ones (which auto-paging
    asks for itself) with their failures made ShopError too."""
    try:
        yield from (o.to_dict() for o in call(what, fn, *args).auto_paging_iter())
    except stripe.StripeError as e:
        raise shop_error(e) from None


def shop_error(e):
    """The ShopError for a Stripe exception: 404 no such object, 409 a key reused, 502 refused, 503 unreachable."""
    # The same idempotency key sent with other details (the SDK raises it only for Stripe's 400, never for a 409
    # about a request still running under that key): https://docs.stripe.com/api/idempotent_requests
    if isinstance(e, stripe.IdempotencyError):
        return ShopError(409, "This was already sent with other details, so nothing was changed. Please start again.",
                         detail=e.user_message)
    if isinstance(e, stripe.InvalidRequestError):
        if e.code == "resource_missing":
            return ShopError(404, "We could not find that checkout.", detail=e.user_message)
        return ShopError(502, REFUSED, detail=e.user_message, code=e.code)
    key_refused = isinstance(e, (stripe.AuthenticationError, stripe.PermissionError))  # until the merchant acts
    if key_refused:
        log.error("Stripe refused the secret key (%s): check STRIPE_SECRET_KEY; a restricted key needs write "
                  "access to Checkout Sessions, Coupons, Promotion codes and Refunds, and read access to "
                  "PaymentIntents, Disputes and Events", type(e).__name__)
    # Unreachable, rate limited, Stripe's own error, or the merchant's key: the shopper comes back later.
    return ShopError(503, UNAVAILABLE, detail=type(e).__name__, code="key_refused" if key_refused else None)


def create_session(client, params, order_id):
    """Create the Checkout Session for an order; the idempotency key makes retries safe."""
    try:
        session = call("POST /v1/checkout/sessions", client.v1.checkout.sessions.create, params,
                       {"idempotency_key": f"checkout-{order_id}"})
    except ShopError as e:
        if e.status != 404:
            raise
        # An id in the parameters Stripe does not know (a catalog's tax code, say): refused, not a missing checkout.
        raise ShopError(502, REFUSED, detail=e.detail) from None
    # A proxy's or a mock's answer in Stripe's place: refused, never a crash or a redirect to nowhere
    if not (isinstance(getattr(session, "id", None), str) and isinstance(getattr(session, "url", None), str)):
        raise ShopError(502, REFUSED, detail="Stripe's answer is no Checkout Session with a payment page")
    return session


def refunded(client, payment_intent):
    """What a payment's refunds have given back, and (how many, what sum) did not: those that failed (a closed card)
    or were canceled returned to the balance instead (https://docs.stripe.com/refunds#failed-refunds). One call for
    up to 100 refunds."""
    refunds = list(listed("GET /v1/refunds", client.v1.refunds.list, {"payment_intent": payment_intent, "limit": 100}))
    lost = [r["amount"] for r in refunds if r.get("status") in ("failed", "canceled")]
    return sum(r["amount"] for r in refunds) - sum(lost), (len(lost), sum(lost))


def retrieve_session(client, session_id):
    """The Checkout Session with all its line items, its PaymentIntent, promotion codes and shipping rate expanded, as
    a dict."""
    session = call("GET /v1/checkout/sessions/{id}", client.v1.checkout.sessions.retrieve, session_id,
                   {"expand": ["line_items", "payment_intent", "discounts.promotion_code",
                               "shipping_cost.shipping_rate"]}).to_dict()
    items = session.get("line_items")
    # An expanded list holds its first 10 items; all are listed then (https://docs.stripe.com/expand#lists).
    if isinstance(items, dict) and items.get("has_more"):
        items["data"], items["has_more"] = list(listed("GET /v1/checkout/sessions/{id}/line_items",
                                                       client.v1.checkout.sessions.line_items.list, session_id,
                                                       {"limit": 100})), False
    return session


def sync_promotions(client, catalog):
    """Make the catalog's promotions the active promotion codes at Stripe; safe to rerun anywhere; ShopError if not."""
    # https://docs.stripe.com/payments/checkout/promotion-codes
    wanted = {}
    for promo in catalog.promotions:
        # A coupon cannot change at Stripe: its id names its definition, so an edited promotion gets a new one.
        digest = hashlib.sha256(json.dumps([promo, catalog.currency], sort_keys=True).encode()).hexdigest()
        wanted[promo["code"], "shop_" + digest[:24]] = promo
    redeemed = {}  # code: times redeemed by every code of that name the shop made, so an edit never resets it
    for code in listed("GET /v1/promotion_codes", client.v1.promotion_codes.list, {"limit": 100}):
        if (code.get("metadata") or {}).get("shop") != "catalog":
            continue
        coupon = (code.get("promotion") or {}).get("coupon")
        key = (code["code"].upper(), object_id(coupon))
        if code.get("active") and wanted.pop(key, None) is None:  # counted once closed: redeemed meanwhile too
            code = call("POST /v1/promotion_codes/{id}", client.v1.promotion_codes.update, code["id"],
                        {"active": False}).to_dict()
        redeemed[key[0]] = redeemed.get(key[0], 0) + (code.get("times_redeemed") or 0)
    for (code, coupon), promo in wanted.items():
        expires = expiry(promo)
        left = promo["max_redemptions"] and promo["max_redemptions"] - redeemed.get(code, 0)
        if expires and expires < time.time() or left is not None and left <= 0:
            log.info("promotion %s is not offered: %s", code, "expired" if left is None or left > 0 else "used up")
            continue
        off = ({"percent_off": promo["percent_off"]} if promo["percent_off"] else
               {"amount_off": promo["amount_off"], "currency": catalog.currency})
        _create_once("POST /v1/coupons", client.v1.coupons.create,
                     {"id": coupon, "duration": "once", "name": code, **off})
        params = {"promotion": {"type": "coupon", "coupon": coupon}, "code": code, "metadata": {"shop": "catalog"}}
        if expires:
            params["expires_at"] = expires
        if left:
            params["max_redemptions"] = left
        if promo["minimum_amount"]:
            params["restrictions"] = {"minimum_amount": promo["minimum_amount"],
                                      "minimum_amount_currency": catalog.currency}
        _create_once("POST /v1/promotion_codes", client.v1.promotion_codes.create, params)


def expiry(promo):
    """When a promotion ends: the last second (UTC) of its `expires` day, or None."""
    return promo["expires"] and calendar.timegm(time.strptime(promo["expires"], "%Y-%m-%d")) + 86399


def _create_once(what, fn, params):
    """Create, where another instance may just have: Stripe's "already exists" means done."""
    try:
        call(what, fn, params)
    except ShopError as e:
        if e.status != 502 or "already" not in (e.detail or ""):
            raise


class SharedReads:
    """Confirmation-page reads of a session, shared while under way and until a second after each began: ~1 Stripe
    read a second at most, however many views wait and however slow Stripe is."""

    def __init__(self, client, seconds=1.0):
        self.client, self.seconds, self.lock, self.reads = client, seconds, threading.Lock(), {}

    def retrieve(self, session_id):
        now = time.monotonic()
        with self.lock:
            started, future = self.reads.get(session_id, (0, None))
            # A read still under way is joined however old: Stripe slow or limiting gets no second read of it.
            mine = future is None or future.done() and now - started >= self.seconds
            if mine:
                if len(self.reads) > 1000:
                    self.reads = {k: v for k, v in self.reads.items() if now - v[0] < self.seconds or not v[1].done()}
                future = Future()
                self.reads[session_id] = (now, future)
        if mine:
            try:
                future.set_result(retrieve_session(self.client, session_id))
            except BaseException as e:  # shared with the views already waiting, not with later ones
                with self.lock:
                    if self.reads.get(session_id, (0, None))[1] is future:
                        del self.reads[session_id]
                future.set_exception(e)
        return future.result()


def object_id(value):
    """The id of a field Stripe gives as an id or, expanded, as the object."""
    return value.get("id") if isinstance(value, dict) else value


def state(session):
    """What a Checkout Session means for its order: paid, processing, failed, open or expired."""
    # https://docs.stripe.com/payments/checkout/fulfill-orders and .../paymentintents/lifecycle
    status, paid = session.get("status"), session.get("payment_status")
    if status == "complete" and paid in ("paid", "no_payment_required"):
        return "paid"
    if status == "complete":
        intent = session.get("payment_intent")
        failed = isinstance(intent, dict) and intent.get("status") in ("canceled", "requires_payment_method")
        return "failed" if failed else "processing"
    return "expired" if status == "expired" else "open"


def tax_later(session):
    """Whether Stripe Tax still awaits the shopper's address to work out the tax (from the session, not the catalog)."""
    # https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-automatic_tax-status
    tax = session.get("automatic_tax") or {}
    return bool(tax.get("enabled")) and tax.get("status") != "complete"


def charged(session):
    """What was actually charged, read from Stripe's session (never from the ledger or the URL)."""
    totals, details = session.get("total_details") or {}, session.get("customer_details") or {}
    codes = [d.get("promotion_code") for d in session.get("discounts") or []]
    rate = (session.get("shipping_cost") or {}).get("shipping_rate")  # the option chosen on Stripe's page
    lines = (session.get("line_items") or {}).get("data") or []
    items = [{"name": i.get("description"), "quantity": i.get("quantity"),
              "unit_amount": (i.get("price") or {}).get("unit_amount"), "amount_subtotal": i.get("amount_subtotal"),
              "amount_total": i.get("amount_total")} for i in lines]
    return {
        "id": session.get("id"), "currency": session.get("currency"), "items": items,
        "amount_subtotal": session.get("amount_subtotal"), "amount_shipping": totals.get("amount_shipping") or 0,
        "amount_tax": totals.get("amount_tax") or 0, "amount_discount": totals.get("amount_discount") or 0,
        "amount_total": session.get("amount_total"), "email": details.get("email"),
        "tax_included": any((i.get("price") or {}).get("tax_behavior") == "inclusive" for i in lines),  # not on top
        # As the shopper typed it: an expired session's snapshot has the code's id only (promo_...), not shown.
        "promotion_code": ", ".join(c["code"] for c in codes if isinstance(c, dict) and c.get("code")) or None,
        "terms_accepted": (session.get("consent") or {}).get("terms_of_service"),
        "shipping_method": rate.get("display_name") if isinstance(rate, dict) else None,
        "tax_ids": [{"type": t.get("type"), "value": t.get("value")} for t in details.get("tax_ids") or []],
        "payment_intent": object_id(session.get("payment_intent")),
        "order_id": (session.get("metadata") or {}).get("order_id") or session.get("client_reference_id"),
    }
