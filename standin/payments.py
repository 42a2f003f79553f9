"""Card payments on a Checkout Session (test cards), delayed settlement, refunds and disputes."""
import hashlib
import re
import time
import uuid

from webshop.iso_codes import THREE_DECIMAL, ZERO_DECIMAL

from . import checkout
from . import objects as o
from .errors import invalid, no_such

ASYNC_OK = "4000009900000004"
ASYNC_FAIL = "4000009900000012"
DISPUTED = "4000000000000259"
INQUIRY = "4000000000001976"
# number -> (brand, behaviour, decline_code); https://docs.stripe.com/testing#cards and #declined-payments.
# The two 40000099... numbers are the stand-in's own: Luhn-valid cards that settle later, like a delayed method.
# The "authenticate" cards ask for 3D Secure on a one-off payment, as Checkout makes one:
# https://docs.stripe.com/testing#regulatory-cards and #authentication-and-setup.
CARDS = {
    "4242424242424242": ("visa", "succeed", None),
    "5555555555554444": ("mastercard", "succeed", None),
    "4000000000000002": ("visa", "decline", "generic_decline"),
    "4000000000009995": ("visa", "decline", "insufficient_funds"),
    "4000000000000069": ("visa", "decline", "expired_card"),
    "4000000000000127": ("visa", "decline", "incorrect_cvc"),
    DISPUTED: ("visa", "dispute", None),
    INQUIRY: ("visa", "inquiry", None),
    ASYNC_OK: ("visa", "async_succeed", None),
    ASYNC_FAIL: ("visa", "async_fail", None),
    "4000002500003155": ("visa", "authenticate", None),
    "4000002760003184": ("visa", "authenticate", None),
    "4000000000003220": ("visa", "authenticate", None),
}
# Customer-facing decline messages: https://docs.stripe.com/declines/codes
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "test_mode_live_card": "Your card was declined. Your request was in test mode, but used a non test card.",
}
# What Stripe tells the shopper when 3D Secure authentication fails (code payment_intent_authentication_failure):
# https://docs.stripe.com/error-codes#payment-intent-authentication-failure
AUTHENTICATION_FAILED = ("We are unable to authenticate your payment method. Please choose a different payment "
                         "method and try again.")
# ... and what the API says of it on the PaymentIntent's last_payment_error (for developers)
AUTHENTICATION_FAILED_API = ("The provided payment method has failed authentication. Provide a new payment method to "
                             "attempt to fulfill this PaymentIntent again.")

# Tax IDs the page offers when tax_id_collection is on: type -> (label, example, pattern of the value with spaces
# and dots taken out, countries it is for). Stripe knows many more types (https://docs.stripe.com/tax/checkout/tax-ids);
# the patterns are the stand-in's own rough checks of the formats, not Stripe's.
EU = "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
TAX_ID_TYPES = {
    "au_abn": ("Australian Business Number (ABN)", "12345678912", r"[0-9]{11}", ["AU"]),
    "ca_bn": ("Canadian Business Number (BN)", "123456789", r"[0-9]{9}", ["CA"]),
    "ch_vat": ("Swiss VAT number", "CHE-123.456.789 MWST", r"CHE-?[0-9]{9}(MWST|TVA|IVA)", ["CH"]),
    "eu_vat": ("European VAT number", "DE123456789",
               r"(AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|XI)[0-9A-Z+*]{8,12}",
               EU),
    "gb_vat": ("United Kingdom VAT number", "GB123456789", r"GB([0-9]{9}|[0-9]{12})", ["GB"]),
    "no_vat": ("Norwegian VAT number", "123456789MVA", r"[0-9]{9}MVA", ["NO"]),
    "nz_gst": ("New Zealand GST number", "123456789", r"[0-9]{8,9}", ["NZ"]),
    "us_ein": ("United States EIN", "12-3456789", r"[0-9]{2}-?[0-9]{7}", ["US"]),
}
TAX_ID_FOR_COUNTRY = {c: t for t, (_, _, _, countries) in TAX_ID_TYPES.items() for c in countries}


class PayError(Exception):
    """A payment attempt the shopper must fix: 400 bad input, 402 declined, 404/410 session not payable."""

    def __init__(self, status, message, field=None, decline_code=None):
        super().__init__(message)
        self.status, self.message, self.field, self.decline_code = status, message, field, decline_code


class AuthenticationRequired(PayError):
    """The card asks for 3D Secure: the shopper must complete or fail the test authentication page first."""

    def __init__(self):
        super().__init__(402, "This card requires authentication: complete or fail the test 3D Secure page.", "card")


def luhn_ok(number):
    """True when the digits pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def validate(session, form, now=None):
    """Clean a payment form (dict of strings) for this session, or raise PayError(400) naming the field."""
    f = {k: (v.strip() if isinstance(v, str) else v) for k, v in form.items()}
    email = f.get("email") or ""
    # No control characters, and no longer than a mail server takes (RFC 5321's 254): Checkout refuses such emails.
    part = r"[^@\s\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+"  # and no bidirectional controls
    if len(email) > 254 or not re.fullmatch(rf"{part}@{part}\.{part}", email):
        raise PayError(400, "Enter a valid email address.", "email")
    if not f.get("name"):
        raise PayError(400, "Enter your full name.", "name")
    addr = {k: (f.get("address") or {}).get(k) or None for k in ("line1", "line2", "city", "postal_code", "state",
                                                                   "country")}
    allowed = (session["shipping_address_collection"] or {}).get("allowed_countries")
    if not addr["country"] or (allowed and addr["country"] not in allowed):
        raise PayError(400, "Choose a country we can ship to." if allowed else "Choose your country.", "country")
    if allowed:
        for key, label in (("line1", "street address"), ("city", "city"), ("postal_code", "postal code")):
            if not addr[key]:
                raise PayError(400, f"Enter your {label}.", key)
    phone = f.get("phone") or None
    if session["phone_number_collection"]["enabled"] and not (phone and re.fullmatch(r"\+?[0-9 ()\-]{6,20}", phone)):
        raise PayError(400, "Enter a valid phone number.", "phone")
    try:
        option = int(f.get("shipping_option_index") or 0)
    except ValueError:
        option = -1
    if not 0 <= option < max(1, len(session["_rates"])):
        raise PayError(400, "Choose a shipping option.", "shipping_option")
    number = re.sub(r"[\s-]", "", f.get("card") or "") or None  # None: no card given (a free order needs none)
    month = year = 0
    if number or f.get("expiry") or f.get("cvc"):
        if not (number and re.fullmatch(r"[0-9]{12,19}", number) and luhn_ok(number)):
            raise PayError(400, "Your card number is invalid.", "card")
        # MM / YY as Checkout's field shows it, or the digits alone (its field puts the slash in as they are typed)
        m = re.fullmatch(r"([0-9]{1,2})\s*/\s*([0-9]{2}|[0-9]{4})|([0-9]{2})\s*([0-9]{2}|[0-9]{4})",
                         f.get("expiry") or "")
        month, year = (int(m[1] or m[3]), int(m[2] or m[4])) if m else (0, 0)
        year += 2000 if year < 100 else 0
        today = time.gmtime(now or time.time())
        if not 1 <= month <= 12 or (year, month) < (today.tm_year, today.tm_mon) or year > today.tm_year + 50:
            raise PayError(400, "Your card's expiration date is invalid or in the past.", "expiry")
        if not re.fullmatch(r"[0-9]{3,4}", f.get("cvc") or ""):
            raise PayError(400, "Your card's security code is incomplete.", "cvc")
    tax_id = _tax_id(session, f.get("tax_id_type") or "", f.get("tax_id_value") or "", addr["country"])
    code = f.get("promotion_code") or ""
    if code and not session["allow_promotion_codes"]:
        raise PayError(400, "This checkout does not accept promotion codes.", "promotion_code")
    if terms_required(session) and f.get("terms") not in (True, "accepted"):
        raise PayError(400, "Please accept the terms of service to continue.", "terms")
    # The shopper's answer on the test 3D Secure page, for the cards that ask for one
    authentication = f.get("authentication") if f.get("authentication") in ("complete", "fail") else None
    return {"email": email, "name": f["name"], "phone": phone, "address": addr, "option": option,
            "number": number, "exp_month": month, "exp_year": year, "cardholder": f.get("cardholder") or f["name"],
            "tax_id": tax_id, "promotion_code": code, "authentication": authentication}


def terms_required(session):
    """True when the shopper must tick the terms of service box (consent_collection[terms_of_service]=required)."""
    return (session["consent_collection"] or {}).get("terms_of_service") == "required"


def _tax_id(session, type_, value, country):
    """The shopper's tax ID as {"type", "value"}, None when left out, or PayError(400) naming the field."""
    collection = session.get("tax_id_collection") or {"enabled": False, "required": "never"}
    if not collection["enabled"]:
        if value:
            raise PayError(400, "This checkout does not collect tax IDs.", "tax_id_value")
        return None
    if not value:
        if collection["required"] == "if_supported" and country in TAX_ID_FOR_COUNTRY:
            raise PayError(400, "Enter your tax ID.", "tax_id_value")
        return None
    type_ = type_ or TAX_ID_FOR_COUNTRY.get(country, "")  # the usual one for the shopper's country
    if type_ not in TAX_ID_TYPES:
        raise PayError(400, "Choose the type of your tax ID.", "tax_id_type")
    label, example, pattern, _ = TAX_ID_TYPES[type_]
    if not re.fullmatch(pattern, re.sub(r"[\s.]", "", value.upper())):
        raise PayError(400, f"Enter a valid {label}, such as {example}.", "tax_id_value")
    return {"type": type_, "value": value}


def attempt(ctx, session, c):
    """Confirm the session's payment with a cleaned form: ("paid"|"processing", None) or ("declined", PayError);
    AuthenticationRequired for a 3D Secure card until the shopper answers its test challenge."""
    if session["status"] != "open":
        raise PayError(410 if session["status"] == "expired" else 409, f"This checkout session is {session['status']}.")
    allowed = session["shipping_address_collection"]
    discount = c.get("discount")
    # This attempt's code is on the session from now on: a declined try leaves it there, a try without one takes it off
    session["discounts"] = ([{"coupon": discount["coupon"]["id"], "promotion_code": discount["promotion_code"]["id"]}]
                            if discount else [])
    checkout.compute(session, c["address"]["country"], c["option"], discount and discount["coupon"])
    check_minimum(session, discount)
    if session["amount_total"] == 0:  # https://docs.stripe.com/payments/checkout/no-cost-orders: no card is collected
        pi = ctx.tx.get(session["payment_intent"]) if session["payment_intent"] else None
        if pi is not None:  # an earlier declined try made one: nothing will be paid with it now
            pi.update(status="canceled", canceled_at=ctx.now, cancellation_reason="abandoned")
            ctx.tx.put(pi)
            ctx.emit("payment_intent.canceled", pi)
        _complete(session, c, "no_payment_required")
        session["payment_intent"] = None
        ctx.tx.put(session)
        ctx.emit("checkout.session.completed", session)
        return "paid", None
    if c["number"] is None:  # given no card while the total was nothing (another shipping option since, say)
        raise PayError(400, f"The total is now {money(session['amount_total'], session['currency'])}: enter your "
                       "card to pay it.", "card")
    brand, behaviour, decline = CARDS.get(c["number"], (_brand(c["number"]), "decline", "test_mode_live_card"))
    if behaviour == "authenticate" and not c.get("authentication"):
        raise AuthenticationRequired()  # nothing is kept until the shopper answers the test 3D Secure page
    pi = ctx.tx.get(session["payment_intent"]) if session["payment_intent"] else None
    if pi is None:
        pi = o.payment_intent(session, ctx.now)
        session["payment_intent"] = pi["id"]
        ctx.emit("payment_intent.created", pi)
    shipping = ({"address": c["address"], "name": c["name"], "carrier": None, "phone": c["phone"],
                 "tracking_number": None} if allowed else None)
    card = {"brand": brand, "last4": c["number"][-4:],
            "fingerprint": hashlib.sha256(c["number"].encode()).hexdigest()[:16]}
    billing = {"address": {**o.empty_address(), "country": c["address"]["country"],
                           "postal_code": c["address"]["postal_code"]},
               "email": c["email"], "name": c["cardholder"], "phone": c["phone"], "tax_id": None}
    pm = ctx.tx.put(o.payment_method(card, c["exp_month"], c["exp_year"], billing, ctx.now))
    pi.update(amount=session["amount_total"], payment_method=pm["id"], shipping=shipping)
    details = o.card_details(card, c["exp_month"], c["exp_year"], checks_pass=behaviour != "decline")
    if behaviour == "decline":
        return _decline(ctx, session, pi, pm, billing, details, decline)
    if behaviour == "authenticate":
        if c["authentication"] == "fail":
            return _authentication_failed(ctx, session, pi, pm)
        details["three_d_secure"] = three_d_secure()
    pending = behaviour.startswith("async")
    outcome = o.outcome("approved_by_network", "authorized", "Payment complete.")
    ch = o.charge(pi, ctx.now, billing, details, outcome, "pending" if pending else "succeeded")
    ch["_behaviour"] = behaviour
    pi.update(latest_charge=ch["id"], last_payment_error=None, status="processing" if pending else "succeeded",
              amount_received=0 if pending else pi["amount"])
    _complete(session, c, "unpaid" if pending else "paid")
    if pending:
        session["_settle_at"] = time.time() + ctx.async_delay
    for obj in (ch, pi, session):
        ctx.tx.put(obj)
    # What a card payment in Checkout emits: https://docs.stripe.com/checkout/fulfillment (the session's event last)
    ctx.emit("charge.pending" if pending else "charge.succeeded", ch)
    ctx.emit("payment_intent.processing" if pending else "payment_intent.succeeded", pi)
    ctx.emit("checkout.session.completed", session)
    if behaviour in ("dispute", "inquiry"):
        open_dispute(ctx, ch, inquiry=behaviour == "inquiry")
    return ("processing" if pending else "paid"), None


def _complete(session, c, payment_status):
    """The session completed with what the shopper entered."""
    allowed = session["shipping_address_collection"]
    # `url` is only present while the session is open (spec: checkout.session.url)
    session.update(status="complete", payment_status=payment_status, url=None,
                   customer_details={"address": c["address"], "business_name": None, "email": c["email"],
                                     "individual_name": None, "name": c["name"], "phone": c["phone"],
                                     "tax_exempt": "none", "tax_ids": [c["tax_id"]] if c.get("tax_id") else []},
                   consent={"promotions": None, "terms_of_service": "accepted" if terms_required(session) else None}
                   if session["consent_collection"] else None,
                   collected_information={"business_name": None, "individual_name": None,
                                          "shipping_details": {"address": c["address"], "name": c["name"]}
                                          if allowed else None})


def check_minimum(session, discount):
    """A discount may not take the total below the smallest amount Stripe charges: PayError(400) if it does."""
    minimum = checkout.minimum_charge(session["currency"])
    if discount and 0 < session["amount_total"] < minimum:  # nothing at all to pay is a no-cost order
        raise PayError(400, f'With the promotion code "{discount["promotion_code"]["code"]}" the total would be '
                       f"{money(session['amount_total'], session['currency'])}, below the smallest amount that can "
                       f"be charged ({money(minimum, session['currency'])}).", "promotion_code")


def _brand(number):
    return {"4": "visa", "5": "mastercard", "3": "amex"}.get(number[0], "unknown")


def _decline(ctx, session, pi, pm, billing, details, code):
    message = DECLINE_MESSAGES.get(code, DECLINE_MESSAGES["generic_decline"])
    failure = ("card_declined", message) if code not in ("expired_card", "incorrect_cvc") else (code, message)
    seller = ("The bank did not return any further details with this decline." if code == "generic_decline"
              else f"The bank returned the decline code `{code}`.")
    outcome = o.outcome("declined_by_network", "issuer_declined", seller, reason=code)
    ch = o.charge(pi, ctx.now, billing, details, outcome, "failed", failure)
    pi.update(latest_charge=ch["id"], status="requires_payment_method",
              last_payment_error=o.card_error(failure[0], code, message, ch["id"], pm))
    for obj in (ch, pi, session):
        ctx.tx.put(obj)
    ctx.emit("charge.failed", ch)
    ctx.emit("payment_intent.payment_failed", pi)
    return "declined", PayError(402, message, "card", code)


def three_d_secure():
    """A charge's `payment_method_details.card.three_d_secure` after the shopper passed the test challenge."""
    # https://docs.stripe.com/api/charges/object#charge_object-payment_method_details-card-three_d_secure
    return {"authentication_flow": "challenge", "electronic_commerce_indicator": "05", "exemption_indicator": None,
            "result": "authenticated", "result_reason": None, "transaction_id": str(uuid.uuid4()),
            "version": "2.2.0"}


def _authentication_failed(ctx, session, pi, pm):
    """The shopper failed 3D Secure: no charge is made and the PaymentIntent asks for another payment method."""
    pi.update(status="requires_payment_method",
              last_payment_error=o.authentication_error(AUTHENTICATION_FAILED_API, pm))
    for obj in (pi, session):
        ctx.tx.put(obj)
    ctx.emit("payment_intent.payment_failed", pi)
    return "declined", PayError(402, AUTHENTICATION_FAILED, "card")


def settle(ctx, session):
    """Finish a delayed payment: success marks the session paid, failure leaves it unpaid (events either way)."""
    session.pop("_settle_at", None)
    pi = ctx.tx.get(session["payment_intent"])
    ch = ctx.tx.get(pi["latest_charge"])
    if ch["_behaviour"] == "async_succeed":
        ch.update(status="succeeded", paid=True, captured=True, amount_captured=ch["amount"],
                  balance_transaction=o.new_id("txn_"))
        ch["payment_method_details"]["card"]["overcapture"]["maximum_amount_capturable"] = ch["amount"]
        pi.update(status="succeeded", amount_received=pi["amount"])
        session["payment_status"] = "paid"
        kind, charge_kind, intent_kind = ("checkout.session.async_payment_succeeded", "charge.succeeded",
                                          "payment_intent.succeeded")
    else:
        ch.update(status="failed", failure_code="card_declined", failure_message="Your card was declined.",
                  outcome=o.outcome("declined_by_network", "issuer_declined",
                                    "The bank did not return any further details with this decline.",
                                    reason="generic_decline"))
        pi.update(status="requires_payment_method",
                  last_payment_error=o.card_error("card_declined", "generic_decline", ch["failure_message"], ch["id"],
                                                  ctx.tx.get(pi["payment_method"])))
        kind, charge_kind, intent_kind = ("checkout.session.async_payment_failed", "charge.failed",
                                          "payment_intent.payment_failed")
    for obj in (ch, pi, session):
        ctx.tx.put(obj)
    ctx.emit(charge_kind, ch)
    ctx.emit(intent_kind, pi)
    ctx.emit(kind, session)


def open_dispute(ctx, ch, inquiry=False):
    """Open a dispute on a charge (charge.dispute.created), or an inquiry, which takes no money and leaves the charge
    refundable: https://docs.stripe.com/disputes/how-disputes-work."""
    dp = ctx.tx.put(o.dispute(ch, ctx.now, inquiry=inquiry))
    ch["disputed"] = True
    ctx.tx.put(ch)
    ctx.emit("charge.dispute.created", dp)
    return dp


def close_dispute(ctx, dispute_id, won):
    """Close a dispute as won or lost (charge.dispute.closed)."""
    dp = ctx.tx.get(dispute_id, "dispute")
    if dp is None:
        raise no_such("dispute", dispute_id)
    if dp["status"] in ("won", "lost", "warning_closed"):
        raise invalid(f"Dispute {dispute_id} is already closed ({dp['status']}).")
    prev = {"status": dp["status"]}
    dp["status"] = "warning_closed" if dp["status"].startswith("warning_") else "won" if won else "lost"
    ctx.tx.put(dp)
    ctx.emit("charge.dispute.closed", dp, prev)
    return dp


def money(amount, currency):
    """Human amount for error messages, e.g. "$21.45"."""
    symbol = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}.get(currency)
    exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    whole, fraction = divmod(amount, 10 ** exponent)
    value = f"{whole:,}.{fraction:0{exponent}d}" if exponent else f"{whole:,}"
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def create_refund(ctx, p):
    """POST /v1/refunds: https://docs.stripe.com/api/refunds/create."""
    if not p.get("payment_intent") and not p.get("charge"):
        raise invalid("One of the following params should be provided for this request: payment_intent or charge.",
                      None, "parameter_missing")
    if p.get("charge"):
        ch = ctx.tx.get(p["charge"], "charge")
        if ch is None:
            raise no_such("charge", p["charge"], "charge")
        if p.get("payment_intent") and ch["payment_intent"] != p["payment_intent"]:
            raise invalid("The charge does not belong to the given payment_intent.", "charge")
    else:
        pi = ctx.tx.get(p["payment_intent"], "payment_intent")
        if pi is None:
            raise no_such("payment_intent", p["payment_intent"], "payment_intent")
        ch = ctx.tx.get(pi["latest_charge"]) if pi["latest_charge"] else None
        if ch is None or pi["status"] != "succeeded":
            raise invalid(f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                          "payment_intent")
    if ch["status"] != "succeeded":
        raise invalid(f"Charge {ch['id']} has not succeeded and cannot be refunded.", "charge")
    disputes = ctx.tx.list("dispute", 1, None, None, [("charge", ch["id"])], None)[0] if ch["disputed"] else []
    if disputes and not disputes[0]["is_charge_refundable"]:
        raise invalid(f"Charge {ch['id']} has been charged back; cannot issue a refund.", None, "charge_disputed")
    remaining = ch["amount"] - ch["amount_refunded"]
    if remaining <= 0:
        raise invalid(f"Charge {ch['id']} has already been refunded.", None, "charge_already_refunded")
    amount = p.get("amount", remaining)
    if amount > remaining:
        raise invalid(f"Refund amount ({money(amount, ch['currency'])}) is greater than unrefunded amount on charge "
                      f"({money(remaining, ch['currency'])})", "amount", "amount_too_large")
    re_ = ctx.tx.put(o.refund(ch, amount, p.get("reason"), p.get("metadata"), ctx.now))
    before = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
    ch["amount_refunded"] += amount
    ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
    prev = {k: v for k, v in before.items() if ch[k] != v}  # what changed, as Stripe lists it
    ctx.tx.put(ch)
    ctx.emit("charge.refunded", ch, prev)
    ctx.emit("refund.created", re_)
    return re_


def fail_refund(ctx, refund_id):
    """A card refund the bank sent back (a closed card, say): the money returns to the balance and the charge's
    refunded total goes down (https://docs.stripe.com/refunds#failed-refunds)."""
    re_ = ctx.tx.get(refund_id, "refund")
    if re_ is None or re_["status"] != "succeeded":
        raise invalid(f"Refund {refund_id} cannot fail: no such succeeded refund.", "refund")
    ch = ctx.tx.get(re_["charge"], "charge")
    re_.update(status="failed", failure_reason="expired_or_canceled_card", failure_balance_transaction=o.new_id("txn_"))
    ch.update(amount_refunded=ch["amount_refunded"] - re_["amount"], refunded=False)
    ctx.tx.put(re_)
    ctx.tx.put(ch)
    ctx.emit("refund.failed", re_, {"status": "succeeded"})
    ctx.emit("charge.refund.updated", re_, {"status": "succeeded"})
    return re_
