"""The baseline: a minimal Flask app in the shape of Stripe's own samples (stripe-samples, "accept a payment" with
Checkout), facing the same Stripe as the shop. No ledger, no CSRF, no cart: the least a Checkout integration does.

    STRIPE_SECRET_KEY=sk_test_... STRIPE_API_BASE=http://127.0.0.1:12111 STRIPE_WEBHOOK_SECRET=whsec_... \
        python bench/flask_sample.py --port 4242
"""

import argparse
import json
import os
from pathlib import Path

import stripe
from flask import Flask, abort, jsonify, redirect, request

ROOT = Path(__file__).resolve().parents[1]
stripe.api_key = os.environ["STRIPE_SECRET_KEY"]
if os.environ.get("STRIPE_API_BASE"):
    stripe.api_base = os.environ["STRIPE_API_BASE"]
endpoint_secret = os.environ["STRIPE_WEBHOOK_SECRET"]
catalog = json.loads((ROOT / "catalog.json").read_text())
PRODUCTS = {p["id"]: p for p in catalog["products"]}
CURRENCY = catalog["shop"]["currency"]
DOMAIN = "http://127.0.0.1:{port}"

app = Flask(__name__)
PAGE = ("<!doctype html><title>Checkout</title><form action=\"/checkout\" method=\"post\">"
        "<input type=\"hidden\" name=\"product_id\" value=\"moby-dick\">"
        "<input type=\"number\" name=\"quantity\" value=\"1\"><button>Buy now</button></form>")


@app.get("/")
def index():
    return PAGE


@app.post("/checkout")
def create_checkout_session():
    product = PRODUCTS.get(request.form.get("product_id", ""))
    if product is None:
        abort(400)
    session = stripe.checkout.Session.create(
        line_items=[{"price_data": {"currency": CURRENCY, "unit_amount": product["price"],
                                    "product_data": {"name": product["name"]}},
                     "quantity": int(request.form.get("quantity", 1))}],
        mode="payment",
        success_url=DOMAIN + "/success?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=DOMAIN + "/",
    )
    return redirect(session.url, code=303)


@app.get("/success")
def success():
    session = stripe.checkout.Session.retrieve(request.args.get("session_id", ""))
    return f"<!doctype html><title>Thanks</title><p>Payment {session.payment_status}. Thanks for your order!</p>"


@app.post("/webhook")
def webhook():
    try:
        event = stripe.Webhook.construct_event(request.data, request.headers.get("Stripe-Signature", ""),
                                               endpoint_secret)
    except (ValueError, stripe.SignatureVerificationError):
        return jsonify(success=False), 400
    if event["type"] in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        fulfill_checkout(event["data"]["object"]["id"])
    return jsonify(success=True)


def fulfill_checkout(session_id):
    """As in Stripe's fulfilment guide: retrieve the session with its line items, then fulfil if paid."""
    session = stripe.checkout.Session.retrieve(session_id, expand=["line_items"])
    if session.payment_status != "unpaid":
        app.logger.debug("fulfil %s", session_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=4242)
    args = parser.parse_args()
    DOMAIN = DOMAIN.format(port=args.port)
    app.run(host="127.0.0.1", port=args.port, threaded=True)
