"""Operability: one log line per request and per Stripe call, never a secret or card number; /healthz tells the truth."""

import contextlib
import logging
import os
import re
import sqlite3

import pytest

ACCESS = re.compile(r"^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH) (\S+) status=(\d{3}) duration_ms=\d+\.\d$")
STRIPE = re.compile(r"^stripe (GET|POST) (/v1/\S+) status=(\d{3}|unreachable) duration_ms=\d+\.\d "
                    r"request_id=(req_\w+|-)$")
CARD = "4242424242424242"


@pytest.fixture
def served(make_shopper):
    """A shopper on the app as `python shop.py` serves it (the app writes its own access lines)."""
    return make_shopper


def lines(caplog, name):
    return [r.getMessage() for r in caplog.records if r.name == name]


def stripe_calls(caplog):
    """The shop's line for each Stripe call (the shop.stripe logger's other lines are warnings)."""
    return [r.getMessage() for r in caplog.records if r.name == "shop.stripe" and r.levelno == logging.INFO]


def pay_on_page(shopper, location):
    form = shopper.get(location).forms["pay"]
    values = {"email": "reader@example.com", "name": "Ada Reader", "cardholder_name": "Ada Reader",
              "card_number": CARD, "card_expiry": "12 / 34", "card_cvc": "123", "phone": "+1 555 010 0000",
              "address_line1": "1 Main St", "address_city": "Springfield", "address_postal_code": "12345",
              "address_country": "US"}
    for name, value in values.items():
        if name in form.fields:
            form[name] = value
    return form.submit(status=303)


def test_one_access_line_per_request(served, caplog):
    shopper = served()
    caplog.set_level(logging.DEBUG)
    responses = [shopper.get("/"), shopper.get("/cart"), shopper.get("/nope", status=404),
                 shopper.put("/cart", status=405), shopper.get("/static/style.css"), shopper.get("/healthz")]
    responses.append(shopper.add(shopper.shop.catalog().products[0].id))
    access = lines(caplog, "shop.access")
    # csrf() and add() make a GET / and a POST /cart each: one line per request, in order
    assert len(access) == len(responses) + 1
    parsed = [ACCESS.match(line) for line in access]
    assert all(parsed), access
    assert [(m[1], m[2], m[3]) for m in parsed] == [
        ("GET", "/", "200"), ("GET", "/cart", "200"), ("GET", "/nope", "404"), ("PUT", "/cart", "405"),
        ("GET", "/static/style.css", "200"), ("GET", "/healthz", "200"), ("GET", "/", "200"),
        ("POST", "/cart", "303")]
    assert not any("X-Request-Id" in r.headers for r in responses)


def test_a_crash_is_logged_once_with_status_500_and_no_traceback_to_the_browser(served, caplog, monkeypatch):
    shopper = served()
    caplog.set_level(logging.DEBUG)
    shopper.add(shopper.shop.catalog().products[0].id)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire at /secret/path")
    monkeypatch.setattr(shopper.shop.orders.ledger, "start_order", broken)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=500, expect_errors=True)
    assert "Traceback" not in page.text and "disk on fire" not in page.text
    assert page.headers["Content-Security-Policy"]
    (line,) = [line for line in lines(caplog, "shop.access") if line.startswith("POST /checkout")]
    assert ACCESS.match(line)[3] == "500"
    assert [line for line in lines(caplog, "shop") if "RuntimeError" in line] == [
        "unhandled RuntimeError on POST /checkout"]


def test_paths_cannot_forge_log_lines(served, caplog):
    shopper = served()
    caplog.set_level(logging.DEBUG)
    shopper.get("/x%0aINFO%20shop.access%20GET%20/admin%20status=200%0d", status=404)
    shopper.get("/static/%0a%1b[31mred", status=404)
    for record in caplog.records:
        assert "\n" not in record.getMessage() and "\r" not in record.getMessage() and "\x1b" not in record.getMessage()
    assert lines(caplog, "shop.access")[0].startswith(r"GET /x\nINFO shop.access GET /admin status=200\r status=404 ")


def test_paths_cannot_forge_the_line_of_a_refusal(served, caplog):
    shopper = served(admin_password="a-long-admin-password")
    shopper.authorization = ("Basic", ("admin", "wrong"))
    for _ in range(10):
        shopper.get("/admin", status=401)
    caplog.set_level(logging.DEBUG)
    shopper.get("/admin/orders/x%0aERROR%20shop:%20forged%0d", status=429)
    (line,) = [line for line in lines(caplog, "shop") if line.startswith("refused ")]
    assert line.startswith(r"refused GET /admin/orders/x\nERROR shop: forged\r: 429 ")
    for record in caplog.records:
        assert "\n" not in record.getMessage() and "\r" not in record.getMessage()


def test_one_line_per_stripe_call_with_status_duration_and_request_id(served, caplog):
    shopper = served()
    caplog.set_level(logging.DEBUG)
    shopper.add(shopper.shop.catalog().products[0].id)
    to_stripe = shopper.checkout()
    pay_on_page(shopper, to_stripe.location)
    session_id = shopper.session_id(to_stripe)
    shopper.get("/success", {"session_id": session_id})
    shopper.get("/success", {"session_id": "cs_test_doesnotexist"}, status=404)
    calls = [STRIPE.match(line) for line in stripe_calls(caplog)]
    assert all(calls), stripe_calls(caplog)
    assert [(m[1], m[2], m[3]) for m in calls] == [("POST", "/v1/checkout/sessions", "200"),
                                                   ("GET", "/v1/checkout/sessions/{id}", "200")]
    assert all(m[4].startswith("req_") for m in calls)


def test_a_failed_stripe_call_logs_its_status_and_request_id(served, caplog):
    shopper = served(stripe_max_retries=0)
    caplog.set_level(logging.DEBUG)
    shopper.add(shopper.shop.catalog().products[0].id)
    shopper.standin.faults.add("POST /v1/checkout/sessions", "500")
    shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    shopper.standin.faults.add("POST /v1/checkout/sessions", "reset")
    shopper.post("/checkout", {"csrf_token": shopper.csrf()}, status=503)
    calls = [STRIPE.match(line) for line in stripe_calls(caplog)]
    assert [(m[3], m[4][:4]) for m in calls] == [("500", "req_"), ("unreachable", "-")]


def test_no_secret_or_card_number_in_any_log_line(served, caplog, monkeypatch):
    monkeypatch.setenv("STRIPE_LOG", "debug")  # the stripe library's own request and response logging, at its most
    webhook_secret = "whsec_" + "9" * 32
    shopper = served(stripe_webhook_secret=webhook_secret)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="stripe")  # `shop.py` quiets it to WARNING; here it says everything
    shopper.add(shopper.shop.catalog().products[0].id)
    to_stripe = shopper.checkout()
    pay_on_page(shopper, to_stripe.location)
    shopper.get(f"/success?session_id={shopper.session_id(to_stripe)}")
    shopper.post("/webhook", b"{}", headers={"Stripe-Signature": "t=1,v1=00"}, status=400)
    shopper.post("/checkout", {"csrf_token": "forged"}, status=403)
    secrets = [webhook_secret, CARD, "4242 4242 4242 4242", shopper.shop.guard.secret.decode(), shopper.csrf(),
               shopper.cookies["sid"], shopper.standin.webhook_secret, "sk_test_offline"]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "stripe" in {r.name for r in caplog.records}  # the library's logger was captured too
    for secret in secrets:
        assert secret not in text, secret


# -- /healthz ------------------------------------------------------------------------------------------------------

def test_healthz_reports_a_broken_database_and_recovers(shopper):
    assert shopper.get("/healthz").text == "ok\n"
    path = shopper.shop.config.data_dir / "shop.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE orders RENAME TO orders_moved")
    page = shopper.get("/healthz", status=503)
    assert page.text.startswith("unhealthy\n") and "database: OperationalError" in page.text
    assert str(path) not in page.text and page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE orders_moved RENAME TO orders")
    assert shopper.get("/healthz").text == "ok\n"


def test_healthz_reports_an_unreadable_database(shopper, monkeypatch):
    @contextlib.contextmanager
    def unavailable(timeout=None):
        raise sqlite3.OperationalError("disk I/O error")
        yield
    monkeypatch.setattr(shopper.shop.orders.ledger.db, "read", unavailable)
    page = shopper.get("/healthz", status=503)
    assert "database: OperationalError" in page.text and "disk" not in page.text


def test_healthz_reports_database_and_catalog_together(make_shopper, catalog_copy, monkeypatch):
    shopper = make_shopper(catalog=str(catalog_copy))
    catalog_copy.write_text("{ not json")
    os.utime(catalog_copy, ns=(1, 2_000_000_000_000_000_000))

    @contextlib.contextmanager
    def unavailable(timeout=None):
        raise sqlite3.DatabaseError("file is not a database")
        yield
    monkeypatch.setattr(shopper.shop.orders.ledger.db, "read", unavailable)
    lines_ = shopper.get("/healthz", status=503).text.splitlines()
    assert lines_[0] == "unhealthy" and lines_[1] == "database: DatabaseError"
    assert lines_[2].startswith("catalog: ") and str(catalog_copy) not in lines_[2]


def test_a_request_id_from_the_client_is_neither_echoed_nor_logged(make_shopper, caplog):
    shopper = make_shopper()
    caplog.set_level(logging.INFO)
    page = shopper.get("/", headers={"X-Request-Id": "forged-id"})
    assert "X-Request-Id" not in page.headers
    assert "forged-id" not in "\n".join(r.getMessage() for r in caplog.records)
