"""The hosted-style payment page at /offline-checkout/<session_id>, imitating Stripe Checkout in test mode.

Its templates (standin/views) and stylesheet (standin/static) are its own: the page looks the same in any Bottle
app it is installed in, and its CSS is served under its own prefix, not from the app's /static."""
import copy
import hmac
import re
from hashlib import sha256
from pathlib import Path

import bottle

from . import checkout, promotions
from .payments import (CARDS, DECLINE_MESSAGES, TAX_ID_FOR_COUNTRY, TAX_ID_TYPES, AuthenticationRequired, PayError,
                       check_minimum, money)
from .schemas import COUNTRIES

HERE = Path(__file__).resolve().parent
VIEWS = str(HERE / "views")
STATIC = str(HERE / "static")
# One list for every render: bottle caches a compiled template by (id(template_lookup), name), so a list that
# lives as long as the module keeps the template compiled once, under a key no template of the host app shares.
LOOKUP = [VIEWS]
PREFIX = "/offline-checkout"
CSS_URL = f"{PREFIX}/static/standin.css"
ADDRESS = ("line1", "line2", "city", "postal_code", "state", "country")
FIELDS = ("email", "name", "phone", *(f"address_{k}" for k in ADDRESS), "shipping_option", "card_expiry",
          "cardholder_name", "promotion_code", "tax_id_type", "tax_id_value",
          "terms")  # echoed back on errors; never the card number or CVC
# payments.validate() names for the fields the page does not call the same
ERROR_FIELDS = {"card": "card_number", "expiry": "card_expiry", "cvc": "card_cvc", "shipping_option": "shipping_option",
                **{k: f"address_{k}" for k in ADDRESS}}
# A Markdown link in custom_text, the one piece of Markdown the page renders (after escaping everything)
LINK = re.compile(r"\[([^\[\]]+)\]\((https?://[^\s()]+)\)")
TEST_CARDS = [
    ("4242 4242 4242 4242", "Succeeds"),
    ("4000 0000 0000 0002", "Declined (generic_decline)"),
    ("4000 0000 0000 9995", "Declined (insufficient_funds)"),
    ("4000 0000 0000 0069", "Declined (expired_card)"),
    ("4000 0000 0000 0127", "Declined (incorrect_cvc)"),
    ("4000 0000 0000 0259", "Succeeds, then is disputed"),
    ("4000 0000 0000 1976", "Succeeds, then the bank inquires"),
    ("4000 0099 0000 0004", "Delayed payment that later succeeds"),
    ("4000 0099 0000 0012", "Delayed payment that later fails"),
    ("4000 0025 0000 3155", "Requires authentication (3D Secure)"),
    ("4000 0027 6000 3184", "Always requires authentication (3D Secure)"),
    ("4000 0000 0000 3220", "Requires 3D Secure 2 authentication"),
]
assert all(c.replace(" ", "") in CARDS for c, _ in TEST_CARDS)


def install(standin, app):
    """Route GET/POST /offline-checkout/<session_id> on a Bottle app to the payment page, and GET its stylesheet."""
    def handler(session_id):
        return page(standin, session_id)
    app.route(CSS_URL, "GET", stylesheet, name="standin_css")
    app.route(PREFIX + "/<session_id>", ["GET", "POST"], handler, name="standin_pay")


def stylesheet():
    """standin/static/standin.css (bottle answers HEAD and conditional requests from the same route)."""
    res = bottle.static_file("standin.css", root=STATIC, mimetype="text/css")
    if res.status_code == 416:  # a malformed or unsatisfiable Range: the whole file (RFC 9110, 14.2 allows it)
        bottle.request.environ.pop("HTTP_RANGE", None)
        res = bottle.static_file("standin.css", root=STATIC, mimetype="text/css")
    res.set_header("Cache-Control", "public, max-age=3600")
    return res


def pay_token(standin, session_id):
    """A per-session form token, so other sites cannot submit the payment form blind."""
    return hmac.new(standin.webhook_secret.encode(), f"pay:{session_id}".encode(), sha256).hexdigest()[:32]


def page(standin, session_id):
    """Render the page, or take a payment attempt and redirect / re-render like Checkout."""
    req, resp = bottle.request, bottle.response
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("X-Robots-Tag", "noindex")
    session = standin.peek_session(session_id)
    if session is None:
        return message(404, "Checkout session not found", "This payment link is not valid.", None)
    if session["status"] == "complete":
        return redirect(session)
    if session["status"] == "expired":
        return message(410, "This checkout session has expired",
                       # Expired by the clock, or by the shop (a newer checkout): the page cannot tell which.
                       "This checkout is no longer active, and nothing was charged. Go back to the shop to "
                       "start again.",
                       session["cancel_url"] or session["success_url"])
    if req.method != "POST":
        return render(standin, session, {}, None, 200)
    try:
        req.forms
    except (ValueError, bottle.MultipartError):  # never the parser's own words on the page
        return render(standin, session, {}, "The form could not be read. Please try again.", 400)
    form = {k: req.forms.getunicode(k, default="") or "" for k in FIELDS + ("card_number", "card_cvc", "pay_token")}
    if not hmac.compare_digest(form["pay_token"].encode(), pay_token(standin, session_id).encode()):  # bytes: any input
        return render(standin, session, form, "This form has expired. Please check your details and try again.", 400)
    action = req.forms.get("action")
    if action == "update":  # without JavaScript, the shopper asks for the total to be worked out
        return render(standin, session, form, None, 200)
    if action == "remove_code":
        return render(standin, session, dict(form, promotion_code=""), None, 200)
    if action == "apply_code":
        return apply_code(standin, session, form)
    if form["promotion_code"].strip() and session["allow_promotion_codes"]:  # typed, then Pay rather than Apply
        why = code_problem(standin, session, form)
        if why:  # said before "the total is now": the code is why it changed
            return render(standin, session, form, why, 400, "promotion_code")
    total = _preview(standin, session, form)[0]["amount_total"]
    shown = req.forms.getunicode("shown", default="")  # the final total the page showed, if it showed one
    if re.fullmatch(r"[0-9]{1,15}", shown) and total > int(shown):  # a country or shipping changed: never charge more
        return render(standin, session, form, f"With your changes the total is now {money(total, session['currency'])}"
                      ". Check it, then press Pay.", 200)
    if total == 0:  # nothing to pay, as the page says: no card is read
        form = dict(form, card_number="", card_expiry="", card_cvc="")
    data = {"email": form["email"], "name": form["name"], "phone": form["phone"],
            "address": {k: form[f"address_{k}"] for k in ADDRESS}, "shipping_option_index": form["shipping_option"],
            "card": form["card_number"], "expiry": form["card_expiry"], "cvc": form["card_cvc"],
            "cardholder": form["cardholder_name"], "promotion_code": form["promotion_code"], "terms": form["terms"],
            "tax_id_type": form["tax_id_type"], "tax_id_value": form["tax_id_value"],
            "authentication": req.forms.getunicode("authentication", default="") or ""}
    try:
        session, result, err = standin.submit_payment(session_id, data)
    except AuthenticationRequired:
        return challenge(standin, session, form)
    except PayError as e:
        if e.status in (404, 409, 410):  # the session changed state under us: show its current page
            return page_after_race(standin, session_id)
        return render(standin, session, form, e.message, e.status, ERROR_FIELDS.get(e.field, e.field))
    if err:  # a decline names its code; a failed 3D Secure has Stripe's own words
        text, reason = err.message, err.decline_code
        if reason:
            detail = DECLINE_MESSAGES.get(reason, "").removeprefix("Your card was declined.").strip()
            detail = f" {detail}" if detail else ""
            text = f"Your card was declined.{detail} (decline code: {reason})"
        field = {"expired_card": "card_expiry", "incorrect_cvc": "card_cvc"}.get(reason, "card_number")
        return render(standin, standin.peek_session(session_id), form, text, 402, field)
    return redirect(session)


def challenge(standin, session, form):
    """The test 3D Secure page: Complete or Fail posts the payment form again, with the shopper's answer."""
    # What Stripe's test mode shows for its authentication cards: https://docs.stripe.com/testing#regulatory-cards
    hidden = [(k, form[k]) for k in FIELDS + ("card_number", "card_cvc", "pay_token")]
    bottle.response.status = 200
    return bottle.template("authenticate", template_lookup=LOOKUP, css=CSS_URL, business=standin.business_name,
                           hidden=hidden, action=f"{PREFIX}/{session['id']}")


def apply_code(standin, session, form):
    """The shopper's Apply: the page again with the code's discount in the totals, or the reason it cannot be used."""
    why = code_problem(standin, session, form) if form["promotion_code"].strip() else "Enter a promotion code."
    return render(standin, session, form, why, 400 if why else 200, "promotion_code" if why else None)


def code_problem(standin, session, form):
    """Why the typed promotion code cannot be used with the form's choices, or None."""
    discount, why = standin.check_promotion_code(session, form["promotion_code"].strip())
    if discount:
        country, option = _choices(session, form)
        preview = checkout.compute(copy.deepcopy(session), country, option, discount["coupon"])
        try:
            check_minimum(preview, discount)
        except PayError as e:
            why = e.message
    return why


def page_after_race(standin, session_id):
    bottle.request.environ["REQUEST_METHOD"] = "GET"
    return page(standin, session_id)


def redirect(session):
    """303 to success_url with {CHECKOUT_SESSION_ID} filled in: https://docs.stripe.com/payments/checkout/custom-success-page."""
    bottle.response.status = 303
    bottle.response.set_header("Location", session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"]))
    return ""


def message(status, title, text, back_url):
    bottle.response.status = status
    return bottle.template("message", template_lookup=LOOKUP, css=CSS_URL, title=title, text=text, back_url=back_url)


def _choices(session, form):
    """(country, shipping option index) from the form, where the session allows them."""
    allowed = (session["shipping_address_collection"] or {}).get("allowed_countries")
    countries = allowed or sorted(COUNTRIES - {"ZZ", "AC", "TA", "XK"})
    try:
        option = int(form.get("shipping_option") or 0)
    except ValueError:
        option = 0
    option = option if 0 <= option < len(session["_rates"]) else 0
    country = form.get("address_country") if form.get("address_country") in countries else None
    return country, option


def terms_html(session):
    """The terms of service checkbox's label: the custom text (escaped, its Markdown links made links) or the
    default wording."""
    custom = session["custom_text"]["terms_of_service_acceptance"]
    if not custom:
        return "I agree to the Terms of Service."
    text = bottle.html_escape(custom["message"])
    return LINK.sub(lambda m: f'<a href="{m.group(2)}" target="_blank" rel="noopener">{m.group(1)}</a>', text)


def _preview(standin, session, form):
    """(the session's totals for the form's country, shipping choice and code; the code's discount, if it applies)."""
    code = (form.get("promotion_code") or "").strip()
    discount = None
    if code and session["allow_promotion_codes"] and session["status"] == "open":
        discount, _ = standin.check_promotion_code(session, code)
    if session["status"] != "open":
        return session, discount
    return checkout.compute(copy.deepcopy(session), *_choices(session, form), discount and discount["coupon"]), discount


def render(standin, session, form, error, status, field=None):
    """The payment form with an order summary; totals preview the entered country, shipping choice and code."""
    allowed = (session["shipping_address_collection"] or {}).get("allowed_countries")
    countries = allowed or sorted(COUNTRIES - {"ZZ", "AC", "TA", "XK"})
    country, option = _choices(session, form)
    preview, discount = _preview(standin, session, form)
    cur = session["currency"]
    auto = session["automatic_tax"]["enabled"]
    items = [{"name": it["description"], "quantity": it["quantity"],
              "unit": money(it["price"]["unit_amount"], cur), "amount": money(it["amount_subtotal"], cur),
              "description": it["_product"].get("description")} for it in preview["_line_items"]]
    options = [{"index": i, "name": r["display_name"], "amount": money(r["fixed_amount"]["amount"], cur),
                "estimate": estimate(r["delivery_estimate"])} for i, r in enumerate(session["_rates"])]
    tax = preview["total_details"]["amount_tax"]
    off = preview["total_details"]["amount_discount"]
    behaviors = [it["price"]["tax_behavior"] for it in preview["_line_items"]] + [
        r.get("tax_behavior") for r in session["_rates"]]
    inclusive = all(behavior == "inclusive" for behavior in behaviors)
    summary = {
        "subtotal": money(preview["amount_subtotal"], cur),
        "discount": f"−{money(off, cur)}" if off else None,
        "discount_label": f"Discount ({discount['promotion_code']['code']})" if discount else None,
        "shipping": money(preview["total_details"]["amount_shipping"], cur) if options else None,
        "tax": (money(tax, cur) if country else "Calculated after you enter your address") if auto else None,
        "total": money(preview["amount_total"], cur),
        "tax_label": "Tax (included)" if inclusive else "Tax",
        # The amount on the Pay button is only promised once shipping and tax are known (tax in the prices, or
        # nothing to pay: always).
        "final": bool(country) or not auto or inclusive or preview["amount_total"] == 0,
        "free": preview["amount_total"] == 0,  # a 100% code: no card is asked for
    }
    values = {k: form.get(k, "") for k in FIELDS}
    values["email"] = values["email"] or session["customer_email"] or ""
    values["address_country"] = values["address_country"] or (countries[0] if len(countries) == 1 else "")
    values["shipping_option"] = str(option)
    values["tax_id_type"] = values["tax_id_type"] or TAX_ID_FOR_COUNTRY.get(country or values["address_country"], "")
    collection = session.get("tax_id_collection") or {"enabled": False, "required": "never"}
    shown = preview["amount_total"] if summary["final"] else ""  # the most a Pay press agrees to
    applied = (f"{discount['promotion_code']['code']} applied: {promotions.describe(discount['coupon'], cur)}"
               if discount and not (error and field == "promotion_code") else None)
    bottle.response.status = status
    return bottle.template(
        "pay", template_lookup=LOOKUP, css=CSS_URL, session_id=session["id"], business=standin.business_name,
        items=items, options=options, summary=summary, countries=countries, values=values, error=error,
        error_field=field, phone_required=session["phone_number_collection"]["enabled"],
        shipping=bool(allowed), cancel_url=session["cancel_url"], token=pay_token(standin, session["id"]),
        test_cards=TEST_CARDS, action=f"{PREFIX}/{session['id']}",
        promotion_codes=bool(session["allow_promotion_codes"]), applied=applied, shown=shown,
        terms=terms_html(session) if (session["consent_collection"] or {}).get("terms_of_service") == "required"
        else None,
        tax_ids=[(t, label) for t, (label, _, _, _) in TAX_ID_TYPES.items()] if collection["enabled"] else None,
        tax_id_required=collection["required"] == "if_supported")


def estimate(est):
    """"3–5 business days" from a shipping rate's delivery_estimate."""
    if not est or not est.get("minimum") or not est.get("maximum"):
        return ""
    lo, hi = est["minimum"], est["maximum"]
    unit = hi["unit"].replace("_", " ")
    plural = unit + ("s" if hi["value"] != 1 else "")
    if lo["unit"] == hi["unit"] and lo["value"] != hi["value"]:
        return f"{lo['value']}–{hi['value']} {plural}"
    return f"{hi['value']} {plural}"
