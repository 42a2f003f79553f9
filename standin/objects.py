"""Builders for Stripe API objects in their real shape (field names as in Stripe's fixtures), plus ids and expansion."""
import os
import string
import time

from .errors import DOC_BASE, invalid

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix, n=24):
    """A Stripe-looking id: prefix + random base62, e.g. `pi_3Q...`."""
    # One os.urandom read per id, not one per character (secrets.choice): each read is a system call that
    # lets go of the interpreter lock. Bytes from 248 up are skipped so every character is equally likely.
    chars = []
    while len(chars) < n:
        chars += [_ALPHABET[b % 62] for b in os.urandom(n + n // 4) if b < 248]
    return prefix + "".join(chars[:n])


def now():
    """Current UTC unix time (Stripe's `created` unit)."""
    return int(time.time())


def empty_address():
    """Stripe's address hash with every field null."""
    return dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"))


def list_object(data, url, has_more=False):
    """Stripe's list envelope: https://docs.stripe.com/api/pagination."""
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def public(obj):
    """The object as the API shows it: internal `_` fields dropped (recursively)."""
    # Only containers are walked into: most values are strings and numbers, and a call for each of them
    # was a tenth of a webhook's time with the stand-in in-process (bench/run.py figure 6).
    if type(obj) is dict:
        return {k: public(v) if type(v) in _CONTAINERS else v for k, v in obj.items() if k[:1] != "_"}
    if type(obj) is list:
        return [public(v) if type(v) in _CONTAINERS else v for v in obj]
    return obj


_CONTAINERS = (dict, list)


def price(currency, unit_amount, tax_behavior, product_id, created):
    """An inline one-time price (from `price_data`): https://docs.stripe.com/api/prices/object."""
    return {
        "id": new_id("price_"), "object": "price", "active": False, "billing_scheme": "per_unit",
        "created": created, "currency": currency, "custom_unit_amount": None, "livemode": False,
        "lookup_key": None, "metadata": {}, "nickname": None, "product": product_id, "recurring": None,
        "tax_behavior": tax_behavior, "tiers_mode": None, "transform_quantity": None, "type": "one_time",
        "unit_amount": unit_amount, "unit_amount_decimal": str(unit_amount),
    }


def item(price_obj, quantity, description):
    """A Checkout line item (`object: item`): https://docs.stripe.com/api/checkout/sessions/line_items."""
    sub = price_obj["unit_amount"] * quantity
    return {
        "id": new_id("li_"), "object": "item", "adjustable_quantity": None, "amount_discount": 0,
        "amount_subtotal": sub, "amount_tax": 0, "amount_total": sub, "currency": price_obj["currency"],
        "description": description, "metadata": {}, "price": price_obj, "quantity": quantity,
    }


def coupon(p, created):
    """A Coupon: https://docs.stripe.com/api/coupons/object (`valid` turns false once redeem_by or max_redemptions
    is reached)."""
    return {
        "id": p.get("id") or new_id("", 8), "object": "coupon", "amount_off": p.get("amount_off"),
        "created": created, "currency": p.get("currency"), "duration": p.get("duration") or "once",
        "duration_in_months": p.get("duration_in_months"), "livemode": False,
        "max_redemptions": p.get("max_redemptions"), "metadata": p.get("metadata") or {}, "name": p.get("name"),
        "percent_off": p.get("percent_off"), "redeem_by": p.get("redeem_by"), "times_redeemed": 0, "valid": True,
    }


def promotion_code(p, code, created):
    """A Promotion Code of API version 2025-09-30.clover and later (the coupon inside `promotion`):
    https://docs.stripe.com/api/promotion_codes/object. `_code_key` (never shown) is the code in capitals, for
    the case-insensitive look-ups."""
    restrictions = p.get("restrictions") or {}
    return {
        "id": new_id("promo_"), "object": "promotion_code", "active": p.get("active", True), "code": code,
        "created": created, "customer": None, "customer_account": None, "expires_at": p.get("expires_at"),
        "livemode": False, "max_redemptions": p.get("max_redemptions"), "metadata": p.get("metadata") or {},
        "promotion": {"coupon": p["promotion"]["coupon"], "type": "coupon"},
        "restrictions": {"first_time_transaction": bool(restrictions.get("first_time_transaction")),
                         "minimum_amount": restrictions.get("minimum_amount"),
                         "minimum_amount_currency": restrictions.get("minimum_amount_currency")},
        "times_redeemed": 0, "_code_key": code.upper(),
    }


def shipping_rate(data, created):
    """A shipping rate created from `shipping_rate_data`: https://docs.stripe.com/api/shipping_rates/object."""
    return {
        "id": new_id("shr_"), "object": "shipping_rate", "active": True, "created": created,
        "delivery_estimate": data.get("delivery_estimate"), "display_name": data["display_name"],
        "fixed_amount": {"amount": data["fixed_amount"]["amount"], "currency": data["fixed_amount"]["currency"]},
        "livemode": False, "metadata": data.get("metadata") or {},
        "tax_behavior": data.get("tax_behavior") or "unspecified", "tax_code": data.get("tax_code"),
        "type": "fixed_amount",
    }


def payment_intent(session, created):
    """The PaymentIntent Checkout creates when the customer confirms: https://docs.stripe.com/api/payment_intents."""
    pid = new_id("pi_")
    pi_data = session["_payment_intent_data"]
    return {
        "id": pid, "object": "payment_intent", "amount": session["amount_total"], "amount_capturable": 0,
        "amount_details": {"tip": {}}, "amount_received": 0, "application": None,
        "application_fee_amount": None, "automatic_payment_methods": None, "canceled_at": None,
        "cancellation_reason": None, "capture_method": "automatic",
        "client_secret": f"{pid}_secret_{new_id('', 25)}", "confirmation_method": "automatic",
        "created": created, "currency": session["currency"], "customer": None, "customer_account": None,
        "description": pi_data.get("description"), "excluded_payment_method_types": None,
        "last_payment_error": None, "latest_charge": None, "livemode": False, "managed_payments": {"enabled": False},
        "metadata": dict(pi_data.get("metadata") or {}), "next_action": None, "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": session["payment_method_configuration_details"],
        "payment_method_options": {"card": {"installments": None, "mandate_options": None, "network": None,
                                            "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "processing": None, "receipt_email": pi_data.get("receipt_email"),
        "review": None, "setup_future_usage": None, "shipping": None, "source": None,
        "statement_descriptor": None, "statement_descriptor_suffix": None,
        "status": "requires_payment_method", "transfer_data": None, "transfer_group": None,
    }


def card_details(card, exp_month, exp_year, checks_pass=True):
    """`payment_method_details.card` for a charge; only brand/last4/expiry are kept, never the number."""
    return {
        "amount_authorized": None, "authorization_code": None, "brand": card["brand"],
        "checks": {"address_line1_check": None, "address_postal_code_check": "pass" if checks_pass else None,
                   "cvc_check": "pass" if checks_pass else None},
        "country": "US", "exp_month": exp_month, "exp_year": exp_year,
        "extended_authorization": {"status": "disabled"}, "fingerprint": card["fingerprint"],
        "funding": "credit", "incremental_authorization": {"status": "unavailable"}, "installments": None,
        "last4": card["last4"], "mandate": None, "multicapture": {"status": "unavailable"}, "network": card["brand"],
        "network_token": {"used": False}, "network_transaction_id": None,
        "overcapture": {"maximum_amount_capturable": 0, "status": "unavailable"}, "regulated_status": "unregulated",
        "three_d_secure": None, "transaction_link_id": None, "wallet": None,
    }


def payment_method(card, exp_month, exp_year, billing_details, created):
    """The card PaymentMethod the hosted page collects: https://docs.stripe.com/api/payment_methods/object."""
    return {
        "id": new_id("pm_"), "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": billing_details,
        "card": {"brand": card["brand"], "checks": {"address_line1_check": None, "address_postal_code_check": None,
                                                    "cvc_check": None},
                 "country": "US", "display_brand": card["brand"], "exp_month": exp_month, "exp_year": exp_year,
                 "fingerprint": card["fingerprint"], "funding": "credit", "generated_from": None,
                 "last4": card["last4"], "networks": {"available": [card["brand"]], "preferred": None},
                 "regulated_status": "unregulated", "three_d_secure_usage": {"supported": True}, "wallet": None},
        "created": created, "customer": None, "customer_account": None, "livemode": False, "metadata": {},
        "type": "card",
    }


def card_error(code, decline_code, message, charge_id, payment_method_obj):
    """A PaymentIntent's `last_payment_error` after a decline: https://docs.stripe.com/api/errors."""
    return {"type": "card_error", "code": code, "decline_code": decline_code, "message": message,
            "charge": charge_id, "doc_url": DOC_BASE + code.replace("_", "-"),
            "payment_method": public(payment_method_obj)}


def authentication_error(message, payment_method_obj):
    """A PaymentIntent's `last_payment_error` after failed 3D Secure: no charge was made, so none is named."""
    code = "payment_intent_authentication_failure"
    return {"type": "invalid_request_error", "code": code, "message": message,
            "doc_url": DOC_BASE + code.replace("_", "-"), "payment_method": public(payment_method_obj)}


def charge(pi, created, billing_details, pm_details, outcome, status, failure=None):
    """A Charge: https://docs.stripe.com/api/charges/object (failure = (code, message) for declines)."""
    cid = new_id("ch_")
    ok = status == "succeeded"
    pm_details["overcapture"]["maximum_amount_capturable"] = pi["amount"] if ok else 0
    return {
        "id": cid, "object": "charge", "amount": pi["amount"], "amount_captured": pi["amount"] if ok else 0,
        "amount_refunded": 0, "application": None, "application_fee": None, "application_fee_amount": None,
        "balance_transaction": new_id("txn_") if ok else None, "billing_details": billing_details,
        "calculated_statement_descriptor": "OFFLINE SHOP", "captured": ok, "created": created,
        "currency": pi["currency"], "customer": None, "description": pi["description"], "disputed": False,
        "failure_balance_transaction": None, "failure_code": failure[0] if failure else None,
        "failure_message": failure[1] if failure else None, "fraud_details": {}, "livemode": False,
        "metadata": dict(pi["metadata"]), "on_behalf_of": None, "outcome": outcome, "paid": ok,
        "payment_intent": pi["id"], "payment_method": pi["payment_method"],
        "payment_method_details": {"card": pm_details, "type": "card"}, "receipt_email": pi["receipt_email"],
        # `refunds` only when expanded, since API version 2022-11-15: https://docs.stripe.com/upgrades#2022-11-15
        "receipt_number": None, "receipt_url": None, "refunded": False, "review": None, "shipping": pi["shipping"],
        "source": None, "source_transfer": None, "statement_descriptor": None, "statement_descriptor_suffix": None,
        "status": status, "transfer_data": None, "transfer_group": None,
    }


def outcome(network_status, type_, seller_message, reason=None, decline_code=None):
    """`charge.outcome`: https://docs.stripe.com/declines#understanding-declines-and-failures."""
    return {"advice_code": None, "network_advice_code": None, "network_decline_code": decline_code,
            "network_status": network_status, "reason": reason, "seller_message": seller_message, "type": type_}


def refund(ch, amount, reason, metadata, created):
    """A Refund: https://docs.stripe.com/api/refunds/object."""
    return {
        "id": new_id("re_"), "object": "refund", "amount": amount, "balance_transaction": new_id("txn_"),
        "charge": ch["id"], "created": created, "currency": ch["currency"], "customer": None,
        "customer_account": None, "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "metadata": metadata or {}, "payment_intent": ch["payment_intent"], "payment_method": ch["payment_method"],
        "reason": reason, "receipt_number": None, "source_transfer_reversal": None, "status": "succeeded",
        "transfer_reversal": None,
    }


EVIDENCE_FIELDS = (
    "access_activity_log billing_address cancellation_policy cancellation_policy_disclosure cancellation_rebuttal "
    "customer_communication customer_email_address customer_name customer_purchase_ip customer_signature "
    "duplicate_charge_documentation duplicate_charge_explanation duplicate_charge_id product_description receipt "
    "refund_policy refund_policy_disclosure refund_refusal_explanation service_date service_documentation "
    "shipping_address shipping_carrier shipping_date shipping_documentation shipping_tracking_number "
    "uncategorized_file uncategorized_text").split()


def dispute(ch, created, reason="fraudulent", inquiry=False):
    """A Dispute in `needs_response`, or an inquiry in `warning_needs_response`:
    https://docs.stripe.com/api/disputes/object."""
    evidence = dict.fromkeys(EVIDENCE_FIELDS)
    evidence["enhanced_evidence"] = {}
    card = ch["payment_method_details"]["card"]
    return {
        "id": new_id("dp_"), "object": "dispute", "amount": ch["amount"], "balance_transactions": [],
        "charge": ch["id"], "created": created, "currency": ch["currency"], "enhanced_eligibility_types": [],
        "evidence": evidence, "evidence_details": {"due_by": created + 7 * 86400, "enhanced_eligibility": {},
                                                   "has_evidence": False, "past_due": False, "submission_count": 0},
        "is_charge_refundable": inquiry, "livemode": False, "metadata": {},
        "payment_intent": ch["payment_intent"],
        "payment_method_details": {"card": {"brand": card["brand"], "case_type": "inquiry" if inquiry else "chargeback",
                                            "network": card["network"], "network_reason_code": "10.4"},
                                   "type": "card"},
        "reason": reason, "status": "warning_needs_response" if inquiry else "needs_response",
    }


def event(type_, obj, api_version, created, previous_attributes=None, request=None):
    """An Event: https://docs.stripe.com/api/events/object (snapshot of the object at that moment)."""
    data = {"object": public(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": new_id("evt_"), "object": "event", "api_version": api_version, "created": created, "data": data,
        "livemode": False, "pending_webhooks": 0, "request": request or {"id": None, "idempotency_key": None},
        "type": type_,
    }


# Fields Stripe lets you expand on each object (spec3's x-expandableFields, less those this API version's objects
# no longer have): https://docs.stripe.com/expand
# A null one stays null. An id of something the stand-in does not keep (a balance transaction, a product) is
# refused rather than answered with null.
_FILES = ("cancellation_policy customer_communication customer_signature duplicate_charge_documentation receipt "
          "refund_policy service_documentation shipping_documentation uncategorized_file").split()
EXPANDABLE = {
    "checkout.session": {"payment_intent", "line_items", "shipping_cost.shipping_rate", "customer", "invoice",
                         "subscription", "setup_intent", "payment_link", "discounts.coupon",
                         "discounts.promotion_code"},
    "promotion_code": {"promotion.coupon", "customer"},
    "payment_intent": {"latest_charge", "customer", "payment_method", "review", "application", "on_behalf_of",
                       "transfer_data.destination"},
    "charge": {"payment_intent", "customer", "refunds", "review", "application", "application_fee",
               "balance_transaction", "failure_balance_transaction", "on_behalf_of", "source_transfer", "transfer",
               "transfer_data.destination"},
    "refund": {"charge", "payment_intent", "balance_transaction", "failure_balance_transaction",
               "source_transfer_reversal", "transfer_reversal"},
    "dispute": {"charge", "payment_intent", *(f"evidence.{name}" for name in _FILES)},
    "item": {"price"},
}
VIRTUAL = {"line_items", "refunds"}  # lists made at expansion time, not ids: virtual(obj, field) makes them
MAX_LEVELS = 4  # https://docs.stripe.com/expand#limits


def expand(obj, paths, load, virtual=None):
    """Replace ids with objects along dotted `expand[]` paths; `load(id)` fetches, `virtual(obj, field)` computes."""
    for path in paths:
        if path.count(".") >= MAX_LEVELS:
            raise invalid(f"You cannot expand more than {MAX_LEVELS} levels of a property. Property: {path}",
                          "expand")
        _expand_one(obj, path.split("."), path, load, virtual)
    return obj


def _expand_one(obj, parts, full, load, virtual):
    if obj is None or not parts:
        return
    if obj.get("object") == "list":
        if parts[0] != "data":
            raise invalid(f"This property cannot be expanded ({full}).", "expand")
        for entry in obj["data"]:
            _expand_one(entry, parts[1:], full, load, virtual)
        return
    field, rest = parts[0], parts[1:]
    allowed = EXPANDABLE.get(obj.get("object"), set())
    two = ".".join(parts[:2])
    if len(parts) > 1 and two in allowed and isinstance(obj.get(field), list):
        # a field of each hash in an array, e.g. a session's discounts.promotion_code
        for entry in obj[field]:
            if isinstance(entry, dict):
                _expand_key(obj, entry, parts[1], parts[2:], full, load, virtual)
        return
    if len(parts) > 1 and two in allowed and isinstance(obj.get(field), dict):
        holder, key, rest = obj[field], parts[1], parts[2:]
    elif field in allowed:
        holder, key = obj, field
    elif len(parts) > 1 and two in allowed and obj.get(field) is None:
        return  # e.g. shipping_cost.shipping_rate on a session without shipping: null stays null
    else:
        raise invalid(f"This property cannot be expanded ({full}).", "expand")
    _expand_key(obj, holder, key, rest, full, load, virtual)


def _expand_key(obj, holder, key, rest, full, load, virtual):
    """Expand `holder[key]` (a field of `obj` itself or of a hash inside it), then the rest of the path."""
    if key not in holder and key not in VIRTUAL:  # not a field of this object in this API version
        raise invalid(f"This property cannot be expanded ({full}).", "expand")
    value = holder.get(key)
    if key in VIRTUAL and virtual is not None:
        value = holder[key] = virtual(obj, key)
    elif isinstance(value, str):
        loaded = load(value)
        if loaded is None:  # an id the stand-in does not keep: say so, never answer null for it
            raise invalid(f"This property cannot be expanded ({full}).", "expand")
        value = holder[key] = loaded
    _expand_one(value, rest, full, load, virtual) if isinstance(value, dict) else None
