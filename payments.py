"""Talking to Stripe: the one `StripeClient`, the Checkout Session the shop asks for, and what it reports back."""

import functools
import logging
import time
from urllib.parse import quote

import stripe

from settings import ShopError

log = logging.getLogger("shop.stripe")

OFFLINE_KEY = "sk_test_offline_standin"
UNAVAILABLE = "The payment service is not answering right now. Your cart is kept; please try again in a minute."


def make_client(config, standin=None):
    """One StripeClient for the app, API version pinned, with a timeout and bounded retries."""
    # Retries reuse the request's idempotency key, so a retried create never makes a second session:
    # https://docs.stripe.com/error-low-level#idempotency
    options = dict(stripe_version=stripe.api_version, max_network_retries=config.stripe_max_retries)
    if config.mode == "offline":
        return stripe.StripeClient(OFFLINE_KEY, http_client=standin.http_client(timeout=config.stripe_timeout),
                                   **options)
    base = {"api": config.stripe_api_base} if config.stripe_api_base else None
    return stripe.StripeClient(config.stripe_secret_key, base_addresses=base,
                               http_client=stripe.RequestsClient(timeout=config.stripe_timeout), **options)


def checkout_params(catalog, lines, order_id, base_url):
    """Checkout Session parameters built only from the server's catalog (never from the request)."""
    # https://docs.stripe.com/api/checkout/sessions/create
    automatic = catalog.tax_mode == "automatic"
    items = []
    for product, quantity, _ in lines:
        product_data = {"name": product.name, "description": product.description,
                        "images": [f"{base_url}/static/{product.checkout_image or product.image}"],
                        "metadata": {"product_id": product.id}}
        if automatic and product.tax_code:
            product_data["tax_code"] = product.tax_code
        price_data = {"currency": catalog.currency, "unit_amount": product.price, "product_data": product_data}
        if automatic:
            price_data["tax_behavior"] = catalog.tax_behavior
        items.append({"price_data": price_data, "quantity": quantity})
    shipping = []
    for option in catalog.shipping_options:
        rate = {"type": "fixed_amount", "display_name": option.name,
                "fixed_amount": {"amount": option.amount, "currency": catalog.currency},
                "delivery_estimate": {"minimum": {"unit": "business_day", "value": option.min_days},
                                      "maximum": {"unit": "business_day", "value": option.max_days}}}
        if automatic:
            rate["tax_behavior"] = catalog.tax_behavior
            if option.tax_code:
                rate["tax_code"] = option.tax_code
        shipping.append({"shipping_rate_data": rate})
    params = {
        "mode": "payment",
        "line_items": items,
        "shipping_address_collection": {"allowed_countries": list(catalog.countries)},
        "phone_number_collection": {"enabled": True},
        "locale": "auto",
        "client_reference_id": order_id,
        "metadata": {"order_id": order_id},
        "payment_intent_data": {"metadata": {"order_id": order_id}},
        # {CHECKOUT_SESSION_ID} is filled in by Stripe: https://docs.stripe.com/payments/checkout/custom-success-page
        "success_url": f"{base_url}/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base_url}/cart?canceled=1",
    }
    if shipping:
        params["shipping_options"] = shipping
    if automatic:
        params["automatic_tax"] = {"enabled": True}
    return params


def call(what, fn, *args, **kwargs):
    """Run one Stripe call, log it (endpoint, status, duration, Request-Id), map failures to ShopError."""
    start = time.monotonic()
    status, request_id = "ok", "-"
    try:
        result = fn(*args, **kwargs)
        response = result if isinstance(result, stripe.StripeResponse) else getattr(result, "last_response", None)
        status = getattr(response, "code", None) or "ok"  # the HTTP status, like the failures below
        request_id = getattr(response, "request_id", None) or "-"
        return result
    except stripe.StripeError as e:
        status = e.http_status or ("unreachable" if isinstance(e, stripe.APIConnectionError) else "error")
        request_id = e.request_id or "-"
        raise shop_error(e) from None
    finally:
        log.info("stripe %s status=%s duration_ms=%.1f request_id=%s", what, status,
                 (time.monotonic() - start) * 1000, request_id)


def shop_error(e):
    """The ShopError for a Stripe exception: 404 no such object, 502 refused, 503 unreachable or misconfigured."""
    if isinstance(e, stripe.InvalidRequestError):
        if e.code == "resource_missing":
            return ShopError(404, "We could not find that checkout.", detail=e.user_message)
        return ShopError(502, "The payment service refused the request. Your cart is kept.", detail=e.user_message)
    # Unreachable, rate limited, Stripe's own error, or authentication/permission (the merchant's setup,
    # not the shopper's fault): the shopper is told to come back, and the cart is kept.
    return ShopError(503, UNAVAILABLE, detail=type(e).__name__)


def create_session(client, params, order_id):
    """Create the Checkout Session for an order; the idempotency key makes retries safe."""
    return call("POST /v1/checkout/sessions", client.v1.checkout.sessions.create, params,
                {"idempotency_key": f"checkout-{order_id}"})


def expire_session(client, session_id):
    """Expire an open Checkout Session so it can no longer be paid: https://docs.stripe.com/api/checkout/sessions/expire."""
    return call("POST /v1/checkout/sessions/{id}/expire", client.v1.checkout.sessions.expire, session_id).to_dict()


def retrieve_session(client, session_id):
    """The Checkout Session with all its line items and its PaymentIntent expanded, as a plain dict."""
    session = call("GET /v1/checkout/sessions/{id}", _retrieve_as_json(client), session_id,
                   {"expand": ["line_items", "payment_intent"]}).data
    items = session.get("line_items")
    # An expanded list holds only its first page (10 items): the rest are listed, 100 at a time (one more call
    # for a cart of up to 50 lines). https://docs.stripe.com/expand#lists
    while isinstance(items, dict) and items.get("has_more") and items.get("data"):
        page = call("GET /v1/checkout/sessions/{id}/line_items", client.v1.checkout.sessions.line_items.list,
                    session_id, {"limit": 100, "starting_after": items["data"][-1]["id"]}).to_dict()
        items["data"] += page["data"]
        items["has_more"] = page["has_more"]
    return session


def _retrieve_as_json(client):
    """`client.v1.checkout.sessions.retrieve`, answered with Stripe's JSON as a dict instead of a StripeObject.

    Building the SDK's object tree for an expanded session, only to turn it back into a dict, took about
    5 ms: most of the CPU time of a webhook or a success page. The request itself is the same (path, params,
    API version, retries). It keeps the typed method's name, signature and service, so parameter checks that
    map SDK methods to `stripe.params` classes (tests/test_contract.py) check it like the SDK's own method.
    """
    typed = client.v1.checkout.sessions.retrieve

    @functools.wraps(typed)
    def retrieve(session, params=None, options=None):
        return client.raw_request("get", f"/v1/checkout/sessions/{quote(session, safe='')}",
                                  **(params or {}), **(options or {}))

    retrieve.__self__ = typed.__self__
    return retrieve


def summary(session):
    """What was actually charged, read from Stripe's session (not from the ledger or the URL)."""
    totals = session.get("total_details") or {}
    intent = session.get("payment_intent")
    intent_id = intent.get("id") if hasattr(intent, "get") else intent
    details = session.get("customer_details") or {}
    items = []
    line_items = session.get("line_items")
    for item in (line_items.get("data") if line_items else None) or []:
        price = item.get("price") or {}
        items.append({"name": item.get("description"), "quantity": item.get("quantity"),
                      "unit_amount": price.get("unit_amount"), "amount_subtotal": item.get("amount_subtotal"),
                      "amount_total": item.get("amount_total")})
    return {
        "id": session.get("id"),
        "status": session.get("status"),
        "payment_status": session.get("payment_status"),
        "currency": session.get("currency"),
        "items": items,
        "amount_subtotal": session.get("amount_subtotal"),
        "amount_shipping": totals.get("amount_shipping") or 0,
        "amount_tax": totals.get("amount_tax") or 0,
        "amount_discount": totals.get("amount_discount") or 0,
        "amount_total": session.get("amount_total"),
        "email": details.get("email"),
        "payment_intent": intent_id,
        "order_id": (session.get("metadata") or {}).get("order_id") or session.get("client_reference_id"),
    }
