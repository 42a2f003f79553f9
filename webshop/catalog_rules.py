"""The rules for catalog.json: parse it and check every field, collecting every problem with its place.

catalog.py documents the file's shape and turns the checked fields into Catalog objects.
"""
import datetime
import difflib
import json
import os
import re

from .iso_codes import (COUNTRIES, COUNTRY_HINTS, CURRENCIES, NOT_SHIPPABLE, THREE_DECIMAL,
                       WHOLE_UNITS_ONLY)

# Stripe's largest amount (eight digits): https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
MAX_AMOUNT = 99_999_999
# Checkout takes at most 5: https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-shipping_options
MAX_SHIPPING_OPTIONS = 5
NAME_LIMIT, DESCRIPTION_LIMIT = 120, 1000
IMAGE_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp")
TAX_MODES = ("automatic", "none")
# https://docs.stripe.com/tax/products-prices-tax-codes-tax-behavior
TAX_BEHAVIORS = ("exclusive", "inclusive")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_IMAGE_PATH = re.compile(r"[A-Za-z0-9._/-]+")
# Stripe tax codes look like txcd_35010000 (books): https://docs.stripe.com/tax/tax-codes
_TAX_CODE = re.compile(r"txcd_[0-9]{8}")
# C0 and C1 controls but tab and newline, bidirectional overrides and isolates, and lone surrogates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")  # and tab, line breaks
_REQUIRED, _BAD, _NO_VALUE = object(), object(), object()


class _Unusable(Exception):
    def __init__(self, problem):
        self.problem = problem


def check(data: bytes, name: str, public_dir) -> tuple[list[str], dict | None]:
    """Every problem in the file's bytes (each starting with name), and its checked fields when there are none.

    The fields are shop_name, currency, products and shipping_options (lists of dicts with the
    field names of catalog.Product and catalog.ShippingOption), countries, tax_mode, tax_behavior.
    """
    try:
        parsed = _parse(data, name)
    except _Unusable as e:
        return [e.problem], None
    checker = _Checker(name, public_dir)
    fields = checker.catalog(parsed)
    return checker.problems, (None if checker.problems else fields)


def _parse(data: bytes, name: str):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _Unusable(f"{name}: byte {e.start}: not UTF-8 text (save the file as UTF-8)") from None
    if not text.strip():
        raise _Unusable(f"{name}: line 1, column 1: the file is empty")
    try:
        return json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as e:
        raise _Unusable(f"{name}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None
    except ValueError:  # an integer with thousands of digits
        raise _Unusable(f"{name}: invalid JSON: a number is too long") from None
    except RecursionError:
        raise _Unusable(f"{name}: invalid JSON: lists or objects are nested too deeply") from None


def _show(value) -> str:
    if isinstance(value, str) and len(value) > 60:
        value = value[:57] + "..."  # keep the quotes, so a cut string still reads as a string
    try:
        text = json.dumps(value, ensure_ascii=False)
        if _CONTROL.search(text):  # shown escaped, never as they are (they go to the log and /healthz)
            text = json.dumps(value)
    except (ValueError, RecursionError):  # integers too long to print, absurd nesting
        return f"a very large {'number' if isinstance(value, int) else 'value'}"
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _JsonObject(dict):
    repeated = ()


def _object_pairs(pairs):
    # json.loads silently keeps the last of two equal keys; a merchant should hear about it.
    obj = _JsonObject(pairs)
    if len(obj) != len(pairs):
        seen = set()
        obj.repeated = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


class _Checker:
    """Walks the parsed file and collects every problem instead of stopping at the first."""

    def __init__(self, name, public_dir):
        self.name, self.public_dir, self.problems = name, os.fspath(public_dir), []
        self.currency, self._image_exists = None, {}
        self.product_fields = {"id": (_REQUIRED, self.id), "name": (_REQUIRED, self.text(NAME_LIMIT)),
                               "description": (_REQUIRED, self.text(DESCRIPTION_LIMIT)),
                               "price": (_REQUIRED, self.price), "image": (_REQUIRED, self.image),
                               "tax_code": (None, self.tax_code), "stock": (None, self.stock)}
        self.option_fields = {"id": (_REQUIRED, self.id), "name": (_REQUIRED, self.text(NAME_LIMIT)),
                              "amount": (_REQUIRED, self.shipping_amount), "min_days": (_REQUIRED, self.days),
                              "max_days": (_REQUIRED, self.days), "tax_code": (None, self.tax_code),
                              "free_over": (None, self.price)}
        self.promotion_fields = {"code": (_REQUIRED, self.code), "percent_off": (None, self.percent),
                                 "amount_off": (None, self.price), "expires": (None, self.date),
                                 "max_redemptions": (None, self.stock), "minimum_amount": (None, self.price)}

    def problem(self, path, text, value=_NO_VALUE):
        got = "" if value is _NO_VALUE else f", got {_show(value)}"
        self.problems.append(f"{self.name}: {path}: {text}{got}")
        return _BAD

    def catalog(self, data):
        top = self.obj("top level", data, {
            "shop": (_REQUIRED, lambda p, v: self.obj(p, v, {
                "name": (_REQUIRED, self.text(NAME_LIMIT)), "currency": (_REQUIRED, self.check_currency)})),
            "products": (_REQUIRED, lambda p, v: self.items(
                p, v, "product", self.product_fields, lambda _, fields: fields)),
            "shipping": (_REQUIRED, lambda p, v: self.obj(p, v, {
                "countries": (_REQUIRED, self.countries),
                "options": (_REQUIRED, lambda p, v: self.items(
                    p, v, "shipping option", self.option_fields, self.shipping_option, MAX_SHIPPING_OPTIONS))})),
            "tax": ({"mode": "none", "behavior": "exclusive"}, lambda p, v: self.obj(p, v, {
                "mode": (_REQUIRED, self.choice(TAX_MODES)), "behavior": (_REQUIRED, self.choice(TAX_BEHAVIORS))})),
            "promotions": ([], self.promotions),
            "checkout": ({"terms_url": None, "collect_tax_ids": False}, lambda p, v: self.obj(p, v, {
                "terms_url": (None, self.url), "collect_tax_ids": (False, self.flag)})),
        })
        if self.problems:
            return None
        shop, shipping, tax = top["shop"], top["shipping"], top["tax"]
        return {"shop_name": shop["name"], "currency": shop["currency"], "products": top["products"],
                "shipping_options": shipping["options"], "countries": shipping["countries"],
                "tax_mode": tax["mode"], "tax_behavior": tax["behavior"], "promotions": top["promotions"],
                **top["checkout"]}

    def obj(self, path, value, fields):
        if not isinstance(value, dict):
            return self.problem(path, "must be a JSON object {...}", value)
        for key in getattr(value, "repeated", ()):
            self.problem(path, f"field {_show(key)} appears more than once (only the last would count)")
        out = {}
        for key, (default, check) in fields.items():
            where = key if path == "top level" else f"{path}.{key}"
            if key in value:
                out[key] = check(where, value[key])
            else:
                out[key] = self.problem(where, "required field is missing") if default is _REQUIRED else default
        for key in [k for k in value if k not in fields]:  # in the file's order
            near = difflib.get_close_matches(key, list(fields), 1)
            self.problem(path, f"unknown field {_show(key)}" + (f' (did you mean "{near[0]}"?)' if near else ""))
        return out

    def items(self, path, value, what, fields, make, limit=None):
        if not isinstance(value, list):
            return self.problem(path, f"must be a JSON list [...] of {what}s", value)
        if not value:
            return self.problem(path, f"must list at least one {what}", value)
        if limit and len(value) > limit:
            self.problem(path, f"must list at most {limit} {what}s (Stripe Checkout's limit)", len(value))
        out, first_use = [], {}
        for i, item in enumerate(value):
            fields_ok = self.obj(f"{path}[{i}]", item, fields)
            if fields_ok is _BAD:
                continue
            item_id = fields_ok["id"]
            if item_id is not _BAD and item_id in first_use:
                self.problem(f"{path}[{i}].id", f"duplicate id, already used by {first_use[item_id]}", item_id)
            elif item_id is not _BAD:
                first_use[item_id] = f"{path}[{i}]"
            fields_ok = make(f"{path}[{i}]", fields_ok)
            if _BAD not in fields_ok.values():
                out.append(fields_ok)
        return out

    def shipping_option(self, path, fields):
        if _BAD not in (fields["min_days"], fields["max_days"]) and fields["min_days"] > fields["max_days"]:
            self.problem(f"{path}.min_days", f"must not be more than max_days ({fields['max_days']})",
                         fields["min_days"])
        return fields

    def text(self, limit):
        def check(path, value):
            if not isinstance(value, str):
                return self.problem(path, "must be a text string", value)
            if not value.strip():
                return self.problem(path, "must not be empty", value)
            if len(value) > limit:
                return self.problem(path, f"must be at most {limit} characters (this has {len(value)})", value)
            # They would reach the pages and Stripe as they are: a NUL, or text that reads backwards; and a name is
            # one line (it heads emails), so no line break or tab either.
            bad = (_CONTROL if limit > NAME_LIMIT else _ONE_LINE).search(value)
            if bad:
                return self.problem(path, f"must not contain control characters (U+{ord(bad[0]):04X} at position "
                                          f"{bad.start() + 1})", value)
            return value
        return check

    def id(self, path, value):
        if not isinstance(value, str) or not _ID.fullmatch(value):
            return self.problem(path, "must be 1-64 lowercase letters, digits or hyphens, starting with a letter "
                                      "or digit", value)
        return value

    def amount(self, path, value, smallest, what):
        if not _is_int(value) or value < smallest:
            return self.problem(path, f"must be {what} in minor units", value)
        if value > MAX_AMOUNT:
            return self.problem(path, f"must be at most {MAX_AMOUNT} (Stripe's maximum amount)", value)
        # https://docs.stripe.com/currencies#three-decimal and https://docs.stripe.com/currencies#special-cases
        if self.currency in THREE_DECIMAL and value % 10:
            return self.problem(path, f"must end in 0 in {self.currency} (Stripe's rule for three-decimal "
                                      "currencies)", value)
        if self.currency in WHOLE_UNITS_ONLY and value % 100:
            return self.problem(path, f"must be a multiple of 100 in {self.currency} (Stripe charges whole "
                                      "units only)", value)
        return value

    def price(self, path, value):
        return self.amount(path, value, 1, "a positive integer")

    def shipping_amount(self, path, value):
        return self.amount(path, value, 0, "an integer of 0 or more")

    def days(self, path, value):
        if not _is_int(value) or not 1 <= value <= 365:
            return self.problem(path, "must be a whole number of business days from 1 to 365", value)
        return value

    def check_currency(self, path, value):
        if isinstance(value, str) and value.lower() in CURRENCIES and value not in CURRENCIES:
            return self.problem(path, f'must be lowercase, like "{value.lower()}"', value)
        if not isinstance(value, str) or value not in CURRENCIES:
            return self.problem(path, 'must be a currency Stripe supports, as a lowercase ISO 4217 code like '
                                      '"usd"', value)
        self.currency = value
        return value

    def countries(self, path, value):
        if not isinstance(value, list) or not value:
            return self.problem(path, 'must be a non-empty JSON list of country codes like ["US", "CA"]', value)
        seen = set()
        for i, code in enumerate(value):
            where = f"{path}[{i}]"
            if not isinstance(code, str):
                self.problem(where, 'must be a two-letter country code like "US"', code)
            elif code in COUNTRY_HINTS:
                self.problem(where, f'is not an ISO 3166-1 code; use "{COUNTRY_HINTS[code]}"', code)
            elif code not in COUNTRIES:
                hint = f'must be uppercase, like "{code.upper()}"' if code.upper() in COUNTRIES else \
                    'unknown country code (use ISO 3166-1 alpha-2, like "US")'
                self.problem(where, hint, code)
            elif code in NOT_SHIPPABLE:
                self.problem(where, "Stripe Checkout cannot ship to this country", code)
            elif code in seen:
                self.problem(where, "is listed more than once", code)
            seen.add(code if isinstance(code, str) else None)
        return list(value)

    def image(self, path, value):
        if not isinstance(value, str) or not value.strip():
            return self.problem(path, 'must be a path under public/, like "img/books/dune.svg"', value)
        if "://" in value or value.startswith("//"):
            return self.problem(path, 'must be a path under public/, not a URL', value)
        if value.startswith("/") or "\\" in value or ".." in value.split("/") or re.match(r"[A-Za-z]:", value):
            return self.problem(path, "must be a relative path with forward slashes that stays inside public/",
                                value)
        if not _IMAGE_PATH.fullmatch(value):  # it becomes part of the image URL sent to Stripe, unquoted
            return self.problem(path, "must use only letters, digits, and . _ - / in the path", value)
        if any(part == "" or part.startswith(".") for part in value.split("/")):  # what /static/ refuses
            return self.problem(path, 'must not have an empty part ("//") or a part starting with a dot', value)
        if not value.lower().endswith(IMAGE_TYPES):
            return self.problem(path, f"must be an image file ({', '.join(IMAGE_TYPES)})", value)
        if value not in self._image_exists:
            self._image_exists[value] = os.path.isfile(os.path.join(self.public_dir, value))
        if not self._image_exists[value]:
            return self.problem(path, f"no such file in {self.public_dir}", value)
        return value

    def tax_code(self, path, value):
        if value is not None and (not isinstance(value, str) or not _TAX_CODE.fullmatch(value)):
            return self.problem(path, 'must be a Stripe tax code like "txcd_35010000" (txcd_ and 8 digits) '
                                      'or null', value)
        return value

    def stock(self, path, value):
        if value is not None and (not _is_int(value) or not 0 <= value <= 1_000_000):
            return self.problem(path, "must be a whole number from 0 to 1000000", value)
        return value

    def percent(self, path, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 100:
            return self.problem(path, "must be a number above 0 and at most 100", value)
        return value

    def code(self, path, value):
        # Stripe's promotion codes: letters, digits and dashes; shoppers type them in any case.
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9-]{3,40}", value):
            return self.problem(path, "must be 3-40 letters, digits or dashes, like \"SPRING10\"", value)
        return value.upper()

    def date(self, path, value):
        if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return self.problem(path, 'must be a date like "2027-01-31"', value)
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            return self.problem(path, "is not a date in the calendar", value)
        return value

    def url(self, path, value):
        if value is not None and (not isinstance(value, str) or not re.fullmatch(r"https://[^\s\"'<>()]{3,500}", value)):
            return self.problem(path, "must be an https:// address without spaces, quotes or brackets", value)
        return value

    def flag(self, path, value):
        return value if isinstance(value, bool) else self.problem(path, "must be true or false", value)

    def promotions(self, path, value):
        if not isinstance(value, list):
            return self.problem(path, "must be a JSON list [...] of promotions", value)
        out, seen = [], set()
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            fields = self.obj(where, item, self.promotion_fields)
            if fields is _BAD or _BAD in fields.values():
                continue
            if (fields["percent_off"] is None) == (fields["amount_off"] is None):
                self.problem(where, "needs exactly one of percent_off or amount_off")
            elif fields["code"] in seen:
                self.problem(f"{where}.code", "is used by another promotion (codes ignore case)", fields["code"])
            else:
                out.append(fields)
            seen.add(fields["code"])
        return out

    def choice(self, allowed):
        def check(path, value):
            if not isinstance(value, str) or value not in allowed:
                return self.problem(path, "must be " + " or ".join(f'"{a}"' for a in allowed), value)
            return value
        return check
