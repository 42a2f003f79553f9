"""The catalog file: the shipped one is valid, every mistake is reported precisely, money reads right."""
import copy
import json
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import edit_catalog
from webshop import catalog
from webshop.catalog import CatalogError, format_money, currency_exponent, load_catalog

ROOT = Path(__file__).resolve().parent.parent

VALID = {
    "shop": {"name": "Test Books", "currency": "usd"},
    "products": [
        {"id": "dune", "name": "Dune", "description": "Sand.", "price": 1299,
         "image": "img/books/dune.svg", "tax_code": "txcd_35010000"},
        {"id": "emma", "name": "Emma", "description": "Matchmaking.", "price": 999,
         "image": "img/books/emma.svg"},
    ],
    "shipping": {
        "countries": ["US", "GB"],
        "options": [
            {"id": "standard", "name": "Standard", "amount": 500, "min_days": 3, "max_days": 5,
             "tax_code": "txcd_92010001"},
            {"id": "express", "name": "Express", "amount": 1500, "min_days": 1, "max_days": 2},
        ],
    },
    "tax": {"mode": "automatic", "behavior": "exclusive"},
}


@pytest.fixture
def shop(tmp_path):
    """A temp shop folder with public/img/books/{dune,emma}.svg; call shop(data) to write catalog.json."""
    books = tmp_path / "public" / "img" / "books"
    books.mkdir(parents=True)
    for name in ("dune", "emma"):
        (books / f"{name}.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")

    def write(data=None, text=None):
        path = tmp_path / "catalog.json"
        path.write_text(text if text is not None else json.dumps(VALID if data is None else data),
                        encoding="utf-8")
        return path

    write.public = tmp_path / "public"
    return write


def problems_for(shop, change):
    """The problems reported after change(data) edits a copy of VALID."""
    data = copy.deepcopy(VALID)
    change(data)
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(data), shop.public)
    return info.value.problems


# The shipped catalog and covers

def test_shipped_catalog_is_valid_and_every_image_exists():
    cat = load_catalog(ROOT / "catalog.json", ROOT / "public")
    assert catalog.problems(ROOT / "catalog.json", ROOT / "public") == []
    assert cat.shop_name and cat.currency == "usd"
    assert len(cat.products) == 8
    assert len({p.id for p in cat.products}) == 8
    for product in cat.products:
        assert (ROOT / "public" / product.image).is_file()
        assert product.image == f"img/books/{product.id}.svg"
        assert product.tax_code == "txcd_35010000"
        assert cat.product(product.id) is product
    assert [o.id for o in cat.shipping_options] == ["standard", "express"]
    assert cat.tax_mode == "automatic" and cat.tax_behavior == "exclusive"


def test_shipped_covers_are_small_accessible_svgs_with_title_and_author():
    cat = load_catalog(ROOT / "catalog.json", ROOT / "public")
    for product in cat.products:
        path = ROOT / "public" / product.image
        assert path.stat().st_size < 3 * 1024, path
        svg = ET.parse(path).getroot()
        ns = "{http://www.w3.org/2000/svg}"
        assert svg.tag == f"{ns}svg" and svg.get("viewBox") == "0 0 300 450"
        title = svg.find(f"{ns}title")
        assert title is not None and product.name in title.text
        words = " ".join(t.text for t in svg.iter(f"{ns}text")).lower()
        assert product.name.split()[-1].lower() in words  # the title is on the cover
        assert title.text.split(" by ")[1].split()[-1].lower() in words  # and so is the author


# Loading

def test_valid_catalog_loads_with_everything(shop):
    cat = load_catalog(shop(), shop.public)
    assert cat.shop_name == "Test Books" and cat.currency == "usd"
    assert cat.product("dune") == catalog.Product("dune", "Dune", "Sand.", 1299, "img/books/dune.svg",
                                                  "txcd_35010000", checkout_image="img/books/dune.svg")
    assert cat.product("emma").tax_code is None
    assert cat.product("nope") is None and cat.product(["dune"]) is None
    assert cat.shipping_options[0] == catalog.ShippingOption("standard", "Standard", 500, 3, 5, "txcd_92010001")
    assert cat.countries == ("US", "GB")
    assert isinstance(cat.products, tuple) and isinstance(cat.shipping_options, tuple)


def test_tax_block_is_optional_and_defaults_to_none_exclusive(shop):
    data = copy.deepcopy(VALID)
    del data["tax"]
    cat = load_catalog(shop(data), shop.public)
    assert (cat.tax_mode, cat.tax_behavior) == ("none", "exclusive")
    for tax, expected in (({"mode": "none"}, ("none", "exclusive")),
                          ({"mode": "automatic"}, ("automatic", "exclusive")),
                          ({"behavior": "inclusive"}, ("none", "inclusive"))):
        cat = load_catalog(shop({**data, "tax": tax}), shop.public)  # each field has its default too
        assert (cat.tax_mode, cat.tax_behavior) == expected


def test_catalog_is_read_only(shop):
    cat = load_catalog(shop(), shop.public)
    with pytest.raises(AttributeError):
        cat.products[0].price = 1


# Every validation case, with its exact message

def set_path(*path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def delete(*path):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


CASES = [
    (set_path("products", 0, "price", value=12.5),
     "catalog.json: products[0].price: must be a positive integer in minor units, got 12.5 (product dune)"),
    (set_path("products", 1, "price", value=True),
     "catalog.json: products[1].price: must be a positive integer in minor units, got true (product emma)"),
    (set_path("products", 0, "price", value="12.99"),
     'catalog.json: products[0].price: must be a positive integer in minor units, got "12.99" (product dune)'),
    (set_path("products", 0, "price", value=0),
     "catalog.json: products[0].price: must be a positive integer in minor units, got 0 (product dune)"),
    (set_path("products", 0, "price", value=-100),
     "catalog.json: products[0].price: must be a positive integer in minor units, got -100 (product dune)"),
    (set_path("products", 0, "price", value=100_000_000),
     "catalog.json: products[0].price: must be at most 99999999 (Stripe's maximum amount), got 100000000 "
     "(product dune)"),
    (set_path("products", 0, "prise", value=1299),
     'catalog.json: products[0]: unknown field "prise" (did you mean "price"?) (product dune)'),
    (delete("products", 1, "description"),
     "catalog.json: products[1].description: required field is missing (product emma)"),
    (set_path("products", 0, "name", value=""),
     'catalog.json: products[0].name: must not be empty, got "" (product dune)'),
    (set_path("products", 0, "name", value="   "),
     'catalog.json: products[0].name: must not be empty, got "   " (product dune)'),
    (set_path("products", 0, "name", value="\u200b\u3164\u2800"),  # shows as nothing on the pages and at Stripe
     'catalog.json: products[0].name: must not be empty (it has only invisible characters), got "\\u200b\\u3164'
     '\\u2800" (product dune)'),
    (set_path("products", 0, "name", value=None),
     "catalog.json: products[0].name: must be a text string, got null (product dune)"),
    (set_path("products", 0, "name", value="x" * 121),
     'catalog.json: products[0].name: must be at most 120 characters (this has 121), got "' + "x" * 57 + '..." '
     '(product dune)'),
    (set_path("products", 0, "description", value="y" * 1001),
     "catalog.json: products[0].description: must be at most 1000 characters (this has 1001), got \""
     + "y" * 57 + '..." (product dune)'),
    (set_path("products", 1, "id", value="dune"),
     'catalog.json: products[1].id: duplicate id, already used by products[0], got "dune"'),
    (set_path("products", 0, "id", value="Dune Messiah"),
     "catalog.json: products[0].id: must be 1-64 lowercase letters, digits or hyphens, starting with a letter "
     'or digit, got "Dune Messiah"'),
    (set_path("products", 0, "image", value="img/books/missing.svg"),
     None),  # message names the temp public dir; checked below
    (set_path("products", 0, "image", value="../catalog.json"),
     "catalog.json: products[0].image: must be a relative path with forward slashes that stays inside public/, "
     'got "../catalog.json" (product dune)'),
    (set_path("products", 0, "image", value="img/../../secret.svg"),
     "catalog.json: products[0].image: must be a relative path with forward slashes that stays inside public/, "
     'got "img/../../secret.svg" (product dune)'),
    (set_path("products", 0, "image", value="/etc/passwd.png"),
     "catalog.json: products[0].image: must be a relative path with forward slashes that stays inside public/, "
     'got "/etc/passwd.png" (product dune)'),
    (set_path("products", 0, "image", value="https://example.com/dune.png"),
     'catalog.json: products[0].image: must be a path under public/, not a URL, got "https://example.com/dune.png" '
     '(product dune)'),
    (set_path("products", 0, "image", value="img/books/my dune?.svg"),
     'catalog.json: products[0].image: must use only letters, digits, and . _ - / in the path, '
     'got "img/books/my dune?.svg" (product dune)'),
    *((set_path("products", 0, "image", value=bad),
       'catalog.json: products[0].image: must not have an empty part ("//") or a part starting with a dot, '
       f'got "{bad}" (product dune)') for bad in ("img//books/dune.svg", "./img/books/dune.svg", "img/./books/dune.svg",
                                   "img/books/.dune.svg", "img/books/")),
    (set_path("products", 0, "name", value="Dune\u0000"),
     'catalog.json: products[0].name: must not contain control characters (U+0000 at position 5), '
     'got "Dune\\u0000" (product dune)'),
    (set_path("products", 0, "description", value="A \u202eveldnaw"),
     'catalog.json: products[0].description: must not contain control characters (U+202E at position 3), '
     'got "A \\u202eveldnaw" (product dune)'),
    (set_path("shop", "name", value="Books\x85"),
     'catalog.json: shop.name: must not contain control characters (U+0085 at position 6), got "Books\\u0085"'),
    (set_path("products", 0, "image", value="img/books/dune.txt"),
     "catalog.json: products[0].image: must be an image file (.svg, .png, .jpg, .jpeg, .gif, .webp), "
     'got "img/books/dune.txt" (product dune)'),
    (set_path("products", 0, "tax_code", value="txcd_3501"),
     'catalog.json: products[0].tax_code: must be a Stripe tax code like "txcd_35010000" (txcd_ and 8 digits) '
     'or null, got "txcd_3501" (product dune)'),
    (set_path("products", value=[]),
     "catalog.json: products: must list at least one product, got []"),
    (set_path("products", value={"dune": 1}),
     'catalog.json: products: must be a JSON list [...] of products, got {"dune": 1}'),
    (set_path("products", 0, value="dune"),
     'catalog.json: products[0]: must be a JSON object {...}, got "dune"'),
    (set_path("shop", "currency", value="zzz"),
     'catalog.json: shop.currency: must be a currency Stripe supports, as a lowercase ISO 4217 code like "usd", '
     'got "zzz"'),
    (set_path("shop", "currency", value="EUR"),
     'catalog.json: shop.currency: must be lowercase, like "eur", got "EUR"'),
    (delete("shop", "name"),
     "catalog.json: shop.name: required field is missing"),
    (set_path("shipping", "options", 0, "name", value="x" * 101),  # Stripe's display_name takes 100
     'catalog.json: shipping.options[0].name: must be at most 100 characters (this has 101), got "' + "x" * 57
     + '..." (shipping option standard)'),
    (set_path("shipping", "options", 0, "amount", value=-1),
     "catalog.json: shipping.options[0].amount: must be an integer of 0 or more in minor units, got -1 "
     "(shipping option standard)"),
    (set_path("shipping", "options", 0, "min_days", value=6),
     "catalog.json: shipping.options[0].min_days: must not be more than max_days (5), got 6 "
     "(shipping option standard)"),
    (set_path("shipping", "options", 1, "max_days", value=0),
     "catalog.json: shipping.options[1].max_days: must be a whole number of business days from 1 to 365, got 0 "
     "(shipping option express)"),
    (set_path("shipping", "options", 1, "id", value="standard"),
     'catalog.json: shipping.options[1].id: duplicate id, already used by shipping.options[0], got "standard"'),
    (set_path("shipping", "options", value=[dict(VALID["shipping"]["options"][1], id=f"o{i}") for i in range(6)]),
     "catalog.json: shipping.options: must list at most 5 shipping options (Stripe Checkout's limit), got 6"),
    (set_path("shipping", "countries", value=["US", "XX"]),
     'catalog.json: shipping.countries[1]: unknown country code (use ISO 3166-1 alpha-2, like "US"), got "XX"'),
    (set_path("shipping", "countries", value=["UK"]),
     'catalog.json: shipping.countries[0]: is not an ISO 3166-1 code; use "GB", got "UK"'),
    (set_path("shipping", "countries", value=["us"]),
     'catalog.json: shipping.countries[0]: must be uppercase, like "US", got "us"'),
    (set_path("shipping", "countries", value=["US", "KP"]),
     'catalog.json: shipping.countries[1]: Stripe Checkout cannot ship to this country, got "KP"'),
    (set_path("shipping", "countries", value=["US", "US"]),
     'catalog.json: shipping.countries[1]: is listed more than once, got "US"'),
    (set_path("shipping", "countries", value=[]),
     'catalog.json: shipping.countries: must be a non-empty JSON list of country codes like ["US", "CA"], got []'),
    (set_path("tax", "mode", value="auto"),
     'catalog.json: tax.mode: must be "automatic" or "none", got "auto"'),
    (set_path("tax", "behavior", value="included"),
     'catalog.json: tax.behavior: must be "exclusive" or "inclusive", got "included"'),
    (set_path("tax", "behaviour", value="exclusive"),
     'catalog.json: tax: unknown field "behaviour" (did you mean "behavior"?)'),
    (set_path("colour", value="blue"),
     'catalog.json: top level: unknown field "colour"'),
    (delete("products"),
     "catalog.json: products: required field is missing"),
]


@pytest.mark.parametrize("change, expected", CASES)
def test_each_mistake_is_reported_with_its_place_and_value(shop, change, expected):
    found = problems_for(shop, change)
    if expected is None:
        expected = (f"catalog.json: products[0].image: no such file in {shop.public}, "
                    f'got "img/books/missing.svg" (product dune)')
    assert found == [expected]


@pytest.mark.parametrize("name", ["\ue000", "\U0001fae8"])  # an icon font's glyph; an emoji newer than Python 3.11
def test_a_name_that_may_show_is_not_called_invisible(shop, name):
    data = copy.deepcopy(VALID)
    data["products"][0]["name"] = name
    assert load_catalog(shop(data), shop.public).products[0].name == name


@pytest.mark.parametrize("name", ["\u2065\u2065", "\U000e0080", "\ufdd0", "\U0010ffff"])
def test_a_name_of_code_points_kept_for_invisible_ones_or_of_noncharacters_is_refused(shop, name):
    data = copy.deepcopy(VALID)
    data["products"][0]["name"] = name
    assert "must not be empty (it has only invisible characters)" in problems_for(shop, lambda d: d.update(data))[0]


def test_amounts_follow_the_currency_rules(shop):
    def kwd(data):
        data["shop"]["currency"] = "kwd"
        data["products"][0]["price"] = 12345
    assert problems_for(shop, kwd) == [
        "catalog.json: products[0].price: must end in 0 in kwd (Stripe's rule for three-decimal currencies), "
        "got 12345 (product dune)",
        "catalog.json: products[1].price: must end in 0 in kwd (Stripe's rule for three-decimal currencies), "
        "got 999 (product emma)",
    ]

    def isk(data):
        data["shop"]["currency"] = "isk"
        data["products"] = data["products"][:1]
        data["shipping"]["options"][0]["amount"] = 150
        data["products"][0]["price"] = 990000
    expected = ("catalog.json: shipping.options[0].amount: must be a multiple of 100 in isk (Stripe charges whole "
                "units only), got 150 (shipping option standard)")
    assert problems_for(shop, isk) == [expected]


def test_every_problem_is_reported_not_just_the_first(shop):
    def many(data):
        data["shop"]["currency"] = "dollars"
        data["products"][0]["price"] = 12.5
        data["products"][0]["prise"] = 12
        data["products"][1]["id"] = "dune"
        data["shipping"]["countries"].append("ZZ")
        data["tax"]["mode"] = True
    found = problems_for(shop, many)
    assert found == [
        'catalog.json: shop.currency: must be a currency Stripe supports, as a lowercase ISO 4217 code like "usd", '
        'got "dollars"',
        "catalog.json: products[0].price: must be a positive integer in minor units, got 12.5 (product dune)",
        'catalog.json: products[0]: unknown field "prise" (did you mean "price"?) (product dune)',
        'catalog.json: products[1].id: duplicate id, already used by products[0], got "dune"',
        'catalog.json: shipping.countries[2]: unknown country code (use ISO 3166-1 alpha-2, like "US"), got "ZZ"',
        'catalog.json: tax.mode: must be "automatic" or "none", got true',
    ]
    assert str(CatalogError(found)) == "\n".join(found)


def test_repeated_key_is_reported(shop):
    text = json.dumps(VALID).replace('"price": 1299', '"price": 1299, "price": 1399')
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text=text), shop.public)
    assert info.value.problems == [
        'catalog.json: products[0]: field "price" appears more than once (only the last would count) '
        '(product dune)']


# Files that are not JSON at all

def test_bad_json_reports_line_and_column(shop):
    text = '{\n  "shop": {"name": "X", "currency": "usd"}\n  "products": []\n}\n'
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text=text), shop.public)
    # where the comma goes, at the end of line 2, not where the parser stopped (line 3, column 3)
    assert info.value.problems == ["catalog.json: line 2, column 43: invalid JSON: Expecting ',' delimiter"]


def test_trailing_comma_reports_line_and_column(shop):
    text = '{\n  "shop": {\n    "name": "X",\n    "currency": "usd",\n  }\n}'
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text=text), shop.public)
    assert info.value.problems == [  # the extra comma itself, not the bracket after it (line 5, column 3)
        'catalog.json: line 4, column 22: invalid JSON: a comma before "}" (JSON allows none after the last item)']
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text='{"shop": {"name": "X", "currency": "usd"}, "products": [1, 2,\r\n]}'), shop.public)
    assert info.value.problems == [
        'catalog.json: line 1, column 61: invalid JSON: a comma before "]" (JSON allows none after the last item)']


@pytest.mark.parametrize("text, expected", [  # the mistake in words, never the parser's "... at"
    ('{"shop": {"name": "A\tB"}}', "line 1, column 21: invalid JSON: a tab or line break inside a text"),
    ('{"shop": {"name": "AB', 'line 1, column 19: invalid JSON: a text with no closing quote (")'),
    ('{"shop": {"name": “Emma”}}', 'line 1, column 19: invalid JSON: curly quotes: write texts in straight quotes'),
    ('{\n  // the shop\n  "shop": {}\n}', "line 2, column 3: invalid JSON: a comment (JSON has none)"),
    ("{'shop': {}}", 'line 1, column 2: invalid JSON: a field name in straight double quotes (") is missing'),
    ('{"shop": }', "line 1, column 10: invalid JSON: a value is missing: a text in quotes, a number,"),
    ('{"shop": {}}}', "line 1, column 13: invalid JSON: more after the catalog's last }"),
    ('{\r"shop":\r\r x}', "line 4, column 2: invalid JSON: a value is missing"),  # old Mac line ends count too
])
def test_json_mistakes_are_said_in_words_where_they_are(shop, text, expected):
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text=text), shop.public)
    (problem,) = info.value.problems
    assert problem.startswith(f"catalog.json: {expected}"), problem


def test_trailing_comma_reads_the_same_on_python_3_13(shop, monkeypatch):
    """Python 3.13's parser stops at the comma itself, with words of its own: the merchant reads the same message."""
    text = '{\n  "shop": {\n    "name": "X",\n    "currency": "usd",\n  }\n}'
    parse = json.loads

    def as_3_13(data, **kwargs):
        if data == text:  # what CPython 3.13 raises for it (Lib/json/decoder.py)
            raise json.JSONDecodeError("Illegal trailing comma before end of object", data, data.index(",\n  }"))
        return parse(data, **kwargs)
    monkeypatch.setattr("webshop.catalog_rules.json.loads", as_3_13)
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text=text), shop.public)
    assert info.value.problems == [
        'catalog.json: line 4, column 22: invalid JSON: a comma before "}" (JSON allows none after the last item)']


@pytest.mark.parametrize("text, expected", [
    ("", "catalog.json: line 1, column 1: the file is empty"),
    ("[]", "catalog.json: top level: must be a JSON object {...}, got []"),
    ('"catalog"', 'catalog.json: top level: must be a JSON object {...}, got "catalog"'),
    ("[" * 100_000 + "]" * 100_000, "catalog.json: invalid JSON: lists or objects are nested too deeply"),
    ('{"shop": ' + "9" * 5000 + "}", "catalog.json: invalid JSON: a number is too long"),
])
def test_unusable_files(shop, text, expected):
    with pytest.raises(CatalogError) as info:
        load_catalog(shop(text=text), shop.public)
    assert info.value.problems[0] == expected


def test_not_utf8_and_missing_file(shop, tmp_path):
    path = shop()
    path.write_bytes(b'{"shop": "\xff"}')
    assert catalog.problems(path, shop.public) == [
        "catalog.json: byte 10: not UTF-8 text (save the file as UTF-8)"]
    assert catalog.problems(tmp_path / "gone.json", shop.public) == [
        "gone.json: cannot read the file: No such file or directory"]


def test_problems_is_empty_for_a_valid_file(shop):
    assert catalog.problems(shop(), shop.public) == []


def test_ten_thousand_products_load(shop):
    """How long they take is measured in bench/ (catalog scale), not here."""
    data = copy.deepcopy(VALID)
    data["products"] = [dict(VALID["products"][0], id=f"book-{i}") for i in range(10_000)]
    cat = load_catalog(shop(data), shop.public)
    assert len(cat.products) == 10_000 and cat.product("book-9999").price == 1299


# Money

@pytest.mark.parametrize("amount, currency, expected", [
    (1299, "usd", "$12.99"),
    (1250, "usd", "$12.50"),
    (5, "usd", "$0.05"),
    (0, "usd", "$0.00"),
    (-100, "usd", "-$1.00"),
    (99999999, "usd", "$999,999.99"),
    (999, "eur", "€9.99"),
    (123456, "eur", "€1,234.56"),
    (700, "gbp", "£7.00"),
    (1500, "jpy", "¥1,500"),
    (-1500, "jpy", "-¥1,500"),
    (1250, "chf", "12.50 CHF"),
    (123456, "chf", "1,234.56 CHF"),
    (123456, "USD", "$1,234.56"),
    (50000, "krw", "50,000 KRW"),
    (12345, "kwd", "12.345 KWD"),
    (1000, "bhd", "1.000 BHD"),
    (-5, "cad", "-0.05 CAD"),
])
def test_format_money(amount, currency, expected):
    assert format_money(amount, currency) == expected


def test_currency_exponent():
    assert [currency_exponent(c) for c in ("usd", "jpy", "JPY", "krw", "vnd", "kwd", "tnd", "isk", "huf")] == \
        [2, 0, 0, 0, 0, 3, 3, 2, 2]


@pytest.mark.parametrize("amount", [12.5, True, "1299", None])
def test_format_money_wants_an_int(amount):
    with pytest.raises(TypeError):
        format_money(amount, "usd")


# Arbitrary values in any field: a CatalogError naming the place, never another exception

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELD_PATHS = [
    (), ("shop",), ("shop", "name"), ("shop", "currency"), ("products",), ("products", 0),
    ("products", 0, "id"), ("products", 0, "name"), ("products", 0, "description"), ("products", 0, "price"),
    ("products", 1, "image"), ("products", 1, "tax_code"), ("products", 0, "extra"), ("shipping",),
    ("shipping", "countries"), ("shipping", "countries", 0), ("shipping", "options"), ("shipping", "options", 0),
    ("shipping", "options", 0, "amount"), ("shipping", "options", 1, "min_days"),
    ("shipping", "options", 1, "max_days"), ("shipping", "options", 0, "tax_code"), ("tax",), ("tax", "mode"),
    ("tax", "behavior"), ("new_key",),
]
PLACE = re.compile(r"catalog\.json: (top level|line \d+, column \d+|invalid JSON|"
                   r"[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*): \S")


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        books = Path(folder, "public", "img", "books")
        books.mkdir(parents=True)
        for name in ("dune", "emma"):
            (books / f"{name}.svg").write_text("<svg/>")
        yield Path(folder)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=json_values)
def test_any_value_in_any_field_loads_or_names_its_place(scratch, data, value):
    path = data.draw(st.sampled_from(FIELD_PATHS))
    doc = copy.deepcopy(VALID)
    if path:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    else:
        doc = value
    file = scratch / "catalog.json"
    file.write_text(json.dumps(doc), encoding="utf-8")
    try:
        cat = load_catalog(file, scratch / "public")
    except CatalogError as e:
        assert e.problems
        for problem in e.problems:
            assert PLACE.match(problem), problem
    else:
        assert isinstance(cat, catalog.Catalog)


@pytest.mark.parametrize("where", ["shop", "product", "option"])
def test_a_name_is_one_line_because_it_heads_emails_and_pages(catalog_copy, where):
    with edit_catalog(catalog_copy) as data:
        target = {"shop": data["shop"], "product": data["products"][0], "option": data["shipping"]["options"][0]}[where]
        target["name"] = "Tiny\nBooks"
        data["products"][1]["description"] = "Two lines\nof description are fine."
    found = catalog.problems(catalog_copy, ROOT / "public")
    assert len(found) == 1 and "must not contain control characters (U+000A at position 5)" in found[0]
