"""The stand-in's hosted-style payment page, driven like a browser with JavaScript off."""
import re
import time

import pytest
import stripe

from standin import PayError, StandIn
from tests.standin_helpers import event_types, fill

KEY = "sk_test_offline"


def params(**over):
    p = {
        "mode": "payment", "success_url": "http://shop.test/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/cart",
        "line_items": [{"quantity": 2, "price_data": {"currency": "usd", "unit_amount": 1250, "tax_behavior": "exclusive",
                                                      "product_data": {"name": "Dune"}}}],
        "shipping_address_collection": {"allowed_countries": ["DE", "US"]}, "automatic_tax": {"enabled": True},
        "shipping_options": [
            {"shipping_rate_data": {"display_name": "Standard", "fixed_amount": {"amount": 500, "currency": "usd"},
                                    "delivery_estimate": {"minimum": {"unit": "business_day", "value": 3},
                                                          "maximum": {"unit": "business_day", "value": 5}}}},
            {"shipping_rate_data": {"display_name": "Express", "fixed_amount": {"amount": 1500, "currency": "usd"}}}],
        "customer_email": "reader@example.com",
    }
    p.update(over)
    return p


@pytest.fixture
def standin(tmp_path):
    s = StandIn(tmp_path, public_url="http://shop.test", load_env_faults=False, business_name="Book & Co")
    yield s
    s.close()


@pytest.fixture
def client(standin):
    return stripe.StripeClient(KEY, http_client=standin.http_client())


def test_page_renders_summary_and_labelled_fields(client, pay_page):
    s = client.v1.checkout.sessions.create(params())
    page = pay_page.get(f"/offline-checkout/{s.id}")
    text = page.text
    assert page.status_int == 200 and "Test mode" in text and "<script" not in text
    assert 'href="/offline-checkout/static/standin.css"' in text and "Book &amp; Co" in text
    assert "Dune" in text and "Qty 2" in text and "$25.00" in text and "$5.00" in text
    assert "Calculated after you enter your address" in text and ">Pay</button>" in text  # no amount before tax
    assert "3–5 business days" in text and "Express" in text and "$15.00" in text
    assert 'href="http://shop.test/cart"' in text
    assert "4242 4242 4242 4242" in text and "4000 0000 0000 9995" in text
    ids = set(re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', text))
    labelled = set(re.findall(r'<label for="([^"]+)"', text))
    assert ids - labelled == set()
    assert {"email", "name", "phone", "address_line1", "address_line2", "address_city", "address_postal_code",
            "address_state", "address_country", "card_number", "card_expiry", "card_cvc",
            "cardholder_name"} <= ids
    assert re.findall(r'<option value="([A-Z]{2})"', text) == ["DE", "US"]
    assert page.forms["pay"]["email"].value == "reader@example.com"


def test_success_redirects_with_session_id_and_records_payment(client, pay_page, standin):
    s = client.v1.checkout.sessions.create(params())
    done = fill(pay_page.get(f"/offline-checkout/{s.id}"), shipping_option="1").submit(status=303)
    assert done.location == f"http://shop.test/success?session_id={s.id}"
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent.latest_charge"]})
    assert (r.status, r.payment_status) == ("complete", "paid")
    assert r.shipping_cost.amount_subtotal == 1500 and r.total_details.amount_tax == round(0.19 * 4000)
    assert r.payment_intent.latest_charge.payment_method_details.card.last4 == "4242"
    assert r.customer_details.name == "Ada Reader" and r.collected_information.shipping_details.address.city == "Berlin"
    # paying again is not possible: the page sends the shopper on to the success URL
    assert pay_page.get(f"/offline-checkout/{s.id}", status=303).location == done.location


@pytest.mark.parametrize("card, reason", [("4000000000000002", "generic_decline"),
                                          ("4000 0000 0000 9995", "insufficient_funds")])
def test_declined_cards_keep_session_open(client, pay_page, card, reason):
    s = client.v1.checkout.sessions.create(params())
    page = fill(pay_page.get(f"/offline-checkout/{s.id}"), card=card).submit(status=402)
    assert "Your card was declined" in page.text and reason in page.text
    assert page.forms["pay"]["card_number"].value == "" and page.forms["pay"]["card_cvc"].value == ""
    assert card.replace(" ", "") not in page.text and 'value="123"' not in page.text
    assert page.forms["pay"]["name"].value == "Ada Reader"
    assert page.forms["pay"]["address_city"].value == "Berlin"
    # the field the decline names is described by the error and focused when the page loads (no script needed)
    card_input = page.html.find("input", id="card_number")
    assert card_input.get("aria-describedby") == "sti-error" and card_input.has_attr("autofocus")
    assert len(page.html.select("[autofocus]")) == 1 and not page.html.select('[aria-describedby=""]')
    # and the message is next to it, in view when the field gets the focus (not at the top, 700 px above)
    assert card_input.find_previous(["div", "legend"]).get("id") == "sti-error"
    assert page.text.count('id="sti-error"') == 1
    assert "<dd>$5.70</dd>" in page.text  # tax is known once the address is: 19% of 2500 + 19% of 500 shipping
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent.latest_charge"]})
    assert (r.status, r.payment_status) == ("open", "unpaid")
    pi = r.payment_intent
    assert pi.status == "requires_payment_method" and pi.last_payment_error.decline_code == reason
    assert pi.latest_charge.status == "failed" and pi.latest_charge.outcome.reason == reason
    # the shopper can try again with a good card on the same session and PaymentIntent
    fill(page, card="4242424242424242").submit(status=303)
    paid = client.v1.checkout.sessions.retrieve(s.id)
    assert paid.payment_intent == pi.id and paid.payment_status == "paid"


@pytest.mark.parametrize("over, field, message", [
    ({"email": "nope"}, "email", "Enter a valid email address."),
    ({"email": "a\0b@example.com"}, "email", "Enter a valid email address."),
    ({"email": "a\x9bb@example.com"}, "email", "Enter a valid email address."),
    ({"email": "a\u202eb@example.com"}, "email", "Enter a valid email address."),
    ({"email": "a" * 243 + "@example.com"}, "email", "Enter a valid email address."),
    ({"name": ""}, "name", "Enter your full name."),
    ({"card_number": "4242424242424241"}, "card_number", "Your card number is invalid."),
    ({"card_expiry": "01 / 20"}, "card_expiry", "expiration date"),
    ({"card_expiry": "13/30"}, "card_expiry", "expiration date"),
    ({"card_expiry": "12345"}, "card_expiry", "expiration date"),
    ({"card_cvc": "1"}, "card_cvc", "security code"),
    ({"address_city": ""}, "address_city", "Enter your city."),
])
def test_validation_errors_rerender_with_values(client, pay_page, over, field, message):
    s = client.v1.checkout.sessions.create(params())
    page = fill(pay_page.get(f"/offline-checkout/{s.id}"), **over).submit(status=400)
    assert message in page.text
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', page.text)
    assert "4242424242424241" not in page.text and "4242424242424242" not in page.text
    assert client.v1.checkout.sessions.retrieve(s.id).payment_intent is None


@pytest.mark.parametrize("expiry", ["12/34", "1 / 2034", "1234", "12 34", "122034"])
def test_an_expiry_is_read_with_or_without_its_slash(client, pay_page, expiry):
    """Typed as digits only (Checkout's field adds the slash as they are typed) it was refused as "in the past"."""
    s = client.v1.checkout.sessions.create(params())
    fill(pay_page.get(f"/offline-checkout/{s.id}"), card_expiry=expiry).submit(status=303)
    card = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent.latest_charge"]}).payment_intent
    details = card.latest_charge.payment_method_details.card
    assert (details.exp_month, details.exp_year) == (1 if expiry.startswith("1 ") else 12, 2034)


def test_country_outside_allowed_list_is_refused(client, pay_page):
    s = client.v1.checkout.sessions.create(params())
    form = fill(pay_page.get(f"/offline-checkout/{s.id}"))
    form["address_country"].force_value("FR")
    assert "Choose a country we can ship to." in form.submit(status=400).text


def test_forged_posts_without_the_page_token_are_refused(client, pay_page, standin):
    s = client.v1.checkout.sessions.create(params())
    pay_page.post(f"/offline-checkout/{s.id}", {"email": "a@b.co", "card_number": "4242424242424242"}, status=400)
    assert standin.get(s.id)["status"] == "open"


def test_a_form_in_a_charset_without_a_text_codec_is_refused_not_a_crash(client, pay_page, standin):
    s = client.v1.checkout.sessions.create(params())
    body = b'--b0\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.co\r\n--b0--\r\n'
    for charset in ("utf-99", "rot13"):  # bottle reads such a form as UTF-8: without its token it pays nothing
        page = pay_page.post(f"/offline-checkout/{s.id}", body, status=400,
                             headers={"Content-Type": f"multipart/form-data; boundary=b0; charset={charset}"})
        assert "This form has expired." in page.text and "Traceback" not in page.text
    assert standin.get(s.id)["status"] == "open"


def test_phone_is_required_when_collected(client, pay_page):
    s = client.v1.checkout.sessions.create(params(phone_number_collection={"enabled": True}))
    page = pay_page.get(f"/offline-checkout/{s.id}")
    assert "Phone (optional)" not in page.text
    assert "Enter a valid phone number." in fill(page).submit(status=400).text
    fill(page, phone="+49 30 1234567").submit(status=303)
    assert client.v1.checkout.sessions.retrieve(s.id).customer_details.phone == "+49 30 1234567"


def test_markup_in_product_names_is_escaped(client, pay_page):
    s = client.v1.checkout.sessions.create(params(line_items=[{"quantity": 1, "price_data": {
        "currency": "usd", "unit_amount": 900, "product_data": {"name": '<script>alert("x")</script><b>Bold'}}}],
        cancel_url='http://shop.test/cart?a="><b>'))
    text = pay_page.get(f"/offline-checkout/{s.id}").text
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;Bold" in text


def test_the_page_brings_its_own_stylesheet(client, pay_page):
    """The page and its messages link a stylesheet served under the page's own prefix: the host app's /static is
    not needed (a bare Bottle app has none)."""
    s = client.v1.checkout.sessions.create(params())
    links = [re.findall(r'<link rel="stylesheet" href="([^"]+)"', pay_page.get(url, status=status).text)
             for url, status in ((f"/offline-checkout/{s.id}", 200), ("/offline-checkout/cs_test_nope", 404))]
    assert links == [["/offline-checkout/static/standin.css"]] * 2
    css = pay_page.get("/offline-checkout/static/standin.css")
    assert css.content_type == "text/css" and ".sti-main" in css.text and "max-age" in css.headers["Cache-Control"]
    assert pay_page.head("/offline-checkout/static/standin.css").content_length == len(css.body)
    assert pay_page.get("/offline-checkout/static/standin.css", headers={"Range": "bytes=999999-"}).body == css.body
    pay_page.get("/static/standin.css", status=404)
    pay_page.get("/offline-checkout/static/../page.py", status=404)


def test_unknown_expired_and_lapsed_sessions(client, pay_page, standin):
    assert "not found" in pay_page.get("/offline-checkout/cs_test_nope", status=404).text
    s = client.v1.checkout.sessions.create(params())
    client.v1.checkout.sessions.expire(s.id)
    gone = pay_page.get(f"/offline-checkout/{s.id}", status=410)
    assert "expired" in gone.text and 'href="http://shop.test/cart"' in gone.text
    pay_page.post(f"/offline-checkout/{s.id}", {}, status=410)
    lapsing = client.v1.checkout.sessions.create(params(expires_at=int(time.time()) + 1800))
    standin.sweep(now=time.time() + 3600)
    assert pay_page.get(f"/offline-checkout/{lapsing.id}", status=410)


def test_delayed_payment_card_completes_unpaid_then_settles(client, pay_page, standin):
    s = client.v1.checkout.sessions.create(params())
    fill(pay_page.get(f"/offline-checkout/{s.id}"), card="4000009900000004").submit(status=303)
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent"]})
    assert (r.status, r.payment_status, r.payment_intent.status) == ("complete", "unpaid", "processing")
    assert standin.settle_async() == 1
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent"]})
    assert (r.payment_status, r.payment_intent.status) == ("paid", "succeeded")


def test_programmatic_pay_matches_the_page(client, standin):
    s = client.v1.checkout.sessions.create(params())
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, card="4000000000000002")
    assert exc.value.status == 402 and exc.value.decline_code == "generic_decline"
    with pytest.raises(PayError) as exc:
        standin.pay(s.id, address={"line1": "x", "city": "y", "postal_code": "1", "country": "FR"})
    assert exc.value.status == 400 and exc.value.field == "country"
    paid = standin.pay(s.id, address={"line1": "x", "city": "y", "postal_code": "1", "country": "US"})
    assert paid["payment_status"] == "paid" and paid["total_details"]["amount_tax"] == round(0.0725 * 3000)
    with pytest.raises(PayError) as exc:
        standin.pay(s.id)
    assert exc.value.status == 409
    with pytest.raises(PayError) as exc:
        standin.pay("cs_test_missing")
    assert exc.value.status == 404


AUTHENTICATION_FAILED = ("We are unable to authenticate your payment method. Please choose a different payment "
                         "method and try again.")


@pytest.mark.parametrize("card", ["4000 0025 0000 3155", "4000002760003184", "4000000000003220"])
def test_a_3d_secure_card_shows_the_test_challenge_and_changes_nothing_yet(client, pay_page, card):
    s = client.v1.checkout.sessions.create(params())
    challenge = fill(pay_page.get(f"/offline-checkout/{s.id}"), card=card).submit(status=200)
    assert "3D Secure" in challenge.text and "test" in challenge.text and "Test mode" in challenge.text
    assert 'href="/offline-checkout/static/standin.css"' in challenge.text
    form = challenge.forms["authenticate"]
    assert form.action == f"/offline-checkout/{s.id}" and form.method.lower() == "post"
    assert [(b["value"], b.text) for b in challenge.html.select("#authenticate button[name=authentication]")] == [
        ("complete", "Complete"), ("fail", "Fail")]
    # every field of the payment form goes back with the answer, so the page needs no state to remember it
    assert form["card_number"].value == card and form["card_cvc"].value == "123"
    assert form["name"].value == "Ada Reader" and form["address_city"].value == "Berlin"
    assert form["pay_token"].value == fill(pay_page.get(f"/offline-checkout/{s.id}"))["pay_token"].value
    assert form["action"].value == "pay" and form["shipping_option"].value == "0"
    r = client.v1.checkout.sessions.retrieve(s.id)
    assert (r.status, r.payment_status, r.payment_intent) == ("open", "unpaid", None)
    assert event_types(client) == []


def test_completing_the_challenge_pays_as_4242_does(client, pay_page):
    s = client.v1.checkout.sessions.create(params())
    challenge = fill(pay_page.get(f"/offline-checkout/{s.id}"), card="4000002760003184").submit(status=200)
    done = challenge.forms["authenticate"].submit("authentication", value="complete", status=303)
    assert done.location == f"http://shop.test/success?session_id={s.id}"
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent.latest_charge"]})
    assert (r.status, r.payment_status, r.payment_intent.status) == ("complete", "paid", "succeeded")
    charge = r.payment_intent.latest_charge
    assert charge.status == "succeeded" and charge.payment_method_details.card.last4 == "3184"
    secure = charge.payment_method_details.card.three_d_secure
    assert (secure.authentication_flow, secure.result, secure.version) == ("challenge", "authenticated", "2.2.0")
    assert event_types(client) == ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
                               "checkout.session.completed"]


def test_failing_the_challenge_keeps_the_session_open_with_stripes_message(client, pay_page):
    s = client.v1.checkout.sessions.create(params())
    challenge = fill(pay_page.get(f"/offline-checkout/{s.id}"), card="4000000000003220").submit(status=200)
    page = challenge.forms["authenticate"].submit("authentication", value="fail", status=402)
    assert AUTHENTICATION_FAILED in page.text and "Your card was declined" not in page.text
    assert page.forms["pay"]["name"].value == "Ada Reader" and page.forms["pay"]["card_number"].value == ""
    assert page.html.find("input", id="card_number").get("aria-describedby") == "sti-error"
    r = client.v1.checkout.sessions.retrieve(s.id, {"expand": ["payment_intent"]})
    assert (r.status, r.payment_status) == ("open", "unpaid")
    pi = r.payment_intent
    assert pi.status == "requires_payment_method" and pi.latest_charge is None
    assert pi.last_payment_error.code == "payment_intent_authentication_failure"
    assert pi.last_payment_error.message.startswith("The provided payment method has failed authentication.")
    assert event_types(client) == ["payment_intent.created", "payment_intent.payment_failed"]
    # the shopper can pay with another card on the same session and PaymentIntent
    fill(page).submit(status=303)
    assert client.v1.checkout.sessions.retrieve(s.id).payment_intent == pi.id


def test_the_challenge_escapes_the_fields_it_posts_back(client, pay_page):
    name = """<script>alert("x")</script> O'Brien & "Co" """.strip()
    s = client.v1.checkout.sessions.create(params())
    challenge = fill(pay_page.get(f"/offline-checkout/{s.id}"), card="4000000000003220", name=name,
                     address_line1='"><b>1 Rue').submit(status=200)
    assert "<script>" not in challenge.text and "<b>" not in challenge.text
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; O&#039;Brien &amp; &quot;Co&quot;"
    assert f'<input type="hidden" name="name" value="{escaped}">' in challenge.text
    assert challenge.forms["authenticate"]["name"].value == name
    challenge.forms["authenticate"].submit("authentication", value="complete", status=303)
    r = client.v1.checkout.sessions.retrieve(s.id)
    assert r.customer_details.name == name and r.customer_details.address.line1 == '"><b>1 Rue'


def test_a_forged_token_on_the_challenge_answer_is_refused(client, pay_page, standin):
    s = client.v1.checkout.sessions.create(params())
    form = fill(pay_page.get(f"/offline-checkout/{s.id}"), card="4000002760003184").submit(status=200)
    form = form.forms["authenticate"]
    form["pay_token"].force_value("0" * 32)
    page = form.submit("authentication", value="complete", status=400)
    assert "This form has expired" in page.text
    assert standin.get(s.id)["status"] == "open" and standin.get(s.id)["payment_intent"] is None


def test_update_total_without_javascript_shows_shipping_and_tax_before_paying(tmp_path):
    """Without JavaScript the shopper can ask for the final total (chosen shipping, country tax) and nothing is paid."""
    import re

    from bottle import Bottle
    from webtest import TestApp

    from standin import StandIn
    s = StandIn(tmp_path, public_url="http://shop.test")
    app = Bottle()
    s.install_pay_page(app)
    client = s.http_client()
    import stripe
    api = stripe.StripeClient("sk_test_x", http_client=client)
    session = api.v1.checkout.sessions.create({
        "mode": "payment", "success_url": "http://shop.test/ok?s={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/cart", "automatic_tax": {"enabled": True},
        "shipping_address_collection": {"allowed_countries": ["DE", "US"]},
        "shipping_options": [{"shipping_rate_data": {"type": "fixed_amount", "display_name": "Standard",
                                                     "fixed_amount": {"amount": 500, "currency": "usd"}}},
                             {"shipping_rate_data": {"type": "fixed_amount", "display_name": "Express",
                                                     "fixed_amount": {"amount": 1500, "currency": "usd"}}}],
        "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 10000,
                                                      "tax_behavior": "exclusive",
                                                      "product_data": {"name": "Book"}}}]})
    pay_page = TestApp(app)
    page = pay_page.get(f"/offline-checkout/{session.id}")
    assert re.search(r">Pay</button>", page.text) and "Total before tax" in page.text
    form = page.forms["pay"]
    form["address_country"] = "DE"
    form["shipping_option"] = "1"
    updated = form.submit("action", value="update")
    assert updated.status_int == 200
    # 100.00 + 15.00 express, 19% on both = 21.85 tax, 136.85 in all
    assert "Pay $136.85" in updated.text and "$21.85" in updated.text and "Total due" in updated.text
    assert s.peek_session(session.id)["status"] == "open"


def test_a_total_changed_since_the_page_showed_it_is_shown_before_it_is_charged(client, pay_page, standin):
    """Without JavaScript the total on the page can go stale: Pay shows the new one first, and charges that."""
    s = client.v1.checkout.sessions.create(params())
    shown = fill(pay_page.get(f"/offline-checkout/{s.id}")).submit("action", value="update")
    assert "Pay $35.70" in shown.text  # 25.00 + 5.00 standard shipping, 19% VAT
    changed = fill(shown, shipping_option="1").submit()  # Express, chosen after the total was worked out
    assert changed.status_int == 200 and "the total is now $47.60" in changed.text and "Pay $47.60" in changed.text
    assert client.v1.checkout.sessions.retrieve(s.id).payment_intent is None
    assert fill(changed, shipping_option="1").submit().status_int == 303
    assert client.v1.checkout.sessions.retrieve(s.id).amount_total == 4760
    # a total that went down (Standard again, after Express was shown) is paid at once: less than the page said
    s = client.v1.checkout.sessions.create(params())
    shown = fill(pay_page.get(f"/offline-checkout/{s.id}"), shipping_option="1").submit("action", value="update")
    assert fill(shown, shipping_option="0").submit().status_int == 303
    assert client.v1.checkout.sessions.retrieve(s.id).amount_total == 3570
    # a page whose total was not final yet (tax waits for the address) charges the total with tax, as Checkout does
    s = client.v1.checkout.sessions.create(params())
    assert fill(pay_page.get(f"/offline-checkout/{s.id}")).submit().status_int == 303


@pytest.mark.parametrize("card, field", [("4000000000000069", "card_expiry"), ("4000000000000127", "card_cvc")])
def test_an_expired_card_or_a_wrong_cvc_points_at_its_own_field(client, pay_page, card, field):
    s = client.v1.checkout.sessions.create(params())
    page = fill(pay_page.get(f"/offline-checkout/{s.id}"), card=card).submit(status=402)
    assert page.html.find("input", id=field).has_attr("autofocus") and len(page.html.select("[autofocus]")) == 1
    assert page.html.find("input", id=field).get("aria-invalid") == "true"


def test_with_tax_in_the_prices_the_total_is_known_before_the_address(tmp_path):
    """Inclusive tax is inside the prices: the address only splits it out, so the page never says "before tax"."""
    import stripe
    from bottle import Bottle
    from webtest import TestApp

    from standin import StandIn
    s = StandIn(tmp_path, public_url="http://shop.test")
    app = Bottle()
    s.install_pay_page(app)
    api = stripe.StripeClient("sk_test_x", http_client=s.http_client())
    session = api.v1.checkout.sessions.create({
        "mode": "payment", "success_url": "http://shop.test/ok?s={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://shop.test/cart", "automatic_tax": {"enabled": True},
        "shipping_address_collection": {"allowed_countries": ["DE", "US"]},
        "shipping_options": [{"shipping_rate_data": {"type": "fixed_amount", "display_name": "Standard",
                                                     "tax_behavior": "inclusive",
                                                     "fixed_amount": {"amount": 500, "currency": "usd"}}}],
        "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 10000,
                                                      "tax_behavior": "inclusive",
                                                      "product_data": {"name": "Book"}}}]})
    page = TestApp(app).get(f"/offline-checkout/{session.id}")
    assert "Total before tax" not in page.text and "Total due" in page.text and "Pay $105.00" in page.text
    assert page.html.find("dt", string="Tax (included)")  # not a line to add up
    form = page.forms["pay"]
    form["address_country"] = "DE"
    updated = form.submit("action", value="update")
    assert "Pay $105.00" in updated.text  # the same total, its tax now shown
    assert s.peek_session(session.id)["status"] == "open"
