"""Offline Stripe stand-in: a local imitation of the Stripe API parts the shop uses (Checkout, payments, webhooks).

Use `StandIn(data_dir, public_url=...)`: `.wsgi_api` (WSGI app for /v1/*), `.http_client()` (a stripe.HTTPClient
for `stripe.StripeClient(..., http_client=...)`), `.install_pay_page(app)`, `.pay(...)`, `.calls`.
The payment page brings its own templates (standin/views) and stylesheet (standin/static, served at
/offline-checkout/static/standin.css), so it needs nothing from the app it is installed in.

Test cards (any future expiry such as 12/34, any 3-digit CVC):
- 4242 4242 4242 4242 (visa) and 5555 5555 5555 4444 (mastercard): succeed.
- 4000 0000 0000 0002: declined, generic_decline.  4000 0000 0000 9995: declined, insufficient_funds.
- 4000 0000 0000 0069: declined, expired_card.  4000 0000 0000 0127: declined, incorrect_cvc.
- 4000 0000 0000 0259: succeeds, then a dispute opens (charge.dispute.created, status needs_response).
- 4000 0000 0000 1976: succeeds, then an inquiry opens (status warning_needs_response; the charge stays refundable).
- 4000 0099 0000 0004 (stand-in only): completes the session unpaid (PaymentIntent processing), then settles as
  paid after `async_delay` seconds or `settle_async()` (checkout.session.async_payment_succeeded).
- 4000 0099 0000 0012 (stand-in only): as above but the delayed payment fails (..._async_payment_failed).
- 4000 0025 0000 3155, 4000 0027 6000 3184 and 4000 0000 0000 3220: require 3D Secure authentication
  (https://docs.stripe.com/testing#regulatory-cards). The page then shows a test 3D Secure page, with nothing kept
  yet: Complete pays as 4242 does (the charge's payment_method_details.card.three_d_secure says "authenticated");
  Fail makes no charge, leaves the session open and the PaymentIntent requires_payment_method with
  last_payment_error.code payment_intent_authentication_failure (payment_intent.payment_failed), and the page shows
  Stripe's message "We are unable to authenticate your payment method. Please choose a different payment method and
  try again." with the form kept.
- Any other Luhn-valid number is declined as a live card used in test mode (test_mode_live_card).

`.pay(session_id, card=..., email=..., name=..., address=None, shipping_option_index=0, phone=None, expiry="12/34",
cvc="123", cardholder=None, promotion_code=None, accept_terms=True, tax_id=None, authentication="complete")` fills in
and submits the payment page in one call: `promotion_code` is typed into the code field, `accept_terms` ticks (or,
False, leaves) the terms of service box, `tax_id` is a (type, value) pair such as ("eu_vat", "DE123456789"),
`authentication` is the answer on the test 3D Secure page ("complete" or "fail") for the cards that ask for it. What
the page refuses raises PayError with the page's message (`.status`, `.message`, `.field`); a declined card, or a
failed authentication, raises PayError(402).
`.sweep(now=None)` does what time would: expires open sessions past their expires_at (checkout.session.expired, the
PaymentIntent canceled), settles delayed payments, turns promotion codes past their expires_at inactive and coupons past
their redeem_by invalid. `.check_promotion_code(session, code)` is the page's preview of a code.
`.open_dispute(charge_id, inquiry=False)` and `.close_dispute(dispute_id, won=True)` play a cardholder's dispute (or
the bank's inquiry) of a paid charge.

Coupons and promotion codes (https://docs.stripe.com/payments/checkout/discounts), as in API version
2025-09-30.clover and later:
- POST /v1/coupons (id kept when given, else 8 random characters; percent_off, or amount_off + currency; duration,
  default "once"; name; metadata; max_redemptions; redeem_by), GET /v1/coupons/{id}. An id that exists: 400
  resource_already_exists, "Coupon already exists.". Events coupon.created.
- POST /v1/promotion_codes (promotion[type]=coupon + promotion[coupon], not the older top-level `coupon`; code, else
  8 random capitals and digits; active; expires_at; max_redemptions; restrictions[minimum_amount] +
  [minimum_amount_currency]; metadata), GET /v1/promotion_codes (filters active, code (any case), coupon, created;
  limit/starting_after/ending_before), GET /v1/promotion_codes/{id} (expand promotion.coupon), POST
  /v1/promotion_codes/{id} (active, metadata). An active code is unique among active codes whatever its case ("An
  active promotion code with `code: X` already exists."). times_redeemed counts the completed sessions that used a
  code (and its coupon); a code that reaches its max_redemptions, or passes its expires_at, turns inactive, and so do
  all codes of a coupon that is used up or past its redeem_by (valid: false). Reactivating a code that could not be
  redeemed is refused. Events promotion_code.created and .updated (previous_attributes).

Checkout Sessions also take allow_promotion_codes, expires_at (30 minutes to 24 hours away, else Stripe's 400),
consent_collection[terms_of_service], custom_text[terms_of_service_acceptance][message] and
tax_id_collection[enabled] (+ [required] never | if_supported), and show them on the session (tax_id_collection only
when sent). The payment page (no JavaScript) then has:
- a promotion code field with Apply (and Remove): an applied code shows its discount in the totals; a code that is
  unknown, inactive, expired, used up, for another currency, below its restrictions[minimum_amount] (compared with the
  items' subtotal) or that would take the total below the smallest chargeable amount is refused with a message saying
  which, and the form keeps what was typed. The code is checked again when paying.
- a required terms of service checkbox, labelled with the custom message (escaped; its Markdown links to http(s)
  URLs made links) or "I agree to the Terms of Service.";
- tax ID fields (a type among au_abn, ca_bn, ch_vat, eu_vat, gb_vat, no_vat, nz_gst, us_ein, by default the one of the
  shopper's country, and the value, checked against a rough pattern of its format), optional unless
  required=if_supported and the country has one of those types.
A completed session has discounts [{"coupon": id, "promotion_code": id}] (expand discounts.promotion_code and
discounts.coupon, also on lists as data.discounts.promotion_code), total_details.amount_discount and each line item's
amount_discount (the discount spread over the items in proportion to their amounts, in whole minor units; shipping is
not discounted), tax worked out on the discounted amounts, amount_total and the PaymentIntent's amount to match, consent
{"terms_of_service": "accepted", "promotions": null} and customer_details.tax_ids [{"type", "value"}].

Latency: `StandIn(..., latency_ms=N)`, else the environment variable STANDIN_LATENCY_MS, else 0 (and `python -m
standin --latency-ms N`, which overrides the variable): every API request (/v1/*, through `http_client()` or the
standalone server) waits N milliseconds before it is handled, holding no lock while it waits, so concurrent calls
overlap as they would against a slow Stripe. N is a whole number from 0 to 60000; anything else is refused with a
ValueError (a usage error from `python -m standin`). `.latency_ms` may be changed while serving. Through
`http_client(timeout=T)`, a latency of T seconds or more ends in a read timeout (a retryable APIConnectionError)
after T seconds, while the request itself still runs, as with the "delay" fault.

Environment: STANDIN_FAULTS injects faults (see standin.faults); STANDIN_LATENCY_MS sets the latency (above).
"""
from .core import StandIn
from .errors import StripeError
from .payments import ASYNC_FAIL, ASYNC_OK, CARDS, PayError

__all__ = ["StandIn", "StripeError", "PayError", "CARDS", "ASYNC_OK", "ASYNC_FAIL"]
