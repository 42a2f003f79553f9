"""Nothing the shopper sends sets what they pay: extra form fields, a hand-edited URL, and anything posted to the
offline payment page leave the prices, amounts and URLs the catalog and Stripe decide."""

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BASE, pay_form, survived, wsgi
from webshop.catalog import format_money


anything = st.text(max_size=80)
field_value = st.one_of(anything, st.integers(-10**9, 10**9).map(str),
                        st.sampled_from(["", "0", "1", "99", "4242424242424242", "4000000000000002", "12 / 34", "US"]))
ascii_only = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["email", "name", "phone", "address_line1", "address_city",
                                           "address_postal_code", "address_state", "address_country",
                                           "shipping_option", "card_number", "card_expiry", "card_cvc",
                                           "cardholder_name", "amount"]), field_value), max_size=12),
       st.booleans(), ascii_only)
def test_payment_page_posts_never_fail(module_app, module_session_id, pairs, with_token, forged):
    """Any form on the offline payment page: a decline, an error message, or a payment; never a crash."""
    from standin.page import pay_token
    standin = module_app.config["shop"].orders.standin
    pairs = [("pay_token", pay_token(standin, module_session_id) if with_token else forged)] + pairs
    status, _, _, _ = survived(wsgi(module_app, "POST", f"/offline-checkout/{module_session_id}",
                                    body=urlencode(pairs).encode(), content_type="application/x-www-form-urlencoded"))
    assert status in (200, 303, 400, 402, 409, 410), status


def test_payment_page_with_a_non_ascii_token(module_app, module_session_id):
    """hmac.compare_digest raises TypeError on non-ASCII str: the token must be compared as bytes."""
    survived(wsgi(module_app, "POST", f"/offline-checkout/{module_session_id}", body=b"pay_token=%C2%80",
                  content_type="application/x-www-form-urlencoded"))


TAMPER = {"price": "1", "unit_amount": "1", "amount": "1", "amount_total": "1", "amount_subtotal": "1",
          "currency": "jpy", "tax": "0", "amount_tax": "0", "tax_behavior": "inclusive", "shipping": "0",
          "amount_shipping": "0", "shipping_options[0][shipping_rate_data][fixed_amount][amount]": "0",
          "success_url": "https://evil.example/ok", "cancel_url": "https://evil.example/no",
          "line_items[0][price_data][unit_amount]": "1", "line_items[0][quantity]": "1000",
          "metadata[order_id]": "ord_someone_else", "client_reference_id": "ord_someone_else", "mode": "setup",
          "automatic_tax[enabled]": "false", "discounts[0][coupon]": "FREE", "allow_promotion_codes": "true",
          "customer_email": "attacker@evil.example", "expires_at": "1", "name": "Free book", "quantity": "1"}


def expected(cat, cart, country="US", option=0):
    """Subtotal, shipping, tax and total as Checkout computes them from the catalog alone."""
    from standin import tax
    rate = tax.rate(country)
    lines = [cat.product(p).price * q for p, q in cart.items()]
    shipping = cat.shipping_options[option].amount
    amount_tax = sum(tax.tax_for(a, rate, cat.tax_behavior) for a in lines + [shipping])
    return sum(lines), shipping, amount_tax, sum(lines) + shipping + amount_tax


@pytest.mark.parametrize("how", ["cart", "buy now"])
def test_extra_fields_never_change_prices_amounts_or_urls(shopper, how):
    cat = shopper.shop.catalog()
    a, b = cat.products[0], cat.products[1]
    if how == "cart":
        shopper.add(a.id, 2)
        shopper.add(b.id)
        to_stripe = shopper.post("/checkout", {"csrf_token": shopper.csrf(), **TAMPER}, status=303)
        cart = {a.id: 2, b.id: 1}
    else:
        to_stripe = shopper.post("/checkout", {"csrf_token": shopper.csrf(), **TAMPER, "product_id": a.id,
                                               "quantity": "2"}, status=303)
        cart = {a.id: 2}
    assert to_stripe.location.startswith(BASE + "/offline-checkout/cs_test_")
    session_id = shopper.session_id(to_stripe)
    orders = shopper.shop.orders
    session = orders.stripe.v1.checkout.sessions.retrieve(session_id, {"expand": ["line_items"]}).to_dict()
    order = orders.ledger.by_session(session_id)
    assert session["currency"] == cat.currency and session["mode"] == "payment"
    assert [(i["price"]["unit_amount"], i["quantity"]) for i in session["line_items"]["data"]] == \
        [(cat.product(p).price, q) for p, q in cart.items()]
    assert session["success_url"] == BASE + "/success?session_id={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == BASE + "/cart?canceled=1"
    assert session["metadata"] == {"order_id": order["id"], "checkout": how}
    assert session["client_reference_id"] == order["id"]
    assert session["automatic_tax"]["enabled"] == (cat.tax_mode == "automatic")
    assert not session.get("customer_email") and not session.get("discounts")
    # On the payment page, amounts and currency in the form are ignored too.
    done = pay_form(shopper, to_stripe.location, amount_total="1", amount="1", currency="jpy", unit_amount="1")
    assert done.status_int == 303 and done.location == f"{BASE}/success?session_id={session_id}"
    page = shopper.get(done.location)
    subtotal, shipping, amount_tax, total = expected(cat, cart)
    assert format_money(total, cat.currency) in page.text
    order = orders.ledger.get(order["id"])
    assert (order["amount_subtotal"], order["amount_shipping"], order["amount_tax"], order["amount_total"]) == \
        (subtotal, shipping, amount_tax, total)
    assert [(i["product_id"], i["unit_amount"], i["quantity"]) for i in order["items"]] == \
        [(p, cat.product(p).price, q) for p, q in cart.items()]


def test_the_success_page_shows_what_stripe_charged_whatever_the_url_says(shopper):
    cat = shopper.shop.catalog()
    shopper.add(cat.products[0].id)
    done = pay_form(shopper, shopper.checkout().location)
    page = shopper.get(done.location + "&amount_total=1&status=failed&currency=jpy&payment_status=unpaid")
    assert "Thank you" in page.text
    assert format_money(expected(cat, {cat.products[0].id: 1})[3], cat.currency) in page.text
