"""/admin, the orders page: only with ADMIN_PASSWORD, Basic auth with a limit on failures, list, filter, search,
details, refunds behind a confirmation, CSRF, and the CSV export (SQLite and PostgreSQL)."""

import base64
import csv
import inspect
import io
import re

import pytest

from tests.conftest import DISPUTED, INQUIRY, edit_catalog, handoff, order, paid, pay_form, start, wire
from webshop import mail, merchant
from webshop.admin import minor
from webshop.fulfilment import CSV_FIELDS, write_csv
from webshop.settings import ConfigError, load_config

PASSWORD = "correct horse battery"


def auth(user="admin", password=PASSWORD):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def admin(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:  # stock counted, so that a refund may put copies back
        for product in data["products"]:
            product["stock"] = 50
    return wire(make_shopper(admin_password=PASSWORD, catalog=str(catalog_copy)))


def token(shop):
    """The CSRF token of this browser, as the shop's forms carry it (the same on every page)."""
    return shop.csrf()


def test_the_shipping_the_shopper_chose_is_on_the_hand_off_the_order_page_and_the_confirmation(admin):
    """The warehouse must know to send it express, and the shopper sees what the shipping line paid for."""
    catalog = admin.shop.catalog()
    express = catalog.shipping_options[1].name
    paying = pay_form(admin, admin.checkout(product_id=catalog.products[0].id).location, shipping_option="1")
    assert f"<dt>Delivery</dt><dd>{express}</dd>" in admin.get(paying.location).text
    admin.standin.deliver_pending()
    [record] = handoff(admin)
    assert record["shipping_method"] == express
    assert f"<p>Delivery: {express}</p>" in admin.get(f"/admin/orders/{record['order_id']}", headers=auth()).text


def test_the_orders_page_names_a_catalog_edit_that_was_not_loaded(make_shopper, catalog_copy):
    shop = make_shopper(admin_password=PASSWORD, catalog=str(catalog_copy))
    assert "was not loaded" not in shop.get("/admin", headers=auth()).text
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["price"] = "12.99"
    page = shop.get("/admin", headers=auth())
    alert = page.html.find(role="alert")
    assert "catalog.json: the last edit was not loaded (1 problem" in alert.text
    assert 'products[0].price: must be a positive integer in minor units, got "12.99"' in alert.text
    assert alert.text.count("products[0].price") == 1  # said once, in the list
    assert shop.get("/").status_int == 200  # the shop goes on with the last good catalog


@pytest.mark.parametrize("behavior, label, included", [("exclusive", "Tax", "no"),
                                                       ("inclusive", "Tax (included)", "yes")])
def test_an_order_page_its_command_and_the_csv_say_whether_the_tax_was_in_the_prices(
        make_shopper, catalog_copy, data_dir, database_url, monkeypatch, capsys, behavior, label, included):
    """Otherwise subtotal, shipping and tax add up to more than the total, with nothing to say why."""
    with edit_catalog(catalog_copy) as data:
        data["tax"] = {"mode": "automatic", "behavior": behavior}
    admin = wire(make_shopper(catalog=str(catalog_copy), admin_password=PASSWORD))
    o = paid(admin)
    assert f">{label}<" in admin.get(f"/admin/orders/{o['id']}", headers=auth()).text
    header, row = rows(admin.get("/admin/orders.csv", headers=auth()).text)
    assert dict(zip(header, row))["tax included"] == included
    assert dict(zip(header, row))["delivery"] == "Standard shipping"  # the option paid for, as the carrier needs
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", database_url)
    capsys.readouterr()
    assert merchant.main(["order", o["id"]]) == 0
    assert re.search(rf"^  {re.escape(label)} +\$", capsys.readouterr().out, re.M)


def test_an_order_page_writes_the_discount_as_taken_off(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["promotions"] = [{"code": "TENOFF", "amount_off": 1000}]
    admin = wire(make_shopper(catalog=str(catalog_copy), admin_password=PASSWORD))
    session_id = start(admin, "moby-dick")
    admin.standin.pay(session_id, promotion_code="TENOFF")
    admin.standin.deliver_pending()
    page = admin.get(f"/admin/orders/{order(admin, session_id)['id']}", headers=auth())
    cells = {tr.th.text: tr.td.text for tr in page.html.find("table").tfoot.find_all("tr")}
    assert cells["Discount (TENOFF)"] == "−$10.00" and not cells["Shipping"].startswith("−")


def test_the_merchant_s_pages_lead_to_the_orders_not_to_a_shopper_s_cart(admin):
    o = paid(admin)
    for url in ("/admin", f"/admin/orders/{o['id']}"):
        nav = admin.get(url, headers=auth()).html.find("nav")
        assert nav.a["href"] == "/admin" and "Cart" not in nav.text
    assert admin.get("/").html.find("nav").a["href"] == "/cart"


def test_admin_pages_forms_may_post_only_to_the_shop(admin):
    """Only the shopper's pages send a form on to Checkout (on Stripe's or a custom domain): /admin's stay here."""
    def form_action(response):
        return [d for d in response.headers["Content-Security-Policy"].split("; ") if d.startswith("form-action")]
    o = paid(admin)
    for page in (admin.get("/admin", headers=auth()), admin.get(f"/admin/orders/{o['id']}", headers=auth()),
                 admin.get("/admin", status=401), admin.get("/admin/orders/ord_nope", headers=auth(), status=404)):
        assert form_action(page) == ["form-action 'self'"], page.request.path
    assert form_action(admin.get("/")) == ["form-action 'self' https:"]


def test_without_a_password_there_is_no_admin(make_shopper):
    shop = make_shopper()
    for path in ("/admin", "/admin/orders.csv", "/admin/orders/ord_" + "0" * 24):
        assert "All orders" not in shop.get(path, headers=auth(), status=404).text  # no link to another 404
    assert "All orders" not in make_shopper(admin_password=PASSWORD).get("/administrator", status=404).text


@pytest.mark.parametrize("headers", [{}, auth(password="wrong"), auth(user="root"), {"Authorization": "Basic !!"},
                                     {"Authorization": "Bearer " + PASSWORD}])
def test_a_missing_or_wrong_password_is_401_with_a_challenge(admin, headers):
    page = admin.get("/admin", headers=headers, status=401)
    assert page.headers["WWW-Authenticate"].startswith('Basic realm="Shop admin"')
    assert "Sign in as admin" in page.text and "<h1>Sign in</h1>" in page.text
    assert '<a href="/admin">All orders</a>' in page.text  # after Cancel on the browser's sign-in prompt
    assert admin.get("/admin/orders.csv", headers=headers, status=401)


def test_ten_failed_sign_ins_from_an_address_are_429_for_ten_minutes(admin):
    there, elsewhere = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "198.51.100.1"}
    for _ in range(10):
        admin.get("/admin", headers=auth(password="guess"), extra_environ=there, status=401)
    for headers in (auth(password="guess"), auth(), {**auth(), "X-Forwarded-For": "192.0.2.1"}):
        page = admin.get("/admin", headers=headers, extra_environ=there, status=429)
        assert 590 <= int(page.headers["Retry-After"]) <= 601 and "Too many failed sign-ins" in page.text
    assert admin.get("/admin", headers=auth(), extra_environ=elsewhere, status=200)
    for _ in range(20):  # visits without credentials (the browser asking first) are not failures
        admin.get("/admin", extra_environ=elsewhere, status=401)
    assert admin.get("/admin", headers=auth(), extra_environ=elsewhere, status=200)


def test_ipv6_sign_ins_count_per_64_a_network_one_subscriber_has_whole(admin):
    for i in range(10):  # every address of a /64 is the attacker's: one guess from each is still ten guesses
        admin.get("/admin", headers=auth(password="guess"), extra_environ={"REMOTE_ADDR": f"2001:db8:0:7::{i + 1:x}"},
                  status=401)
    admin.get("/admin", headers=auth(password="guess"), extra_environ={"REMOTE_ADDR": "2001:db8:0:7:ffff::1"},
              status=429)
    assert admin.get("/admin", headers=auth(), extra_environ={"REMOTE_ADDR": "2001:db8:0:8::1"}, status=200)
    for i in range(10):  # an IPv4 address written as IPv6 is the IPv4 address
        admin.get("/admin", headers=auth(password="guess"), extra_environ={"REMOTE_ADDR": "::ffff:203.0.113.9"},
                  status=401)
    admin.get("/admin", headers=auth(), extra_environ={"REMOTE_ADDR": "203.0.113.9"}, status=429)
    assert admin.get("/admin", headers=auth(), extra_environ={"REMOTE_ADDR": "203.0.113.10"}, status=200)


def test_only_addresses_that_failed_to_sign_in_are_remembered(admin):
    (route,) = [r for r in admin.app.routes if r.rule == "/admin"]
    authorize = inspect.getclosurevars(route.callback).nonlocals["authorize"]
    failed = inspect.getclosurevars(authorize).nonlocals["failed"]
    for i in range(50):  # a browser asking first, and the merchant signed in, from many addresses
        admin.get("/admin", extra_environ={"REMOTE_ADDR": f"2001:db8::{i:x}"}, status=401)
        admin.get("/admin", headers=auth(), extra_environ={"REMOTE_ADDR": f"2001:db8::1:{i:x}"}, status=200)
    assert failed == {}
    admin.get("/admin", headers=auth(password="guess"), extra_environ={"REMOTE_ADDR": "203.0.113.7"}, status=401)
    assert list(failed) == ["203.0.113.7"] and len(failed["203.0.113.7"]) == 1


def test_behind_the_trusted_proxy_the_limit_counts_the_address_it_names(make_shopper):
    """Under gunicorn REMOTE_ADDR is the proxy's: counting it would let anyone lock the merchant out."""
    admin = make_shopper(admin_password=PASSWORD, trusted_proxy="10.0.0.1")
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(10):  # the attacker may write anything to the left of what the proxy appends
        admin.get("/admin", headers={**auth(password="guess"), "X-Forwarded-For": "192.0.2.9, 203.0.113.7"},
                  extra_environ=proxy, status=401)
    assert admin.get("/admin", headers={**auth(), "X-Forwarded-For": "203.0.113.7"}, extra_environ=proxy,
                     status=429)
    assert admin.get("/admin", headers={**auth(), "X-Forwarded-For": "198.51.100.1"}, extra_environ=proxy,
                     status=200)  # the merchant, elsewhere, still signs in
    assert admin.get("/admin", headers=auth(), extra_environ={"REMOTE_ADDR": "198.51.100.2"}, status=200)


def test_orders_newest_first_filtered_by_status_and_searched_by_id_or_email(admin):
    first, second = paid(admin), paid(admin)
    admin.standin.deliver_pending()
    unpaid = order(admin, start(admin))
    page = admin.get("/admin", headers=auth())
    ids = re.findall(r'<a href="/admin/orders/(ord_\w+)">', page.text)
    assert ids == [unpaid["id"], second["id"], first["id"]]
    assert "<caption>3 orders, newest first</caption>" in page.text and "$" in page.text
    rows = page.html.find("table").tbody.find_all("tr")
    assert {(td["data-label"]) for tr in rows for td in tr.find_all("td")[-2:]} == {"Total", "Refunded"}  # phones
    totals = [tr.find_all("td")[-2].text for tr in rows]
    assert totals[0].endswith(" (items)") and not any(t.endswith("(items)") for t in totals[1:])  # nothing charged yet
    listed = lambda query: re.findall(r'/admin/orders/(ord_\w+)"', admin.get("/admin?" + query, headers=auth()).text)  # noqa: E731
    assert listed("status=open") == [unpaid["id"]]
    assert len(re.findall(r'/admin/orders/(ord_\w+)"', admin.get("/admin?status=paid", headers=auth()).text)) == 2
    assert re.findall(r'/admin/orders/(ord_\w+)"', admin.get(f"/admin?q={first['id'][:14]}", headers=auth()).text) \
        in ([first["id"]], [second["id"], first["id"]], [unpaid["id"], second["id"], first["id"]])
    found = admin.get(f"/admin?q={first['id'].upper()}", headers=auth()).text
    assert re.findall(r'/admin/orders/(ord_\w+)"', found) == [first["id"]]
    by_email = admin.get("/admin?q=JENNY.ROSEN", headers=auth()).text
    assert len(re.findall(r'/admin/orders/(ord_\w+)"', by_email)) == 2
    for nothing in ("%", "ord%", "x_y", "\\", "nobody@example.com"):  # wildcards are plain characters
        assert "<caption>0 orders" in admin.get("/admin", {"q": nothing}, headers=auth()).text
    assert "3 orders" in admin.get("/admin?status=bogus", headers=auth()).text  # an unknown status: all
    for path in ("/admin?q=%ff", "/admin/orders.csv?q=%C0%80"):  # not UTF-8: never every order
        assert "could not be read" in admin.get(path, headers=auth(), status=400).text


def test_older_orders_page_on_without_skipping_orders_made_at_the_same_moment(admin, monkeypatch):
    """100 orders a page; "Older orders" goes on from the last one listed, even where many share its time."""
    monkeypatch.setattr("webshop.ledger.utcnow", lambda: "2026-12-07T10:00:00.000000Z")
    item = [{"product_id": "walden", "name": "Walden", "unit_amount": 999, "quantity": 1}]
    made = {admin.shop.orders.ledger.start_order(f"b{n}", "usd", item, per_minute=10)[0] for n in range(103)}
    first = admin.get("/admin", headers=auth())
    listed = re.findall(r'<a href="/admin/orders/(ord_\w+)">', first.text)
    second = admin.get(first.html.find("a", string="Older orders")["href"], headers=auth())
    rest = re.findall(r'<a href="/admin/orders/(ord_\w+)">', second.text)
    assert (len(listed), len(rest)) == (100, 3) and set(listed) | set(rest) == made
    assert "Older orders" not in second.text
    older_link = admin.get("/admin?before=2026-12-07T10:00:00.000000Z", headers=auth())  # as links were made before
    assert "<caption>0 orders" in older_link.text  # before that moment: none listed again


def test_an_order_page_shows_items_amounts_address_emails_and_history(admin):
    o = paid(admin)
    mail.send_due(admin.shop.orders)  # the confirmation (offline: written as a .eml file)
    page = admin.get(f"/admin/orders/{o['id']}", headers=auth()).text
    for text in (o["items"][0]["name"], o["customer_email"], o["payment_intent"], "Jenny Rosen", "1 Test Street",
                 "Phone: +1 555 010 0000",
                 "12345 Testville", "$19.29" if o["amount_total"] == 1929 else "", "<h2>History</h2>", "checkout",
                 "fulfilled", "<h2>Emails</h2>", "confirmation", 'action="/admin/orders/' + o["id"] + '/refund"',
                 'data-label="Amount"'):
        assert text in page
    assert re.search(r'data-label="Sent">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<', page)  # as the history's times read
    assert admin.get("/admin/orders/ord_" + "f" * 24, headers=auth(), status=404)
    assert admin.get("/admin/orders/../../etc", headers=auth(), status=404)


def test_a_partial_refund_that_restocks_says_it_gives_back_every_copy_of_the_order(admin):
    o = paid(admin, quantity=3)
    confirm = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "partial",
                                                             "amount": "1.00", "restock": "1"}, headers=auth())
    said = "Stripe returns $1.00 to the shopper’s card, and all 3 of the order’s copies go back in stock"
    assert said in confirm.text
    confirm.forms[0].submit(headers=auth(), status=303)
    page = admin.get(f"/admin/orders/{o['id']}", headers=auth())  # the rest can be refunded, the copies are back
    assert "The order’s copies are back in stock already." in page.text and 'name="restock"' not in page.text
    rest = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "full",
                                                          "restock": "1"}, headers=auth())
    assert "to the shopper’s card. A refund cannot be undone." in rest.text  # no promise of a second restock


def test_without_a_stock_count_a_refund_offers_no_restock(make_shopper):
    shop = wire(make_shopper(admin_password=PASSWORD))  # catalog.json as shipped: no product counts its stock
    page = shop.get(f"/admin/orders/{paid(shop)['id']}", headers=auth())
    assert "Put the copies back in stock" not in page.text and "restock" not in page.forms[0].fields


def test_after_a_refund_failed_the_same_refund_confirmed_again_is_a_new_one_not_a_replay(admin):
    o = paid(admin)
    url = f"/admin/orders/{o['id']}/refund"
    form = admin.post(url, {"csrf_token": token(admin), "how": "partial", "amount": "5.00"}, headers=auth()).forms[0]
    first = form.submit(headers=auth(), status=303).location.split("refunded=")[1].split("&")[0]
    admin.standin.deliver_pending()
    admin.standin.fail_refund(first)  # the card was closed: the $5.00 went back to the balance
    admin.standin.deliver_pending()
    assert order(admin, o["session_id"])["status"] == "paid"
    form = admin.post(url, {"csrf_token": token(admin), "how": "partial", "amount": "5.00"}, headers=auth()).forms[0]
    again = form.submit(headers=auth(), status=303).location
    assert "replayed" not in again and first not in again
    admin.standin.deliver_pending()
    assert (order(admin, o["session_id"])["status"], order(admin, o["session_id"])["amount_refunded"]) == (
        "partially_refunded", 500)


def test_a_partial_then_full_refund_each_confirmed_first(admin):
    o = paid(admin)
    url = f"/admin/orders/{o['id']}/refund"
    charge = lambda: admin.shop.orders.stripe.v1.payment_intents.retrieve(  # noqa: E731
        o["payment_intent"], {"expand": ["latest_charge"]}).latest_charge
    confirm = admin.post(url, {"csrf_token": token(admin), "how": "partial", "amount": "5.00"}, headers=auth())
    assert "Refund $5.00 of order" in confirm.text and charge().amount_refunded == 0  # asked, not done
    form = confirm.forms[0]
    assert form["minor"].value == "500" and form["confirm"].value == "yes"
    done = form.submit(headers=auth(), status=303)
    assert done.location.startswith(f"/admin/orders/{o['id']}?refunded=re_")
    assert "reload in a moment" in admin.get(done.location, headers=auth()).text  # the event has not arrived yet
    assert charge().amount_refunded == 500
    form.submit(headers=auth(), status=303)  # the same confirmation twice (a double click): one refund at Stripe
    assert charge().amount_refunded == 500
    admin.standin.deliver_pending()
    after = order(admin, o["session_id"])
    assert (after["status"], after["amount_refunded"]) == ("partially_refunded", 500)
    again = form.submit(headers=auth(), status=200)  # Back and Confirm once the event has arrived: asked again
    assert "$5.00 has been refunded so far" in again.text and charge().amount_refunded == 500
    page = admin.get(done.location, headers=auth())
    assert "and the order below shows it" in page.text  # the event arrived
    history = [[td.text for td in tr.find_all("td")] for tr in page.html.find_all("table")[-1].tbody.find_all("tr")]
    assert ["open", "checkout", "1 line"] == history[0][1:] and history[-1][2].startswith("webhook evt_")
    assert history[-1][3] == f"refunded $5.00 of ${o['amount_total'] // 100}.{o['amount_total'] % 100:02d}"
    created = page.html.find("dt", string="Created").find_next("dd").text
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", created)
    rest = admin.post(url, {"csrf_token": token(admin), "how": "full", "restock": "1"}, headers=auth())
    left = o["amount_total"] - 500
    copies = sum(i["quantity"] for i in o["items"])
    said = "the order’s copy goes" if copies == 1 else f"all {copies} of the order’s copies go"
    assert f"Refund ${left // 100}.{left % 100:02d}" in rest.text and f", and {said} back in stock" in rest.text
    rest.forms[0].submit(headers=auth(), status=303)
    admin.standin.deliver_pending()
    after = order(admin, o["session_id"])
    assert (after["status"], after["amount_refunded"], after["restocked"]) == ("refunded", o["amount_total"], 1)
    emails = admin.get(done.location, headers=auth()).html.find_all("table")[-2].tbody.find_all("th")
    total = f"${o['amount_total'] // 100}.{o['amount_total'] % 100:02d}"
    assert [e.text for e in emails if e.text.startswith("refund")] == [  # newest first, each told apart
        f"refund ({total} refunded in all)", "refund ($5.00 refunded in all)"]
    assert "only paid orders can be refunded" in admin.post(url, {"csrf_token": token(admin)}, headers=auth(),
                                                             status=409).text


@pytest.mark.parametrize("query", ["refunded=ANYTHING&before=0", "refunded=re_%3Cb%3E&before=0",
                                   "refunded=%E2%80%AEx&replayed=1", "refunded=re_FAKE123&before=0",
                                   "refunded=re_FAKE123&before=0&replayed=1&sig=x"])
def test_the_order_page_shows_a_refund_notice_only_after_its_own_refund(admin, query):
    """A link anyone can send the merchant (a shopper knows the order id) must not tell of a refund never made."""
    o = paid(admin)
    page = admin.get(f"/admin/orders/{o['id']}?{query}", headers=auth())
    assert "was made at Stripe" not in page.text and "answered with it again" not in page.text
    confirm = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "full"},
                         headers=auth())
    done = confirm.forms[0].submit(headers=auth(), status=303).location
    refund = done.split("refunded=")[1].split("&")[0]
    assert f"Refund {refund} was made at Stripe" in admin.get(done, headers=auth()).text
    other = done.replace(f"/admin/orders/{o['id']}", f"/admin/orders/{paid(admin)['id']}")  # the same, elsewhere
    assert "was made at Stripe" not in admin.get(other, headers=auth()).text


def test_an_order_the_bank_inquires_about_offers_a_refund_one_charged_back_does_not(admin):
    asked, charged_back = (paid(admin, card=card) for card in (INQUIRY, DISPUTED))
    page = admin.get(f"/admin/orders/{asked['id']}", headers=auth())
    assert "disputed (dispute warning_needs_response)" in page.text
    confirm = page.forms[0].submit(headers=auth())
    confirm.forms[0].submit(headers=auth(), status=303)
    admin.standin.deliver_pending()
    assert order(admin, asked["session_id"])["amount_refunded"] == asked["amount_total"]
    assert "Review the refund" not in admin.get(f"/admin/orders/{asked['id']}", headers=auth()).text  # none left
    page = admin.get(f"/admin/orders/{charged_back['id']}", headers=auth())
    assert "disputed (dispute needs_response)" in page.text and "Review the refund" not in page.text
    assert "only paid orders can be refunded" in admin.post(f"/admin/orders/{charged_back['id']}/refund", {
        "csrf_token": token(admin), "how": "full"}, headers=auth(), status=409).text


def test_the_search_takes_any_language(admin):
    o = paid(admin)
    admin.shop.orders.ledger.transition(o["id"], ("paid",), "paid", "test", customer_email="zoë@example.com")
    page = admin.get("/admin", {"q": "zoë"}, headers=auth())
    assert o["id"] in page.text and 'value="zoë"' in page.text
    admin.shop.orders.ledger.transition(o["id"], ("paid",), "paid", "test", customer_email="ÄRGER@example.com")
    for typed in ("ärger", "ÄRGER", "Ärger@EXAMPLE"):  # in any case, as PostgreSQL finds it
        assert o["id"] in admin.get("/admin", {"q": typed}, headers=auth()).text, typed


@pytest.mark.parametrize("path", ["/admin", "/admin/orders.csv"])
def test_a_search_with_a_control_character_matches_no_order_not_every_order(admin, path):
    o = paid(admin)
    for search in ("nobody\x00", "\x00", "a\tb"):
        assert o["id"] not in admin.get(path, {"q": search}, headers=auth(), status=200).text
    admin.get(path, {"q": "\ufeffzoë\u200b"}, headers=auth(), status=200)  # what a pasted address brings along


def test_an_amount_typed_without_choosing_part_of_it_is_what_the_review_offers(admin):
    o = paid(admin)
    review = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "full",
                                                             "amount": "3.00"}, headers=auth())
    assert "Refund $3.00 of order" in review.text and review.forms[0]["minor"].value == "300"


def test_stripe_not_confirming_a_refund_is_said_plainly_and_confirming_again_refunds_once(admin):
    o = paid(admin)
    form = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "full"},
                      headers=auth()).forms[0]
    admin.standin.faults.add("POST /v1/refunds", "500", times=3)  # the first try and both of the SDK's retries
    failed = form.submit(headers=auth(), status=503)
    assert "Stripe did not confirm the refund" in failed.text and "check the payment in the Stripe Dashboard" in \
        failed.text and "Traceback" not in failed.text
    form.submit(headers=auth(), status=303)
    assert len(admin.shop.orders.stripe.v1.refunds.list({"payment_intent": o["payment_intent"]}).data) == 1


def test_back_to_the_form_and_confirming_again_replays_the_one_refund(admin):
    o = paid(admin)
    charge = lambda: admin.shop.orders.stripe.v1.payment_intents.retrieve(  # noqa: E731
        o["payment_intent"], {"expand": ["latest_charge"]}).latest_charge
    review = {"csrf_token": token(admin), "how": "partial", "amount": "5.00"}
    url = f"/admin/orders/{o['id']}/refund"
    admin.post(url, review, headers=auth()).forms[0].submit(headers=auth(), status=303)
    again = admin.post(url, review, headers=auth())  # Back to the form, which the browser sends again
    replayed = again.forms[0].submit(headers=auth(), status=303).follow(headers=auth())
    assert "so Stripe answered with it again and nothing more was refunded" in replayed.text
    assert charge().amount_refunded == 500 and len(admin.shop.orders.stripe.v1.refunds.list(
        {"payment_intent": o["payment_intent"]}).data) == 1
    admin.standin.deliver_pending()  # once the event has arrived, the review says so and a new refund is possible
    third = admin.post(url, review, headers=auth())
    assert "$5.00 has been refunded so far" in third.text
    third.forms[0].submit(headers=auth(), status=303)
    assert charge().amount_refunded == 1000


def test_a_confirmation_whose_key_went_with_another_amount_or_was_made_up_asks_again_and_refunds_nothing(admin):
    o = paid(admin)
    url = f"/admin/orders/{o['id']}/refund"
    refunded = lambda: admin.shop.orders.stripe.v1.payment_intents.retrieve(  # noqa: E731
        o["payment_intent"], {"expand": ["latest_charge"]}).latest_charge.amount_refunded
    form = admin.post(url, {"csrf_token": token(admin), "how": "partial", "amount": "5.00"}, headers=auth()).forms[0]
    form.submit(headers=auth(), status=303)
    form["minor"].force_value("600")  # the same confirmation's key, another amount
    assert "Refund $6.00 of order" in form.submit(headers=auth(), status=200).text and refunded() == 500
    for made_up in ("0" * 32, "f" * 32, "c" * 31 + "d"):  # each a key of its own: a refund each, were it taken
        fields = {"csrf_token": token(admin), "confirm": "yes", "minor": "100", "key": made_up}
        assert "Refund $1.00 of order" in admin.post(url, fields, headers=auth(), status=200).text
    assert refunded() == 500


@pytest.mark.parametrize("typed", ["$2.50", "2.50 USD", "usd 2.50", " $ 2,50 "])
def test_a_refund_amount_may_be_typed_with_its_currency_as_the_page_writes_amounts(admin, typed):
    o = paid(admin)
    page = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "partial",
                                                           "amount": typed}, headers=auth(), status=200)
    assert "Refund $2.50 of order" in page.text


@pytest.mark.parametrize("currency, example, asked", [("usd", "5.00", "$5.00"), ("jpy", "500", "¥500")])
def test_the_amount_fields_example_is_written_in_the_orders_currency_and_taken(make_shopper, catalog_copy, currency,
                                                                                example, asked):
    with edit_catalog(catalog_copy) as data:
        data["shop"]["currency"] = currency
    admin = wire(make_shopper(catalog=str(catalog_copy), admin_password=PASSWORD))
    o = paid(admin)
    hint = admin.get(f"/admin/orders/{o['id']}", headers=auth()).html.find(id="amount-hint").text
    assert hint.startswith(f"for example {example};")
    page = admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin), "how": "partial",
                                                           "amount": example}, headers=auth(), status=200)
    assert f"Refund {asked} of order" in page.text


def test_a_refund_amount_is_read_in_the_order_s_own_currency_as_its_pages_write_it(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["shop"]["currency"] = "eur"
    admin = wire(make_shopper(catalog=str(catalog_copy), admin_password=PASSWORD))
    url = f"/admin/orders/{paid(admin)['id']}/refund"
    asked = lambda typed, status: admin.post(url, {"csrf_token": token(admin), "how": "partial",  # noqa: E731
                                                   "amount": typed}, headers=auth(), status=status)
    assert "Refund €2.50 of order" in asked("€2.50", 200).text and "Refund €2.50" in asked("2,50 EUR", 200).text
    assert "Enter an amount" in asked("$2.50", 400).text  # another currency's sign is not this one's amount
    assert (minor("$1,234.56", "usd"), minor("¥1,500", "jpy"), minor("1,234", "usd"), minor("12,5", "usd")) == (
        123456, 1500, 123400, 1250)
    assert minor("1,23,4", "usd") is None and minor("5$0", "usd") is None and minor("1.500", "jpy") is None
    # three decimals: a comma before three digits is the decimal comma unless a point follows, as 1,5 is 1.500
    assert (minor("1,500", "kwd"), minor("0,500", "kwd"), minor("1,5", "kwd"), minor("1,500.250", "kwd")) == (
        1500, 500, 1500, 1500250)
    assert minor("0,500", "usd") is None and minor(" " * 16000 + "x", "usd") is None


@pytest.mark.parametrize("amount", ["0", "abc", "-1", "5.001", "1e3", "99999.00", "", "$", "€5 €5", "5 usd usd",
                                    "€5", "5$0"])
def test_a_refund_amount_that_is_not_left_to_refund_is_refused(admin, amount):
    o = paid(admin)
    fields = {"csrf_token": token(admin), "how": "partial", "amount": amount, "restock": "1"}
    page = admin.post(f"/admin/orders/{o['id']}/refund", fields, headers=auth(), status=400)
    assert "Enter an amount from $0.01 to" in page.text
    form = page.forms[0]  # on the order's own page, with what was typed, ready to be put right
    assert page.html.h1.text == f"Order {o['id']}" and form["amount"].value == amount and form["how"].value == "partial"
    assert form["restock"].checked  # ticked still: sent again, the refund puts the copies back as asked
    assert page.html.title.text.startswith(f"Error: Order {o['id']}")  # the tab, and a screen reader, say so first
    # where typing puts it right, and scrolled to (no #fragment in the form's address: browsers then skip autofocus)
    assert page.html.find(id="amount").has_attr("autofocus") and "#" not in form.action
    assert not admin.get(f"/admin/orders/{o['id']}", headers=auth()).html.find(id="amount").has_attr("autofocus")
    form["amount"] = "1.00"
    assert "Refund $1.00 of order" in form.submit(headers=auth()).text


@pytest.mark.parametrize("sent", [None, "", "-1", "abc", "1e3", "\u0663", "99999999999999"])
def test_a_confirmation_without_a_valid_amount_refunds_nothing(admin, sent):
    o = paid(admin)
    fields = {"csrf_token": token(admin), "confirm": "yes", "key": "c" * 32}
    if sent is not None:
        fields["minor"] = sent
    page = admin.post(f"/admin/orders/{o['id']}/refund", fields, headers=auth(), status=400)
    assert "Enter an amount from $0.01 to" in page.text
    intent = admin.shop.orders.stripe.v1.payment_intents.retrieve(o["payment_intent"], {"expand": ["latest_charge"]})
    assert intent.latest_charge.amount_refunded == 0


def test_an_unpaid_order_cannot_be_refunded(admin):
    o = order(admin, start(admin))
    assert "Only a paid order" in admin.get(f"/admin/orders/{o['id']}", headers=auth()).text
    admin.post(f"/admin/orders/{o['id']}/refund", {"csrf_token": token(admin)}, headers=auth(), status=409)


@pytest.mark.parametrize("case", ["no token", "wrong token", "foreign origin", "cross-site"])
def test_a_refund_without_the_form_s_protection_is_403_and_refunds_nothing(admin, case):
    o = paid(admin)
    fields = {"csrf_token": token(admin), "how": "full", "confirm": "yes", "minor": "100"}
    headers = dict(auth())
    if case == "no token":
        del fields["csrf_token"]
    elif case == "wrong token":
        fields["csrf_token"] = "x" * 24
    elif case == "foreign origin":
        headers["Origin"] = "https://evil.example"
    else:
        headers["Sec-Fetch-Site"] = "cross-site"
    admin.post(f"/admin/orders/{o['id']}/refund", fields, headers=headers, status=403)
    intent = admin.shop.orders.stripe.v1.payment_intents.retrieve(o["payment_intent"], {"expand": ["latest_charge"]})
    assert intent.latest_charge.amount_refunded == 0


def test_hostile_names_and_emails_are_escaped_on_the_pages(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["name"] = "<script>alert(1)</script>"
    admin = wire(make_shopper(admin_password=PASSWORD, catalog=str(catalog_copy)))
    sid = admin.session_id(admin.checkout(product_id=data["products"][0]["id"], quantity="1"))
    admin.standin.pay(sid, name="<img src=x onerror=alert(2)>", email="<b>x</b>&y@evil.example")
    admin.standin.deliver_pending()
    o = order(admin, sid)
    for path in ("/admin", f"/admin/orders/{o['id']}", "/admin?q=" + "<b>x"):
        page = admin.get(path, headers=auth()).text
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>x</b>" not in page
    detail = admin.get(f"/admin/orders/{o['id']}", headers=auth()).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail and "&lt;b&gt;x&lt;/b&gt;&amp;y@evil.example" in detail
    assert "&lt;img src=x onerror=alert(2)&gt;" in detail


def rows(text):
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))  # the download's byte order mark


def test_csv_export_has_a_header_row_and_each_order_s_values(admin):
    o = paid(admin)
    answer = admin.get("/admin/orders.csv", headers=auth())
    assert answer.content_type == "text/csv" and "attachment" in answer.headers["Content-Disposition"]
    assert answer.body.startswith(b"\xef\xbb\xbfid,created,")  # UTF-8 with its mark: Excel would read × as Ã—
    header, row = rows(answer.text)
    assert header == list(CSV_FIELDS) == ["id", "created", "status", "email", "items", "subtotal", "discount",
                                          "shipping", "tax", "total", "currency", "refunded", "payment reference",
                                          "tax included", "delivery"]
    money = lambda k: f"{o[k] // 100}.{o[k] % 100:02d}"  # noqa: E731
    assert row == [o["id"], o["created"], "paid", o["customer_email"], f"1 × {o['items'][0]['name']}",
                   money("amount_subtotal"), "0.00", money("amount_shipping"), money("amount_tax"),
                   money("amount_total"), "usd", "0.00", o["payment_intent"], "no", "Standard shipping"]
    assert rows(admin.get("/admin/orders.csv?status=open", headers=auth()).text) == [list(CSV_FIELDS)]
    order(admin, start(admin))  # not paid: whether its tax is included is not known yet
    assert rows(admin.get("/admin/orders.csv?status=open", headers=auth()).text)[1][-2:] == ["", ""]


def test_csv_values_that_look_like_formulas_are_neutralised(admin):
    o = paid(admin)
    admin.shop.orders.ledger.transition(o["id"], ("paid",), "paid", "test",
                                        customer_email="=HYPERLINK(\"x\")@e.example")
    made = [{**o, "id": i, "customer_email": e, "items": [{"quantity": 1, "name": n}], "payment_intent": p}
            for i, e, n, p in (("=1+2", "+cmd@x.example", "-2", "@SUM(A1)"), ("\tx", "\rx@y.example", "ok", None))]
    out = io.StringIO()
    write_csv(out, made)
    cells = rows(out.getvalue())[1:]
    assert [c[0] for c in cells] == ["'=1+2", "'\tx"] and [c[3] for c in cells] == ["'+cmd@x.example", "'\rx@y.example"]
    assert cells[0][12] == "'@SUM(A1)" and cells[0][4] == "1 × -2" and cells[1][12] == ""
    exported = rows(admin.get("/admin/orders.csv", headers=auth()).text)
    assert exported[1][3] == "'=HYPERLINK(\"x\")@e.example"


def test_shop_py_orders_csv_is_the_same_export(admin, data_dir, database_url, monkeypatch, capsys):
    paid(admin)
    order(admin, start(admin))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DATABASE_URL", database_url)
    capsys.readouterr()
    assert merchant.main(["orders", "--csv"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("id,") and rows(printed) == rows(admin.get("/admin/orders.csv", headers=auth()).text)
    assert merchant.main(["orders", "--csv", "--status", "open"]) == 0
    assert [r[2] for r in rows(capsys.readouterr().out)] == ["status", "open"]


def test_live_mode_refuses_a_short_admin_password():
    live = {"stripe_secret_key": "sk_live_x", "stripe_webhook_secret": "whsec_x", "base_url": "https://shop.example"}
    with pytest.raises(ConfigError, match="ADMIN_PASSWORD"):
        load_config({**live, "admin_password": "elevenchars"}, environ={})
    assert load_config({**live, "admin_password": "twelve chars"}, environ={}).admin_password == "twelve chars"
    assert load_config({**live}, environ={}).admin_password == ""  # none: no /admin at all
    assert load_config({"admin_password": "short"}, environ={}).admin_password == "short"  # test modes: any
