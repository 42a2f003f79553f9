"""Coupons and promotion codes: create, update, redeem on a Checkout Session, and lapse with time.

https://docs.stripe.com/payments/checkout/discounts: a coupon says how much comes off (a percentage, or an amount
in one currency); a promotion code is a customer-facing code for one coupon, with its own limits (expiry,
redemptions, a minimum order). Shoppers type codes on the payment page of sessions created with
`allow_promotion_codes`."""
import re

from . import objects as o
from .checkout import check_currency
from .errors import invalid, missing_param, no_such
from .forms import merge_metadata
from .payments import PayError, money

FIVE_YEARS = 5 * 365 * 24 * 3600
# What a promotion code may be made of (stripe.params.PromotionCodeCreateParams.code)
CODE_CHARS = re.compile(r"[A-Za-z0-9-]+")


# -- the API -----------------------------------------------------------------------------------------------------------
def create_coupon(ctx, p):
    """POST /v1/coupons: https://docs.stripe.com/api/coupons/create."""
    if p.get("id") is not None and ctx.tx.get(p["id"]) is not None:
        raise invalid("Coupon already exists.", "id", "resource_already_exists")
    if p.get("percent_off") is not None and p.get("amount_off") is not None:
        raise invalid("You may only specify one of these parameters: amount_off, percent_off.")
    if p.get("percent_off") is None and p.get("amount_off") is None:
        raise invalid("You must specify either `amount_off` or `percent_off`.", None, "parameter_missing")
    if p.get("amount_off") is not None and not p.get("currency"):
        raise missing_param("currency")
    if p.get("currency"):
        p["currency"] = check_currency(p["currency"], "currency")
    duration = p.get("duration") or "once"
    if duration == "repeating" and p.get("duration_in_months") is None:
        raise missing_param("duration_in_months")
    if duration != "repeating" and p.get("duration_in_months") is not None:
        raise invalid("`duration_in_months` can only be set when `duration` is `repeating`.", "duration_in_months")
    if p.get("redeem_by") is not None:
        if p["redeem_by"] <= ctx.now:
            raise invalid("Invalid redeem_by: must be in the future", "redeem_by")
        if p["redeem_by"] > ctx.now + FIVE_YEARS:
            raise invalid("Invalid redeem_by: cannot be more than 5 years in the future", "redeem_by")
    coupon = ctx.tx.put(o.coupon(dict(p, duration=duration), ctx.now))
    ctx.emit("coupon.created", coupon)
    return coupon


def create_promotion_code(ctx, p):
    """POST /v1/promotion_codes: https://docs.stripe.com/api/promotion_codes/create."""
    if not p["promotion"].get("coupon"):
        raise missing_param("promotion[coupon]")
    coupon = ctx.tx.get(p["promotion"]["coupon"], "coupon")
    if coupon is None:
        raise no_such("coupon", p["promotion"]["coupon"], "promotion[coupon]")
    if p.get("customer"):  # the stand-in keeps no customers
        raise no_such("customer", p["customer"], "customer")
    code = p.get("code")
    if code is None:
        code = _new_code(ctx.tx)
    elif not CODE_CHARS.fullmatch(code):
        raise invalid(f"Invalid code: {code}. Promotion codes may only contain letters (a-z, A-Z), digits (0-9) "
                      "and dashes (-).", "code")
    if p.get("expires_at") is not None:
        if p["expires_at"] <= ctx.now:
            raise invalid("The `expires_at` timestamp must be in the future.", "expires_at")
        if coupon["redeem_by"] is not None and p["expires_at"] > coupon["redeem_by"]:
            raise invalid("The promotion code's `expires_at` cannot be after its coupon's `redeem_by`.",
                          "expires_at")
    if (p.get("max_redemptions") is not None and coupon["max_redemptions"] is not None
            and p["max_redemptions"] > coupon["max_redemptions"]):
        raise invalid("The promotion code's `max_redemptions` cannot be greater than its coupon's "
                      "`max_redemptions`.", "max_redemptions")
    restrictions = p.get("restrictions") or {}
    if restrictions.get("minimum_amount") is not None and not restrictions.get("minimum_amount_currency"):
        raise missing_param("restrictions[minimum_amount_currency]")
    if restrictions.get("minimum_amount_currency") and restrictions.get("minimum_amount") is None:
        raise missing_param("restrictions[minimum_amount]")
    if restrictions.get("minimum_amount_currency"):
        restrictions["minimum_amount_currency"] = check_currency(restrictions["minimum_amount_currency"],
                                                                 "restrictions[minimum_amount_currency]")
    active = p.get("active", True)
    if active:
        if not coupon["valid"]:
            raise invalid(f"Coupon {coupon['id']} is no longer valid: a promotion code for it cannot be active.",
                          "promotion[coupon]")
        _check_unique(ctx.tx, code)
    promo = ctx.tx.put(o.promotion_code(dict(p, active=active, restrictions=restrictions), code, ctx.now))
    ctx.emit("promotion_code.created", promo)
    return promo


def get_promotion_code(ctx, promo_id):
    promo = ctx.tx.get(promo_id, "promotion_code")
    if promo is None:
        raise no_such("promotion_code", promo_id)
    return promo


def update_promotion_code(ctx, p, promo_id):
    """POST /v1/promotion_codes/{id}: https://docs.stripe.com/api/promotion_codes/update (active, metadata)."""
    promo = get_promotion_code(ctx, promo_id)
    previous = {}
    if p.get("active") is not None and p["active"] != promo["active"]:
        if p["active"]:
            # "A promotion code can only be reactivated when the coupon is still valid and the promotion code is
            # otherwise redeemable" (stripe.params.PromotionCodeUpdateParams.active)
            why = unredeemable(ctx.tx, promo, ctx.now, ignore_active=True)
            if why:
                raise invalid(f"This promotion code cannot be reactivated: {why}.", "active")
            _check_unique(ctx.tx, promo["code"])
        previous["active"] = promo["active"]
        promo["active"] = p["active"]
    if "metadata" in p:
        merged = merge_metadata(promo["metadata"], p["metadata"])
        changed = {k for k in set(merged) | set(promo["metadata"]) if merged.get(k) != promo["metadata"].get(k)}
        if changed:  # the earlier values of the keys that changed, null for the new ones
            previous["metadata"] = {k: promo["metadata"].get(k) for k in sorted(changed)}
            promo["metadata"] = merged
    ctx.tx.put(promo)
    if previous:
        ctx.emit("promotion_code.updated", promo, previous)
    return promo


def list_where(p):
    """GET /v1/promotion_codes filters as store conditions (`code` ignores case)."""
    where = [(k, p[k]) for k in ("active", "customer") if p.get(k) is not None]
    if p.get("code"):
        where.append(("_code_key", p["code"].upper()))
    if p.get("coupon"):
        where.append(("promotion.coupon", p["coupon"]))
    return where


def _active_with(tx, code):
    rows, _ = tx.list("promotion_code", 1, where=[("_code_key", code.upper()), ("active", True)])
    return rows[0] if rows else None


def _check_unique(tx, code):
    # Codes are unique, whatever their case, among active codes: https://docs.stripe.com/api/promotion_codes/object
    if _active_with(tx, code) is not None:
        raise invalid(f"An active promotion code with `code: {code}` already exists.", "code")


def _new_code(tx):
    """A random code like Stripe's (8 capitals and digits) that no active code has."""
    while True:
        code = "".join(c for c in o.new_id("", 16).upper() if c.isalnum())[:8]
        if _active_with(tx, code) is None:
            return code


# -- lapsing and redeeming ---------------------------------------------------------------------------------------------
def unredeemable(tx, promo, now, ignore_active=False, coupon=None):
    """Why a promotion code cannot be redeemed now ("it has expired", ...), or None."""
    coupon = coupon or tx.get(promo["promotion"]["coupon"], "coupon")
    if promo["expires_at"] is not None and promo["expires_at"] <= now:
        return "it has expired"
    if promo["max_redemptions"] is not None and promo["times_redeemed"] >= promo["max_redemptions"]:
        return "it has reached its redemption limit"
    if coupon is None or (coupon["redeem_by"] is not None and coupon["redeem_by"] <= now):
        return "it has expired"
    if coupon["max_redemptions"] is not None and coupon["times_redeemed"] >= coupon["max_redemptions"]:
        return "it has reached its redemption limit"
    if not coupon["valid"]:
        return "its coupon is no longer valid"
    if not promo["active"] and not ignore_active:
        return "it is no longer active"
    return None


def _deactivate_codes(ctx, coupon):
    """A promotion code is only active while its coupon is valid."""
    while True:
        rows, _ = ctx.tx.list("promotion_code", 100, where=[("promotion.coupon", coupon["id"]), ("active", True)])
        if not rows:
            return
        for promo in rows:
            promo["active"] = False
            ctx.tx.put(promo)


def lapse(ctx, obj, now):
    """An active promotion code past its expires_at turns inactive, a valid coupon past its redeem_by turns invalid
    (and its codes inactive); True when `obj` changed. Run by StandIn.sweep()."""
    if obj["object"] == "promotion_code" and obj["active"] and (obj["expires_at"] or now + 1) <= now:
        obj["active"] = False
        ctx.tx.put(obj)
        return True
    if obj["object"] == "coupon" and obj["valid"] and (obj["redeem_by"] or now + 1) <= now:
        obj["valid"] = False
        ctx.tx.put(obj)
        _deactivate_codes(ctx, obj)
        return True
    return False


def redeem(ctx, discount):
    """Count one redemption (a completed session) of a promotion code and its coupon; a code or coupon that
    reaches its max_redemptions is used up (inactive, invalid)."""
    promo = ctx.tx.get(discount["promotion_code"]["id"], "promotion_code")
    coupon = ctx.tx.get(discount["coupon"]["id"], "coupon")
    promo["times_redeemed"] += 1
    if promo["max_redemptions"] is not None and promo["times_redeemed"] >= promo["max_redemptions"]:
        promo["active"] = False
    ctx.tx.put(promo)
    coupon["times_redeemed"] += 1
    used_up = coupon["max_redemptions"] is not None and coupon["times_redeemed"] >= coupon["max_redemptions"]
    coupon["valid"] = coupon["valid"] and not used_up
    ctx.tx.put(coupon)
    if used_up:
        _deactivate_codes(ctx, coupon)


# -- on the payment page -----------------------------------------------------------------------------------------------
def resolve(tx, session, text, now):
    """The discount a typed code gives this session ({"coupon": ..., "promotion_code": ...}), or PayError(400)
    saying why it cannot be used: unknown, inactive, expired, used up, another currency or below its minimum."""
    typed = (text or "").strip()
    if not session["allow_promotion_codes"]:
        raise PayError(400, "This checkout does not accept promotion codes.", "promotion_code")
    rows = []
    if CODE_CHARS.fullmatch(typed) and len(typed) <= 500:
        rows, _ = tx.list("promotion_code", 100, where=[("_code_key", typed.upper())])
    if not rows:
        raise PayError(400, f'"{typed}" is not a valid promotion code.', "promotion_code")
    promo = next((r for r in rows if r["active"]), rows[0])  # newest first
    coupon = tx.get(promo["promotion"]["coupon"], "coupon")
    name, currency = promo["code"], session["currency"]
    why = unredeemable(tx, promo, now, coupon=coupon)
    if why:
        reason = {"it has expired": "has expired", "it has reached its redemption limit":
                  "has reached its redemption limit"}.get(why, "is no longer active")
        raise PayError(400, f'The promotion code "{name}" {reason}.', "promotion_code")
    minimum = promo["restrictions"]
    if (coupon["amount_off"] is not None and coupon["currency"] != currency) or (
            minimum["minimum_amount"] is not None and minimum["minimum_amount_currency"] != currency):
        raise PayError(400, f'The promotion code "{name}" cannot be used for payments in {currency.upper()}.',
                       "promotion_code")
    if minimum["minimum_amount"] is not None and session["amount_subtotal"] < minimum["minimum_amount"]:
        raise PayError(400, f'The promotion code "{name}" needs an order of at least '
                       f'{money(minimum["minimum_amount"], currency)} (before shipping and tax).', "promotion_code")
    return {"coupon": coupon, "promotion_code": promo}


def describe(coupon, currency):
    """"20% off" or "$5.00 off"."""
    if coupon["percent_off"] is not None:
        return f"{coupon['percent_off']:g}% off"
    return f"{money(coupon['amount_off'], currency)} off"
