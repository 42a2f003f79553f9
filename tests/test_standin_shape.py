"""The stand-in's objects have Stripe's real shape: field names and JSON types as in Stripe's fixtures3.json, and
types, nulls, enum values and required fields as spec3.json's schemas say."""
import pytest
import stripe

from standin import PayError, StandIn
from tests.standin_helpers import against_spec, compare, shop_params, wire

KEY = "sk_test_offline"


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """One of each object, made the way the shop makes them (paid, shipped, taxed, refunded, disputed)."""
    s = StandIn(tmp_path_factory.mktemp("shape"), load_env_faults=False)
    c = stripe.StripeClient(KEY, http_client=s.http_client())
    params = {
        "mode": "payment", "success_url": "https://shop.example/ok", "cancel_url": "https://shop.example/cart",
        "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 2000, "tax_behavior": "exclusive",
                                                      "product_data": {"name": "Book", "tax_code": "txcd_35010000"}}}],
        "shipping_address_collection": {"allowed_countries": ["US"]}, "automatic_tax": {"enabled": True},
        "shipping_options": [{"shipping_rate_data": {"display_name": "Post", "type": "fixed_amount",
                                                     "fixed_amount": {"amount": 500, "currency": "usd"},
                                                     "delivery_estimate": {"minimum": {"unit": "day", "value": 2},
                                                                           "maximum": {"unit": "day", "value": 5}}}}],
        "metadata": {"order_id": "o1"}, "payment_intent_data": {"metadata": {"order_id": "o1"}},
    }
    sid = c.v1.checkout.sessions.create(params).id
    s.pay(sid)
    disputed = c.v1.checkout.sessions.create(params).id
    s.pay(disputed, card="4000000000000259")
    session = wire(c.v1.checkout.sessions.retrieve(sid))
    pi = wire(c.v1.payment_intents.retrieve(session["payment_intent"]))
    refund = wire(c.v1.refunds.create({"payment_intent": pi["id"], "amount": 100}))
    charge = wire(c.v1.charges.retrieve(pi["latest_charge"], {"expand": ["refunds"]}))  # as the fixture shows it
    item = wire(c.v1.checkout.sessions.line_items.list(sid))["data"][0]
    events = wire(c.v1.events.list({"limit": 100}))["data"]
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    dispute = next(e for e in events if e["type"] == "charge.dispute.created")["data"]["object"]
    rate = wire(c.v1.shipping_rates.retrieve(session["shipping_cost"]["shipping_rate"]))
    method = wire(c.v1.payment_intents.retrieve(pi["id"], {"expand": ["payment_method"]}))["payment_method"]
    yield {"checkout.session": session, "payment_intent": pi, "charge": charge, "refund": refund,
           "event": completed, "dispute": dispute, "item": item, "shipping_rate": rate, "payment_method": method}
    s.close()


@pytest.mark.parametrize("resource", ["checkout.session", "payment_intent", "charge", "refund", "dispute", "item",
                                      "shipping_rate", "payment_method"])
def test_object_shape_matches_fixture(stripe_refs, objects, resource):
    fixtures, schemas = stripe_refs
    assert compare(objects[resource], fixtures[resource], resource, schemas) == []


def test_3d_secure_objects_match_fixture_and_spec(stripe_refs, tmp_path):
    fixtures, schemas = stripe_refs
    s = StandIn(tmp_path, load_env_faults=False)
    c = stripe.StripeClient(KEY, http_client=s.http_client())
    authenticated = c.v1.checkout.sessions.create(shop_params())
    s.pay(authenticated.id, card="4000000000003220")
    failed = c.v1.checkout.sessions.create(shop_params())
    with pytest.raises(PayError):
        s.pay(failed.id, card="4000000000003220", authentication="fail")
    pi = c.v1.payment_intents.retrieve(c.v1.checkout.sessions.retrieve(authenticated.id).payment_intent)
    charge = wire(c.v1.charges.retrieve(pi.latest_charge, {"expand": ["refunds"]}))  # as the fixture shows it
    intent = wire(c.v1.payment_intents.retrieve(c.v1.checkout.sessions.retrieve(failed.id).payment_intent))
    s.close()
    assert charge["payment_method_details"]["card"]["three_d_secure"]["result"] == "authenticated"
    assert compare(charge, fixtures["charge"], "charge", schemas) == []
    assert against_spec(charge, schemas["charge"], schemas, "charge") == []
    # The fixture's last_payment_error names only a type: the spec's api_errors schema is the reference here
    assert intent["last_payment_error"]["code"] == "payment_intent_authentication_failure"
    assert against_spec(intent, schemas["payment_intent"], schemas, "payment_intent") == []


def test_event_shape_matches_fixture(stripe_refs, objects):
    fixtures, schemas = stripe_refs
    ours, ref = dict(objects["event"]), dict(fixtures["event"])
    assert ours["data"]["object"]["object"] == "checkout.session"
    ours["data"], ref["data"] = {"object": {}}, {"object": {}}  # the payload differs by event type; checked above
    assert compare(ours, ref, "event", schemas) == []
    assert objects["event"]["api_version"] == stripe.api_version and objects["event"]["livemode"] is False


def test_no_top_level_shipping_details_in_2026_sessions(objects):
    session = objects["checkout.session"]
    assert "shipping_details" not in session
    assert session["collected_information"]["shipping_details"]["address"]["country"] == "US"
    assert set(session["customer_details"]) >= {"email", "name", "phone", "address"}


def test_lists_have_stripe_envelope(objects):
    refunds = objects["charge"]["refunds"]
    assert set(refunds) == {"object", "data", "has_more", "url"} and refunds["object"] == "list"


def test_the_comparison_catches_differences(stripe_refs):
    fixtures, schemas = stripe_refs
    broken = dict(fixtures["refund"])
    broken.pop("charge")
    broken["amount"] = "100"
    broken["surprise"] = 1
    problems = compare(broken, fixtures["refund"], "refund", schemas)
    assert any("missing fields ['charge']" in p for p in problems)
    assert any("amount: string" in p for p in problems) and any("surprise" in p for p in problems)


@pytest.mark.parametrize("resource", ["checkout.session", "payment_intent", "charge", "refund", "dispute", "item",
                                      "shipping_rate", "payment_method", "event"])
def test_objects_keep_to_the_spec_types_nulls_enums_and_required_fields(stripe_refs, objects, resource):
    _, schemas = stripe_refs
    assert against_spec(objects[resource], schemas[resource], schemas, resource) == []


def test_the_spec_check_catches_a_bad_enum_a_null_a_wrong_type_and_a_missing_field(stripe_refs, objects):
    _, schemas = stripe_refs
    broken = dict(objects["checkout.session"], status="finished", created=None, livemode=0)
    broken.pop("id")
    problems = against_spec(broken, schemas["checkout.session"], schemas, "session")
    assert any("session.status: 'finished' is not one of" in p for p in problems), problems
    assert "session.created: null, and the spec does not allow null" in problems
    assert "session.livemode: number, the spec says boolean" in problems
    assert "session.id: required by the spec, missing" in problems
