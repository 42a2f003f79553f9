"""Plain helpers shared by the stand-in's test modules: the shop's session parameters, Stripe shape checks, a
standalone stand-in process and the payment page's form."""
import json
import os
import subprocess
import sys
import time
import urllib.request

from tests.conftest import ROOT, free_port


def shop_params(**over):
    """Exactly the Checkout Session parameters the shop sends (contract), with overrides."""
    p = {
        "mode": "payment",
        "line_items": [
            {"quantity": 2, "price_data": {"currency": "usd", "unit_amount": 1250, "tax_behavior": "exclusive",
                                           "product_data": {"name": "Dune", "description": "Desert planet novel",
                                                            "images": ["http://127.0.0.1:8000/static/img/books/dune.svg"],
                                                            "tax_code": "txcd_35010000",
                                                            "metadata": {"product_id": "dune"}}}},
            {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 999, "tax_behavior": "exclusive",
                                           "product_data": {"name": "Emma", "metadata": {"product_id": "emma"}}}},
        ],
        "shipping_address_collection": {"allowed_countries": ["US", "DE", "GB"]},
        "shipping_options": [
            {"shipping_rate_data": {"type": "fixed_amount", "display_name": "Standard",
                                    "fixed_amount": {"amount": 500, "currency": "usd"}, "tax_behavior": "exclusive",
                                    "tax_code": "txcd_92010001",
                                    "delivery_estimate": {"minimum": {"unit": "business_day", "value": 3},
                                                          "maximum": {"unit": "business_day", "value": 5}}}},
            {"shipping_rate_data": {"type": "fixed_amount", "display_name": "Express",
                                    "fixed_amount": {"amount": 1500, "currency": "usd"}, "tax_behavior": "exclusive",
                                    "delivery_estimate": {"minimum": {"unit": "business_day", "value": 1},
                                                          "maximum": {"unit": "business_day", "value": 2}}}},
        ],
        "automatic_tax": {"enabled": True},
        "phone_number_collection": {"enabled": False},
        "locale": "auto",
        "client_reference_id": "ord_123",
        "metadata": {"order_id": "ord_123"},
        "payment_intent_data": {"metadata": {"order_id": "ord_123"}},
        "success_url": "http://127.0.0.1:8000/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1:8000/cart",
        "customer_email": "jenny@example.com",
    }
    p.update(over)
    return p


def wire(obj):
    """The JSON exactly as the API sent it."""
    return json.loads(obj.last_response.body)


# -- Stripe's shape: fixtures3.json and spec3.json (the `stripe_refs` fixture in conftest) -----------------------------
# Fields that Stripe's fixture shows filled in but that are null in a real 2026 payment-mode session/charge, and that
# the 2023 spec (too old to list them) cannot vouch for: (resource, dotted path) -> why null is right.
NULL_OK = {
    ("checkout.session", "wallet_options"): "null unless wallet_options were sent at creation",
    ("charge", "source"): "legacy Sources API; null for PaymentIntent charges",
    ("checkout.session", "invoice_creation.invoice_data.issuer"): "invoice creation is disabled",
    ("checkout.session", "custom_text.after_submit"): "like its siblings shipping_address/submit: no custom text",
    ("checkout.session", "custom_text.terms_of_service_acceptance"): "like its siblings: no custom text",
    ("item", "adjustable_quantity"): "null unless line_items[][adjustable_quantity] was sent",
}


def spec_nullable(schemas, resource, path):
    """True when spec3 says the field at `path` (list of keys) of `resource` may be null; None if spec lacks it."""
    schema = schemas.get(resource)
    for i, key in enumerate(path):
        if schema is None:
            return None
        while "$ref" in schema or ("anyOf" in schema and "properties" not in schema):
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
            else:
                schema = next((s for s in schema["anyOf"] if "$ref" in s or "properties" in s), schema["anyOf"][0])
        prop = schema.get("properties", {}).get(key)
        if prop is None:
            return None
        if i == len(path) - 1:
            return bool(prop.get("nullable"))
        schema = prop


def json_type(v):
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}[type(v)]


def compare(ours, ref, resource, schemas, path=(), problems=None):
    """Differences in field names and types between our object and the fixture, as readable strings."""
    problems = [] if problems is None else problems
    where = ".".join(path) or "(top)"
    if ref is None:
        return problems
    if ours is None:
        if spec_nullable(schemas, resource, list(path)) or (resource, where) in NULL_OK:
            return problems
        problems.append(f"{resource}.{where}: null, fixture has {json_type(ref)} (and not nullable in the spec)")
        return problems
    if json_type(ours) != json_type(ref):
        problems.append(f"{resource}.{where}: {json_type(ours)}, fixture has {json_type(ref)}")
        return problems
    if isinstance(ref, dict) and ref and path[-1:] != ("metadata",):
        missing, extra = set(ref) - set(ours), set(ours) - set(ref)
        if missing:
            problems.append(f"{resource}.{where}: missing fields {sorted(missing)}")
        if extra:
            problems.append(f"{resource}.{where}: fields Stripe does not have {sorted(extra)}")
        for key in set(ref) & set(ours):
            compare(ours[key], ref[key], resource, schemas, path + (key,), problems)
    elif isinstance(ref, list) and ref and ours and isinstance(ref[0], dict):
        compare(ours[0], ref[0], resource, schemas, path + ("0",), problems)
    return problems


SPEC_TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float), "object": dict, "array": list}


def against_spec(value, schema, schemas, path, problems=None):
    """What in `value` breaks spec3's schema: a JSON type, a null, an enum value or a missing required field.
    Fields the 2023 spec does not list are left to the fixture comparison."""
    problems = [] if problems is None else problems
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
    if value is None:
        if not schema.get("nullable"):
            problems.append(f"{path}: null, and the spec does not allow null")
        return problems
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        if not any(not against_spec(value, option, schemas, path) for option in options):
            problems.append(f"{path}: {json_type(value)} {str(value)[:40]!r} matches none of the spec's choices")
        return problems
    kind = schema.get("type")
    if kind and (not isinstance(value, SPEC_TYPES[kind]) or (isinstance(value, bool) and kind != "boolean")):
        problems.append(f"{path}: {json_type(value)}, the spec says {kind}")
        return problems
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if kind == "object":
        properties = schema.get("properties", {})
        problems += [f"{path}.{name}: required by the spec, missing" for name in schema.get("required", ())
                     if name not in value]
        for name, item in value.items():
            if name in properties:
                against_spec(item, properties[name], schemas, f"{path}.{name}", problems)
    elif kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            against_spec(item, schema["items"], schemas, f"{path}[{i}]", problems)
    return problems


# -- the standalone stand-in (`python -m standin`) ---------------------------------------------------------------------
def start(tmp_path, faults="", args=(), public="{url}"):
    """A `python -m standin` process on a free loopback port, once it answers: (process, base URL); `public`: the
    pay page's origin, if another ({port} is filled in)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, STANDIN_FAULTS=faults, PYTHONPATH=str(ROOT))
    env.pop("STANDIN_LATENCY_MS", None)
    proc = subprocess.Popen([sys.executable, "-m", "standin", "--port", str(port), "--data-dir", str(tmp_path / "d"),
                             "--public-url", public.format(url=url, port=port), *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stand-in did not start")


# -- the payment page --------------------------------------------------------------------------------------------------
PAY_ADDRESS = {"address_line1": "Unter den Linden 1", "address_city": "Berlin", "address_postal_code": "10117",
               "address_country": "DE"}


def event_types(client):
    """Every event type so far, oldest first."""
    return [e.type for e in reversed(client.v1.events.list({"limit": 100}).data)]


def fill(page, card="4242424242424242", **over):
    """The payment page's form filled in with a good card and a Berlin address, with overrides."""
    form = page.forms["pay"]
    values = {"name": "Ada Reader", "card_number": card, "card_expiry": "12 / 34", "card_cvc": "123", **PAY_ADDRESS,
              **over}
    for k, v in values.items():
        form[k] = v
    return form
