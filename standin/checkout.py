"""Checkout Sessions: create (validated like Stripe), totals as Checkout computes them, retrieve, list, expire."""
from decimal import ROUND_HALF_UP, Decimal

# Stripe's presentment currencies (https://docs.stripe.com/currencies), the list catalog.json is checked with, so any
# catalog the shop accepts can be paid offline too.
from webshop.iso_codes import CURRENCIES

from . import objects as o
from .errors import invalid, missing_param, no_such
from .schemas import COUNTRIES, MAX_AMOUNT
from .tax import rate, tax_for

# Minimum charge amounts in minor units: https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
MIN_AMOUNT = {"gbp": 30, "sek": 300, "nok": 300, "dkk": 250, "pln": 200, "czk": 1500, "huf": 17500, "jpy": 50,
              "mxn": 1000, "hkd": 400, "ron": 200, "bgn": 100, "aed": 200, "thb": 1000, "inr": 50, "myr": 200}
DAY = 24 * 3600


def create(ctx, p):
    """POST /v1/checkout/sessions: https://docs.stripe.com/api/checkout/sessions/create."""
    if p["mode"] != "payment":
        raise invalid("The offline stand-in only supports `mode=payment`.", "mode")
    if not p.get("line_items"):
        raise missing_param("line_items")
    if not p.get("success_url"):
        raise missing_param("success_url")
    created = ctx.now
    items, currency = [], None
    for i, li in enumerate(p["line_items"]):
        base = f"line_items[{i}]"
        if li.get("quantity") is None:
            raise missing_param(f"{base}[quantity]")
        if li.get("price"):
            raise no_such("price", li["price"], param=f"{base}[price]")
        pd = li.get("price_data")
        if not pd:
            raise invalid(f"You must specify either `price` or `price_data` in {base}.", base, "parameter_missing")
        if pd.get("unit_amount") is None:
            raise missing_param(f"{base}[price_data][unit_amount]")
        cur = check_currency(pd["currency"], f"{base}[price_data][currency]")
        if currency is None:
            currency = cur
        elif cur != currency:
            raise invalid("All line items must use the same currency; found both "
                          f"{currency} and {cur}.", f"{base}[price_data][currency]")
        prod = pd["product_data"]
        price = o.price(cur, pd["unit_amount"], pd.get("tax_behavior") or "unspecified", o.new_id("prod_", 14), created)
        entry = o.item(price, li["quantity"], prod["name"])
        entry["_product"] = {k: prod.get(k) for k in ("name", "description", "images", "tax_code", "metadata")}
        items.append(entry)
    countries = None
    if p.get("shipping_address_collection"):
        countries = p["shipping_address_collection"]["allowed_countries"]
        for i, c in enumerate(countries):
            if c not in COUNTRIES:
                raise invalid(f"Invalid country code: {c}. It must be an ISO 3166-1 alpha-2 code that Checkout "
                              "supports.", f"shipping_address_collection[allowed_countries][{i}]")
        if not countries:
            raise missing_param("shipping_address_collection[allowed_countries]")
    rates = [_shipping_rate(ctx, opt, i, currency) for i, opt in enumerate(p.get("shipping_options") or [])]
    expires_at = p.get("expires_at")
    if expires_at is None:
        expires_at = created + DAY
    elif expires_at > created + DAY:
        raise invalid("The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
                      "expires_at")
    elif expires_at < created + 1800 - 60:  # a little slack for clock skew between shop and API
        raise invalid("The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
                      "expires_at")
    if p.get("customer_email") and "@" not in p["customer_email"]:
        raise invalid(f"Invalid email address: {p['customer_email']}", "customer_email", "email_invalid")
    sid = o.new_id("cs_test_a1", 56)
    auto = bool((p.get("automatic_tax") or {}).get("enabled"))
    terms = (p.get("consent_collection") or {}).get("terms_of_service")
    custom_text = dict.fromkeys(("after_submit", "shipping_address", "submit", "terms_of_service_acceptance"))
    custom_text["terms_of_service_acceptance"] = (p.get("custom_text") or {}).get("terms_of_service_acceptance")
    session = {
        "id": sid, "object": "checkout.session", "adaptive_pricing": {"enabled": False}, "after_expiration": None,
        "allow_promotion_codes": p.get("allow_promotion_codes"), "amount_subtotal": 0, "amount_total": 0,
        "automatic_tax": {"enabled": auto, "liability": {"type": "self"} if auto else None,
                          "provider": "stripe" if auto else None, "status": None},
        "billing_address_collection": p.get("billing_address_collection"), "cancel_url": p.get("cancel_url"),
        "client_reference_id": p.get("client_reference_id"), "client_secret": None,
        "collected_information": None, "consent": None,
        "consent_collection": {"payment_method_reuse_agreement": None, "promotions": None, "terms_of_service": terms}
        if p.get("consent_collection") is not None else None,
        "created": created, "currency": currency, "currency_conversion": None, "custom_fields": [],
        "custom_text": custom_text,
        "customer": None, "customer_account": None, "customer_creation": p.get("customer_creation") or "if_required",
        "customer_details": None, "customer_email": p.get("customer_email"), "discounts": [],
        "expires_at": expires_at, "integration_identifier": None, "invoice": None,
        "invoice_creation": {"enabled": False, "invoice_data": {
            "account_tax_ids": None, "custom_fields": None, "description": None, "footer": None, "issuer": None,
            "metadata": {}, "rendering_options": None}},
        "livemode": False, "locale": p.get("locale"), "managed_payments": {"enabled": False},
        "metadata": p.get("metadata") or {}, "mode": "payment", "origin_context": None, "payment_intent": None,
        "payment_link": None, "payment_method_collection": "if_required",
        "payment_method_configuration_details": {"id": "pmc_offline_standin", "parent": None},
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "payment_status": "unpaid",
        "permissions": {"update_shipping_details": None},
        "phone_number_collection": {"enabled": bool((p.get("phone_number_collection") or {}).get("enabled"))},
        "recovered_from": None,
        "saved_payment_method_options": {"allow_redisplay_filters": ["always"], "payment_method_remove": None,
                                         "payment_method_save": None},
        "setup_intent": None, "shipping_address_collection": {"allowed_countries": countries} if countries else None,
        "shipping_cost": None, "shipping_options": [], "status": "open", "submit_type": p.get("submit_type"),
        "subscription": None, "success_url": p["success_url"], "total_details": None, "ui_mode": "hosted_page",
        "url": f"{ctx.public_url}/offline-checkout/{sid}", "wallet_options": None,
        "_line_items": items, "_rates": rates, "_payment_intent_data": p.get("payment_intent_data") or {},
    }
    if p.get("tax_id_collection") is not None:
        # Shown only when sent (Stripe's 2026 example session has no `tax_id_collection`)
        session["tax_id_collection"] = {"enabled": p["tax_id_collection"]["enabled"],
                                        "required": p["tax_id_collection"].get("required") or "never"}
    compute(session)
    minimum = minimum_charge(currency)
    if session["amount_total"] < minimum:
        raise invalid(f"The Checkout Session's total amount due must add up to at least {minimum} "
                      f"(minor units) {currency}.", "line_items", "amount_too_small")
    # At most eight digits: https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
    if session["amount_total"] > MAX_AMOUNT:
        raise invalid(f"The Checkout Session's total amount due must be no more than {MAX_AMOUNT} (minor units) "
                      f"{currency}.", "line_items", "amount_too_large")
    return ctx.tx.put(session)


def check_currency(value, param):
    """A lowercase currency code Stripe supports, or Stripe's 400."""
    cur = value.lower()
    if cur not in CURRENCIES:
        raise invalid(f"Invalid currency: {value}. Stripe currently supports these currencies: "
                      f"{', '.join(sorted(CURRENCIES))}", param)
    return cur


def _shipping_rate(ctx, opt, i, currency):
    base = f"shipping_options[{i}]"
    if opt.get("shipping_rate"):
        rate_obj = ctx.tx.get(opt["shipping_rate"], "shipping_rate")
        if rate_obj is None:
            raise no_such("shipping_rate", opt["shipping_rate"], param=f"{base}[shipping_rate]")
    elif opt.get("shipping_rate_data"):
        data = opt["shipping_rate_data"]
        if not data.get("fixed_amount"):
            raise missing_param(f"{base}[shipping_rate_data][fixed_amount]")
        data["fixed_amount"]["currency"] = check_currency(data["fixed_amount"]["currency"],
                                                          f"{base}[shipping_rate_data][fixed_amount][currency]")
        rate_obj = ctx.tx.put(o.shipping_rate(data, ctx.now))
    else:
        raise invalid(f"You must specify either `shipping_rate` or `shipping_rate_data` in {base}.", base,
                      "parameter_missing")
    if rate_obj["fixed_amount"]["currency"] != currency:
        raise invalid(f"The shipping rate currency ({rate_obj['fixed_amount']['currency']}) must match the "
                      f"currency of the line items ({currency}).", base)
    return rate_obj


def compute(session, country=None, option_index=0, coupon=None):
    """Recompute item, shipping and session totals; tax only when automatic tax is on and a country is known.

    A coupon comes off the line items (not shipping), spread over them in proportion to their amounts, and
    before tax: each item's tax is worked out on its discounted amount."""
    auto = session["automatic_tax"]["enabled"]
    taxed = auto and bool(country)
    lines = session["_line_items"]
    amounts = [it["price"]["unit_amount"] * it["quantity"] for it in lines]
    sub = sum(amounts)
    discount = amount_off(coupon, sub) if coupon else 0
    tax = total = 0
    for it, amount, off in zip(lines, amounts, spread(discount, amounts)):
        price = it["price"]
        net = amount - off
        t = tax_for(net, rate(country, it["_product"].get("tax_code")), price["tax_behavior"]) if taxed else 0
        it.update(amount_subtotal=amount, amount_discount=off, amount_tax=t,
                  amount_total=net + (t if price["tax_behavior"] != "inclusive" else 0))
        tax, total = tax + t, total + it["amount_total"]
    rates = session["_rates"]
    ship = 0
    if rates:
        chosen = rates[option_index]
        ship = chosen["fixed_amount"]["amount"]
        behavior = chosen["tax_behavior"]
        st = tax_for(ship, rate(country, chosen["tax_code"]), behavior) if taxed else 0
        session["shipping_cost"] = {"amount_subtotal": ship, "amount_tax": st,
                                    "amount_total": ship + (st if behavior != "inclusive" else 0),
                                    "shipping_rate": chosen["id"]}
        session["shipping_options"] = [{"shipping_amount": r["fixed_amount"]["amount"], "shipping_rate": r["id"]}
                                       for r in rates]
        tax, total = tax + st, total + session["shipping_cost"]["amount_total"]
    session.update(amount_subtotal=sub, amount_total=total,
                   total_details={"amount_discount": discount, "amount_shipping": ship, "amount_tax": tax})
    if auto:
        session["automatic_tax"]["status"] = "complete" if country else "requires_location_inputs"
    return session


def minimum_charge(currency):
    """The smallest amount Stripe charges in a currency (minor units); for those its table does not name, Stripe's is
    US$0.50 at the day's rate, which the stand-in does not know: 50 minor units."""
    return MIN_AMOUNT.get(currency, 50)


def amount_off(coupon, subtotal):
    """What a coupon takes off a subtotal: a percentage (rounded half up), or a fixed amount, never more than all."""
    if coupon["percent_off"] is not None:
        off = int((Decimal(subtotal) * Decimal(str(coupon["percent_off"])) / 100).quantize(Decimal(1), ROUND_HALF_UP))
    else:
        off = coupon["amount_off"]
    return max(0, min(subtotal, off))


def spread(total, amounts):
    """`total` split over `amounts` in proportion, in whole minor units that add up exactly (largest remainder)."""
    whole = sum(amounts)
    if not whole or not total:
        return [0] * len(amounts)
    shares = [a * total // whole for a in amounts]
    left = total - sum(shares)
    for i in sorted(range(len(amounts)), key=lambda i: (-(amounts[i] * total % whole), i))[:left]:
        shares[i] += 1
    return shares


def get(ctx, sid):
    """The stored session or Stripe's 404."""
    session = ctx.tx.get(sid, "checkout.session")
    if session is None:
        raise no_such("checkout.session", sid, "session")
    return session


def line_items_page(session, p):
    """GET /v1/checkout/sessions/{id}/line_items as a list object, paginated by item id."""
    items = [o.public(i) for i in session["_line_items"]]
    ids = [i["id"] for i in items]
    limit = p.get("limit") or 10
    start = 0
    if p.get("starting_after"):
        if p["starting_after"] not in ids:
            raise no_such("item", p["starting_after"], param="starting_after")
        start = ids.index(p["starting_after"]) + 1
    elif p.get("ending_before"):
        if p["ending_before"] not in ids:
            raise no_such("item", p["ending_before"], param="ending_before")
        end = ids.index(p["ending_before"])
        start = max(0, end - limit)
        # going back, has_more says whether there are items before this page
        return o.list_object(items[start:end], f"/v1/checkout/sessions/{session['id']}/line_items",
                             has_more=start > 0)
    page = items[start:start + limit]
    return o.list_object(page, f"/v1/checkout/sessions/{session['id']}/line_items",
                         has_more=start + limit < len(items))


def expire(ctx, session):
    """Expire an open session (API call or lapsed expires_at): https://docs.stripe.com/api/checkout/sessions/expire."""
    if session["status"] != "open":
        raise invalid('Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a '
                      f"status of `{session['status']}`.")  # Stripe's words
    session.update(status="expired", url=None)  # `url` only while open
    if session["payment_intent"]:
        pi = ctx.tx.get(session["payment_intent"], "payment_intent")
        if pi and pi["status"] not in ("succeeded", "canceled"):
            pi.update(status="canceled", canceled_at=ctx.now, cancellation_reason="abandoned")
            ctx.tx.put(pi)
            ctx.emit("payment_intent.canceled", pi)
    ctx.tx.put(session)
    ctx.emit("checkout.session.expired", session)
    return session
