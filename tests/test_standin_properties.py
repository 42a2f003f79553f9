"""Properties of the stand-in: the SDK's form encoding parses back exactly, and Checkout totals always add up."""
import copy
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from standin import checkout, tax
from standin import objects as o
from standin.forms import Arr, Int, Metadata, Obj, Str, parse_form

# Keys/values the SDK may send: printable text including brackets, ampersands and non-ASCII.
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
keys = st.text(st.characters(whitelist_categories=("Ll", "Nd"), whitelist_characters="_-é"), min_size=1,
               max_size=8).filter(lambda k: not k.isdigit())
SCHEMA = Obj({"name": Str(), "count": Int(), "metadata": Metadata(),
              "items": Arr(Obj({"label": Str(), "tags": Arr(Str())}))})


@settings(max_examples=200, deadline=None)
@given(name=text, count=st.integers(-10**12, 10**12), metadata=st.dictionaries(keys, text, max_size=5),
       items=st.lists(st.fixed_dictionaries({"label": text, "tags": st.lists(text, max_size=3)}), max_size=4))
def test_sdk_encoding_round_trips(name, count, metadata, items):
    params = {"name": name, "count": count, "metadata": metadata, "items": items}
    wire = urlencode(list(_api_encode(params))).replace("%5B", "[").replace("%5D", "]")
    parsed = SCHEMA.clean(parse_form(wire), "")
    expected = {**params, "items": [{"label": i["label"], **({"tags": i["tags"]} if i["tags"] else {})}
                                    for i in items]}
    if not metadata:
        expected.pop("metadata")
    if not items:
        expected.pop("items")
    assert parsed == expected


line = st.tuples(st.integers(0, 200_000), st.integers(1, 50), st.sampled_from(["exclusive", "inclusive",
                                                                                "unspecified"]))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line, min_size=1, max_size=6), ship=st.lists(st.tuples(st.integers(0, 5000),
       st.sampled_from(["exclusive", "inclusive"])), max_size=3), country=st.sampled_from(["DE", "US", "FI", "BR", None]),
       auto=st.booleans(), pick=st.integers(0, 2))
def test_totals_always_add_up(lines, ship, country, auto, pick):
    session = {"automatic_tax": {"enabled": auto, "status": None},
               "_line_items": [o.item(o.price("usd", u, b, "prod_x", 0), q, "x") for u, q, b in lines],
               "_rates": [{"id": f"shr_{i}", "fixed_amount": {"amount": a, "currency": "usd"}, "tax_behavior": b,
                           "tax_code": None} for i, (a, b) in enumerate(ship)]}
    for it in session["_line_items"]:
        it["_product"] = {"tax_code": None}
    option = pick % len(ship) if ship else 0
    s = checkout.compute(copy.deepcopy(session), country, option)
    items = s["_line_items"]
    assert s["amount_subtotal"] == sum(u * q for u, q, _ in lines)
    shipping = ship[option][0] if ship else 0
    assert s["total_details"]["amount_shipping"] == shipping
    exclusive = sum(i["amount_tax"] for i in items if i["price"]["tax_behavior"] != "inclusive")
    ship_cost = s.get("shipping_cost") or {"amount_tax": 0, "amount_total": 0}
    ship_excl = ship_cost["amount_tax"] if ship and ship[option][1] == "exclusive" else 0
    assert s["amount_total"] == s["amount_subtotal"] + shipping + exclusive + ship_excl
    assert s["total_details"]["amount_tax"] == sum(i["amount_tax"] for i in items) + ship_cost["amount_tax"]
    for i in items:
        assert 0 <= i["amount_tax"] <= i["amount_subtotal"] or i["price"]["tax_behavior"] != "inclusive"
        assert i["amount_total"] == i["amount_subtotal"] + (i["amount_tax"] if i["price"]["tax_behavior"] !=
                                                             "inclusive" else 0)
    if not auto or not country:
        assert s["total_details"]["amount_tax"] == 0
    elif auto and country == "DE":
        r = tax.rate("DE")
        assert all(abs(i["amount_tax"] - (i["amount_subtotal"] * r if i["price"]["tax_behavior"] != "inclusive"
                                          else i["amount_subtotal"] * r / (1 + r))) <= 1 for i in items)
