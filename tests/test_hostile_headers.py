"""Every kind of answer the shop gives (pages, each error status, redirects, static files, health, the payment page)
carries its security headers: a strict Content-Security-Policy, nosniff, a referrer policy, HSTS on https."""

import re

import pytest

from tests.conftest import BASE, browser_at, pay_form


def csp(response):
    return {d.split()[0]: d.split()[1:] for d in response.headers["Content-Security-Policy"].split(";") if d.strip()}


def every_kind_of_response(shopper, monkeypatch):
    """One response of each kind the shop gives: pages, each error status, redirects, static, health, payment."""
    cat = shopper.shop.catalog()
    out = {"home": shopper.get("/"), "cart": shopper.get("/cart"), "404": shopper.get("/nope", status=404),
           "405": shopper.put("/cart", status=405), "403": shopper.post("/cart", {}, status=403),
           "400": shopper.post("/cart", {"csrf_token": shopper.csrf(), "product_id": "nope"}, status=400),
           "413": shopper.post("/cart", {"csrf_token": "x" * 20000}, status=413),
           "static": shopper.get("/static/style.css"), "static 404": shopper.get("/static/.gitignore", status=404),
           "health": shopper.get("/healthz"), "webhook 400": shopper.post("/webhook", "{}", status=400),
           "redirect": shopper.add(cat.products[0].id)}
    out["304"] = shopper.get("/static/style.css", headers={"If-None-Match": out["static"].headers["ETag"]}, status=304)
    to_stripe = shopper.checkout()
    out["to stripe"] = to_stripe
    out["pay page"] = shopper.get(to_stripe.location)
    out["pay 402"] = pay_form(shopper, to_stripe.location, card_number="4000000000000002")
    out["pay 400"] = pay_form(shopper, to_stripe.location, address_country="ZZ", card_expiry="13 / 99")
    assert (out["pay 402"].status_int, out["pay 400"].status_int) == (402, 400)
    out["pay 404"] = shopper.get("/offline-checkout/cs_test_nope", status=404)
    out["confirm"] = shopper.get(pay_form(shopper, to_stripe.location).location)
    out["success 404"] = shopper.get("/success?session_id=cs_test_nope", status=404)
    shopper.standin.faults.add("POST /v1/checkout/sessions", "500", times=10)
    out["503"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": cat.products[1].id},
                              status=503)
    shopper.standin.faults.clear()
    for _ in range(shopper.shop.config.checkout_limit + 1):  # one browser's checkouts in a minute, and one more
        out["429"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": cat.products[1].id},
                                  expect_errors=True)
    assert out["429"].status_int == 429
    monkeypatch.setattr(shopper.shop.orders.ledger, "start_order", lambda *a, **k: 1 / 0)
    out["500"] = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": cat.products[1].id},
                              status=500, expect_errors=True)
    monkeypatch.setattr(shopper.shop.orders.ledger, "ping", lambda: 1 / 0)
    out["health 503"] = shopper.get("/healthz", status=503)
    return out


@pytest.mark.parametrize("base_url", [BASE, "https://shop.example"])
def test_security_headers_on_every_kind_of_response(make_shopper, monkeypatch, base_url):
    shopper = browser_at(make_shopper, base_url, stripe_max_retries=0)
    for kind, response in every_kind_of_response(shopper, monkeypatch).items():
        policy = csp(response)
        assert policy["default-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"], kind
        assert policy["script-src"] == ["'self'"] and policy["object-src"] == ["'none'"], kind
        assert policy["form-action"] == ["'self'", "https:"], kind  # Checkout's page, on Stripe's or a custom domain
        assert not any("unsafe" in v for values in policy.values() for v in values), kind
        assert response.headers["X-Content-Type-Options"] == "nosniff", kind
        assert response.headers["Referrer-Policy"] in ("strict-origin-when-cross-origin", "no-referrer",
                                                       "same-origin", "strict-origin"), kind
        assert ("Strict-Transport-Security" in response.headers) == base_url.startswith("https:"), kind
        if response.content_type == "text/html":
            html = response.text
            assert not re.search(r"<script\b(?![^>]*\bsrc=)", html, re.I), kind  # no inline script
            assert not re.search(r"\son[a-z]+\s*=", html, re.I), kind           # no inline handlers
            assert not re.search(r"\sstyle\s*=|<style\b|javascript:", html, re.I), kind
            assert response.headers.get("Cache-Control") == "no-store", kind


@pytest.mark.parametrize("status", [429, 503])
def test_a_refusal_to_come_back_later_says_when(make_shopper, status):
    shopper = make_shopper(stripe_max_retries=0, checkout_limit=1)
    product = shopper.shop.catalog().products[0].id
    if status == 503:
        shopper.standin.faults.add("POST /v1/checkout/sessions", "reset")
    else:
        shopper.checkout(product_id=product)
    page = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": product}, status=status)
    assert int(page.headers["Retry-After"]) > 0 and 'role="alert"' in page.text
