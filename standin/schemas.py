"""Request parameter schemas for the endpoints the stand-in serves (a subset of `stripe.params`)."""
from .forms import EXPAND, Arr, Bool, Field, Int, Metadata, Num, Obj, Str


class Range(Field):
    """A list filter like `created`: an exact integer, or a hash of gt/gte/lt/lte."""

    _obj = Obj({k: Int() for k in ("gt", "gte", "lt", "lte")})

    def clean(self, value, path):
        if isinstance(value, dict):
            return self._obj.clean(value, path)
        return {"eq": Int().clean(value, path)}


# Country codes Checkout accepts for shipping_address_collection[allowed_countries] (from stripe.params).
COUNTRIES = frozenset("""
AC AD AE AF AG AI AL AM AO AQ AR AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CD
CF CG CH CI CK CL CM CN CO CR CV CW CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FO FR GA GB GD GE GF GG GH
GI GL GM GN GP GQ GR GS GT GU GW GY HK HN HR HT HU ID IE IL IM IN IO IQ IS IT JE JM JO JP KE KG KH KI KM KN KR KW KY
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MK ML MM MN MO MQ MR MS MT MU MV MW MX MY MZ NA NC NE NG NI NL
NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO
SR SS ST SV SX SZ TA TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG US UY UZ VA VC VE VG VN VU WF WS XK YE YT
ZA ZM ZW ZZ""".split())
# Checkout locales: https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-locale
LOCALES = ("auto bg cs da de el en en-GB es es-419 et fi fil fr fr-CA hr hu id it ja ko lt lv ms mt nb nl pl pt "
           "pt-BR ro ru sk sl sv th tr vi zh zh-HK zh-TW").split()
TAX_BEHAVIOR = Str(choices=("exclusive", "inclusive", "unspecified"))
# Stripe caps amounts at eight digits in minor units: https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
MAX_AMOUNT = 99_999_999

CURRENCY = Str(max_length=3, pattern=r"[a-zA-Z]{3}")
ESTIMATE = Obj({"unit": Str(choices=("business_day", "day", "hour", "month", "week")),
                "value": Int(min=1, max=10_000)}, required=("unit", "value"))
SHIPPING_RATE_DATA = Obj({
    "type": Str(choices=("fixed_amount",)),
    "display_name": Str(max_length=100),
    "fixed_amount": Obj({"amount": Int(min=0, max=MAX_AMOUNT), "currency": CURRENCY}, required=("amount", "currency")),
    "tax_behavior": TAX_BEHAVIOR,
    "tax_code": Str(),
    "delivery_estimate": Obj({"minimum": ESTIMATE, "maximum": ESTIMATE}),
    "metadata": Metadata(),
}, required=("display_name",))
PRICE_DATA = Obj({
    "currency": CURRENCY,
    "unit_amount": Int(min=0, max=MAX_AMOUNT),
    "tax_behavior": TAX_BEHAVIOR,
    "product_data": Obj({"name": Str(), "description": Str(max_length=40000),
                         "images": Arr(Str(max_length=2048, url=True), max_items=8), "tax_code": Str(),
                         "metadata": Metadata(), "unit_label": Str(max_length=12)}, required=("name",)),
}, required=("currency", "product_data"))

SESSION_CREATE = Obj({
    "mode": Str(choices=("payment", "setup", "subscription")),
    "line_items": Arr(Obj({"quantity": Int(min=1, max=999_999), "price": Str(), "price_data": PRICE_DATA}),
                      max_items=100),
    "shipping_address_collection": Obj({"allowed_countries": Arr(Str(choices=None, pattern=r"[A-Z]{2}"))},
                                       required=("allowed_countries",)),
    "shipping_options": Arr(Obj({"shipping_rate": Str(), "shipping_rate_data": SHIPPING_RATE_DATA}), max_items=5),
    "automatic_tax": Obj({"enabled": Bool()}, required=("enabled",)),
    "phone_number_collection": Obj({"enabled": Bool()}, required=("enabled",)),
    "billing_address_collection": Str(choices=("auto", "required")),
    "locale": Str(choices=LOCALES),
    "client_reference_id": Str(max_length=200),
    "metadata": Metadata(),
    "payment_intent_data": Obj({"metadata": Metadata(), "description": Str(max_length=1000),
                                "receipt_email": Str(email=True)}),
    "payment_method_types": Arr(Str(choices=("card",))),
    "success_url": Str(url=True),
    "cancel_url": Str(url=True),
    "expires_at": Int(),
    "customer_email": Str(email=True, max_length=800),
    "submit_type": Str(choices=("auto", "book", "donate", "pay", "subscribe")),
    "customer_creation": Str(choices=("always", "if_required")),
    "allow_promotion_codes": Bool(),
    # Only the parts the stand-in's page acts on; the rest of these hashes is refused as unknown
    "consent_collection": Obj({"terms_of_service": Str(choices=("none", "required"))}),
    "custom_text": Obj({"terms_of_service_acceptance": Obj({"message": Str(max_length=1200)},
                                                           required=("message",))}),
    "tax_id_collection": Obj({"enabled": Bool(), "required": Str(choices=("if_supported", "never"))},
                             required=("enabled",)),
    "ui_mode": Str(choices=("hosted_page",)),
    "expand": EXPAND,
}, required=("mode",))

RETRIEVE = Obj({"expand": EXPAND})
EXPIRE = Obj({"expand": EXPAND})
LIST_BASE = {"limit": Int(min=1, max=100), "starting_after": Str(), "ending_before": Str(), "expand": EXPAND,
             "created": Range()}
SESSION_LIST = Obj({**LIST_BASE, "status": Str(choices=("complete", "expired", "open")), "payment_intent": Str(),
                    "customer": Str(), "payment_link": Str()})
LINE_ITEMS_LIST = Obj({k: LIST_BASE[k] for k in ("limit", "starting_after", "ending_before", "expand")})
CHARGE_REFUNDS_LIST = LINE_ITEMS_LIST  # a page of one parent's list takes the same
EVENT_LIST = Obj({**LIST_BASE, "type": Str(), "types": Arr(Str(), max_items=20), "delivery_success": Bool()})
REFUND_CREATE = Obj({"payment_intent": Str(), "charge": Str(), "amount": Int(min=1, max=MAX_AMOUNT),
                     "metadata": Metadata(), "expand": EXPAND,
                     "reason": Str(choices=("duplicate", "fraudulent", "requested_by_customer"))})
REFUND_LIST = Obj({**LIST_BASE, "charge": Str(), "payment_intent": Str()})
DISPUTE_LIST = Obj({**LIST_BASE, "charge": Str(), "payment_intent": Str()})

# Coupons and promotion codes: https://docs.stripe.com/api/coupons/create, .../promotion_codes/create
COUPON_CREATE = Obj({
    "id": Str(max_length=5000),
    "percent_off": Num(gt=0, max=100),
    "amount_off": Int(min=1, max=MAX_AMOUNT),
    "currency": CURRENCY,
    "duration": Str(choices=("forever", "once", "repeating")),
    "duration_in_months": Int(min=1, max=1200),
    "max_redemptions": Int(min=1),
    "metadata": Metadata(),
    "name": Str(max_length=40),
    "redeem_by": Int(),
    "expand": EXPAND,
})
PROMOTION_CODE_CREATE = Obj({
    # Since API version 2025-09-30.clover the coupon is named inside `promotion`, not as a top-level `coupon`
    "promotion": Obj({"type": Str(choices=("coupon",)), "coupon": Str()}, required=("type",)),
    "code": Str(max_length=500),
    "active": Bool(),
    "customer": Str(),
    "expires_at": Int(),
    "max_redemptions": Int(min=1),
    "metadata": Metadata(),
    "restrictions": Obj({"first_time_transaction": Bool(), "minimum_amount": Int(min=1, max=MAX_AMOUNT),
                         "minimum_amount_currency": CURRENCY}),
    "expand": EXPAND,
}, required=("promotion",))
PROMOTION_CODE_UPDATE = Obj({"active": Bool(), "metadata": Metadata(update=True), "expand": EXPAND})
PROMOTION_CODE_LIST = Obj({**LIST_BASE, "active": Bool(), "code": Str(), "coupon": Str(), "customer": Str()})
