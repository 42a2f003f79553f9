"""The rules for catalog.json: every problem in the file, each with its place, or the checked fields."""
import datetime
import difflib
import json
import os
import re
import unicodedata
from functools import cache, partial

from .iso_codes import COUNTRIES, COUNTRY_HINTS, CURRENCIES, NOT_SHIPPABLE, THREE_DECIMAL, WHOLE_UNITS_ONLY

# Stripe's largest amount (eight digits): https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
MAX_AMOUNT = 99_999_999
# At most 5 shipping options, each name (shipping_rate_data.display_name) of at most 100 characters:
# https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-shipping_options
MAX_SHIPPING_OPTIONS, OPTION_NAME_LIMIT = 5, 100
NAME_LIMIT, DESCRIPTION_LIMIT = 120, 1000
IMAGE_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif", ".webp")
# C0 and C1 controls but tab and newline, bidirectional overrides and isolates, and lone surrogates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ONE_LINE = re.compile("[\t\n]|" + _CONTROL.pattern)  # and tab and newline
_REQUIRED, _BAD, _NO_VALUE = object(), object(), object()
# Letters that show as blank space (Hangul fillers, the blank Braille pattern)
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_SHOWS_NOTHING = {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Mc", "Me"}  # Unicode categories
# Noncharacters, and the unassigned code points Unicode reserves as default-ignorable (never drawn)
_NEVER_SHOWN = re.compile("[\ufdd0-\ufdef\u2065\ufff0-\ufff8\U000e0000-\U000e0fff]")


JSON_WORDS = {  # the parser's words for a mistake, as a merchant would say it
    "Invalid control character at": "a tab or line break inside a text (write \\t or \\n, or a space)",
    "Unterminated string starting at": 'a text with no closing quote (")',
    "Expecting property name enclosed in double quotes": 'a field name in straight double quotes (") is missing',
    "Extra data": "more after the catalog's last }",
    "Expecting value": "a value is missing: a text in quotes, a number, true, false, null, [...] or {...}",
}


def check(data: bytes, name: str, public_dir) -> tuple[list[str], dict | None]:
    """Every problem in the file's bytes (each starting with name), and Catalog's fields when there are none."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return [f"{name}: byte {e.start}: not UTF-8 text (save the file as UTF-8)"], None
    if not text.strip():
        return [f"{name}: line 1, column 1: the file is empty"], None
    try:
        parsed = json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as e:
        # The parser stops at what follows a missing or extra comma, often on the next line: point at the comma's place.
        at, why, before = e.pos, e.msg, text[:e.pos].rstrip()
        if e.msg == "Expecting ',' delimiter":
            at = len(before)
        elif e.msg.startswith("Illegal trailing comma"):  # Python 3.13 and later stop at the comma itself
            why = f'a comma before "{text[e.pos + 1:].lstrip()[:1]}" (JSON allows none after the last item)'
        elif before.endswith(",") and text[e.pos:e.pos + 1] in ("]", "}"):
            at, why = len(before) - 1, f'a comma before "{text[e.pos]}" (JSON allows none after the last item)'
        elif text[e.pos:e.pos + 1] in tuple("“”‘’"):  # what is there instead, in the merchant's words
            why = 'curly quotes: write texts in straight quotes (")'
        elif text[e.pos:e.pos + 2] in ("//", "/*"):
            why = "a comment (JSON has none)"
        else:
            why = JSON_WORDS.get(e.msg, why)
        upto = text[:at].replace("\r\n", "\n").replace("\r", "\n")  # lines as an editor counts them
        return [f"{name}: line {upto.count(chr(10)) + 1}, column {len(upto) - upto.rfind(chr(10))}: "
                f"invalid JSON: {why}"], None
    except ValueError:  # an integer with thousands of digits
        return [f"{name}: invalid JSON: a number is too long"], None
    except RecursionError:
        return [f"{name}: invalid JSON: lists or objects are nested too deeply"], None
    checker = _Checker(name, public_dir)
    fields = checker.catalog(parsed)
    return checker.problems, fields


def _show(value) -> str:
    if isinstance(value, str) and len(value) > 60:
        value = value[:57] + "..."  # keep the quotes, so a cut string still reads as a string
    try:
        text = json.dumps(value, ensure_ascii=False)
        # Shown escaped, never as they are (they go to the log and /admin), as is text that shows as nothing
        if _CONTROL.search(text) or isinstance(value, str) and value.strip() and _invisible(value):
            text = json.dumps(value)
    except (ValueError, RecursionError):  # integers too long to print, absurd nesting
        return f"a very large {'number' if isinstance(value, int) else 'value'}"
    return text if len(text) <= 80 else text[:77] + "..."


def _invisible(text) -> bool:
    """Whether nothing in the text shows: spaces, controls, format characters, marks on nothing, blank letters,
    noncharacters and code points Unicode keeps for invisible ones (a private-use character, or one this Python's
    Unicode does not know yet, such as a newer emoji, may show)."""
    return all(unicodedata.category(ch) in _SHOWS_NOTHING or ch in _BLANK_LETTERS or _NEVER_SHOWN.fullmatch(ch)
               or ord(ch) & 0xFFFE == 0xFFFE for ch in text)


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


def _rule(*tests_and_messages, nullable=False):
    """A check reporting the message after the first test a value fails; null passes where nullable."""
    def check(checker, path, value):
        if not (nullable and value is None):
            for ok, message in zip(tests_and_messages[::2], tests_and_messages[1::2]):
                if not ok(value):
                    return checker.problem(path, message, value)
        return value
    return check


def _string(pattern):
    """A test for a string that the regular expression matches in full."""
    return lambda value: isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _in_calendar(value):
    try:
        return bool(datetime.date.fromisoformat(value))
    except ValueError:
        return False


def _amount(smallest, what):
    """A check of an amount in minor units: from smallest to Stripe's maximum, and chargeable in the currency."""
    def check(checker, path, value):
        currency = checker.currency
        if not _is_int(value) or value < smallest:
            problem = f"must be {what} in minor units"
        elif value > MAX_AMOUNT:
            problem = f"must be at most {MAX_AMOUNT} (Stripe's maximum amount)"
        # https://docs.stripe.com/currencies#three-decimal and https://docs.stripe.com/currencies#special-cases
        elif currency in THREE_DECIMAL and value % 10:
            problem = f"must end in 0 in {currency} (Stripe's rule for three-decimal currencies)"
        elif currency in WHOLE_UNITS_ONLY and value % 100:
            problem = f"must be a multiple of 100 in {currency} (Stripe charges whole units only)"
        else:
            return value
        return checker.problem(path, problem, value)
    return check


def _text(limit, controls):
    """A check of text of at most limit characters, none of them matching the controls pattern."""
    def check(checker, path, value):
        if not isinstance(value, str):
            problem = "must be a text string"
        elif _invisible(value):
            problem = "must not be empty" + (" (it has only invisible characters)" if value.strip() else "")
        elif len(value) > limit:
            problem = f"must be at most {limit} characters (this has {len(value)})"
        # A NUL or text that reads backwards would reach the pages and Stripe; a name heads emails, so is one line.
        elif bad := controls.search(value):
            problem = f"must not contain control characters (U+{ord(bad[0]):04X} at position {bad.start() + 1})"
        else:
            return value
        return checker.problem(path, problem, value)
    return check


class _Checker:
    """Walks the parsed file and collects every problem instead of stopping at the first."""

    def __init__(self, name, public_dir):
        self.name, self.public_dir, self.problems, self.currency = name, os.fspath(public_dir), [], None
        self._image_exists = cache(lambda path: os.path.isfile(os.path.join(self.public_dir, path)))  # per image

    def problem(self, path, text, value=_NO_VALUE):
        got = "" if value is _NO_VALUE else f", got {_show(value)}"
        self.problems.append(f"{self.name}: {path}: {text}{got}")
        return _BAD

    def catalog(self, data):
        top = self.obj("top level", data, _TOP)
        if self.problems:
            return None
        shop, shipping, tax = top["shop"], top["shipping"], top["tax"]
        return {"shop_name": shop["name"], "currency": shop["currency"], "products": top["products"],
                "shipping_options": shipping["options"], "countries": shipping["countries"],
                "tax_mode": tax["mode"], "tax_behavior": tax["behavior"], "promotions": top["promotions"],
                **top["checkout"]}

    def obj(self, path, value, fields):
        """The checked fields of a JSON object; fields maps each name to (default or _REQUIRED, check or fields)."""
        if not isinstance(value, dict):
            return self.problem(path, "must be a JSON object {...}", value)
        for key in getattr(value, "repeated", ()):
            self.problem(path, f"field {_show(key)} appears more than once (only the last would count)")
        out = {}
        for key, (default, check) in fields.items():
            where = key if path == "top level" else f"{path}.{key}"
            if key not in value:
                out[key] = self.problem(where, "required field is missing") if default is _REQUIRED else default
            elif isinstance(check, dict):
                out[key] = self.obj(where, value[key], check)
            else:
                out[key] = check(self, where, value[key])
        for key in [k for k in value if k not in fields]:  # in the file's order
            # Suggestions for the first problems only: for a million unknown keys difflib would take a minute.
            near = difflib.get_close_matches(key, list(fields), 1) if len(self.problems) < 100 else ()
            self.problem(path, f"unknown field {_show(key)}" + (f' (did you mean "{near[0]}"?)' if near else ""))
        return out

    def items(self, path, value, what, fields, limit=None):
        if not isinstance(value, list):
            return self.problem(path, f"must be a JSON list [...] of {what}s", value)
        if not value:
            return self.problem(path, f"must list at least one {what}", value)
        if limit and len(value) > limit:
            self.problem(path, f"must list at most {limit} {what}s (Stripe Checkout's limit)", len(value))
        out, first_use = [], {}
        for i, item in enumerate(value):
            where, before = f"{path}[{i}]", len(self.problems)
            item = self.obj(where, item, fields)
            if item is _BAD:
                continue
            if item["id"] in first_use:
                self.problem(f"{where}.id", f"duplicate id, already used by {first_use[item['id']]}", item["id"])
            elif item["id"] is not _BAD:
                first_use[item["id"]] = where
            low, high = item.get("min_days"), item.get("max_days")  # a shipping option's
            if _is_int(low) and _is_int(high) and low > high:
                self.problem(f"{where}.min_days", f"must not be more than max_days ({high})", low)
            if item["id"] is not _BAD:  # and its id, which a merchant can search a long file for
                self.problems[before:] = [p if f"{where}.id:" in p else f"{p} ({what} {item['id']})"
                                          for p in self.problems[before:]]
            if _BAD not in item.values():
                out.append(item)
        return out

    def check_currency(self, path, value):
        if isinstance(value, str) and value in CURRENCIES:
            self.currency = value
            return value
        if isinstance(value, str) and value.lower() in CURRENCIES:
            return self.problem(path, f'must be lowercase, like "{value.lower()}"', value)
        return self.problem(path, 'must be a currency Stripe supports, as a lowercase ISO 4217 code like "usd"', value)

    def countries(self, path, value):
        if not isinstance(value, list) or not value:
            return self.problem(path, 'must be a non-empty JSON list of country codes like ["US", "CA"]', value)
        seen = set()
        for i, code in enumerate(value):
            if not isinstance(code, str):
                problem = 'must be a two-letter country code like "US"'
            elif code in COUNTRY_HINTS:
                problem = f'is not an ISO 3166-1 code; use "{COUNTRY_HINTS[code]}"'
            elif code not in COUNTRIES:
                problem = f'must be uppercase, like "{code.upper()}"' if code.upper() in COUNTRIES else \
                    'unknown country code (use ISO 3166-1 alpha-2, like "US")'
            elif code in NOT_SHIPPABLE:
                problem = "Stripe Checkout cannot ship to this country"
            else:
                problem = "is listed more than once" if code in seen else None
                seen.add(code)
            if problem:
                self.problem(f"{path}[{i}]", problem, code)
        return tuple(value)

    def image(self, path, value):
        if not isinstance(value, str) or not value.strip():
            return self.problem(path, 'must be a path under public/, like "img/books/dune.svg"', value)
        parts = value.split("/")
        if "://" in value or value.startswith("//"):
            problem = "must be a path under public/, not a URL"
        elif value.startswith("/") or "\\" in value or ".." in parts or re.match(r"[A-Za-z]:", value):
            problem = "must be a relative path with forward slashes that stays inside public/"
        elif not re.fullmatch(r"[A-Za-z0-9._/-]+", value):  # it becomes part of the image URL sent to Stripe, unquoted
            problem = "must use only letters, digits, and . _ - / in the path"
        elif any(part == "" or part.startswith(".") for part in parts):  # what /static/ refuses
            problem = 'must not have an empty part ("//") or a part starting with a dot'
        elif not value.lower().endswith(IMAGE_TYPES):
            problem = f"must be an image file ({', '.join(IMAGE_TYPES)})"
        elif self._image_exists(value):
            return value
        else:
            problem = f"no such file in {self.public_dir}"
        return self.problem(path, problem, value)

    def promotions(self, path, value):
        if not isinstance(value, list):
            return self.problem(path, "must be a JSON list [...] of promotions", value)
        out, seen = [], set()
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            fields = self.obj(where, item, _PROMOTION)
            if fields is _BAD or _BAD in fields.values():
                continue
            fields["code"] = fields["code"].upper()  # shoppers type codes in any case
            if (fields["percent_off"] is None) == (fields["amount_off"] is None):
                self.problem(where, "needs exactly one of percent_off or amount_off")
            elif fields["code"] in seen:
                self.problem(f"{where}.code", "is used by another promotion (codes ignore case)", fields["code"])
            else:
                out.append(fields)
            seen.add(fields["code"])
        return tuple(out)


_identifier = _rule(_string(r"[a-z0-9][a-z0-9-]{0,63}"),
                    "must be 1-64 lowercase letters, digits or hyphens, starting with a letter or digit")
_name, _price = _text(NAME_LIMIT, _ONE_LINE), _amount(1, "a positive integer")
# Stripe tax codes look like txcd_35010000 (books): https://docs.stripe.com/tax/tax-codes
_tax_code = _rule(_string(r"txcd_[0-9]{8}"),
                  'must be a Stripe tax code like "txcd_35010000" (txcd_ and 8 digits) or null', nullable=True)
_count = _rule(lambda v: _is_int(v) and 0 <= v <= 1_000_000, "must be a whole number from 0 to 1000000", nullable=True)
# Stripe refuses a limit of 0: https://docs.stripe.com/api/promotion_codes/create#create_promotion_code-max_redemptions
_redemptions = _rule(lambda v: _is_int(v) and 1 <= v <= 1_000_000, "must be a whole number from 1 to 1000000",
                     nullable=True)
_days = _rule(lambda v: _is_int(v) and 1 <= v <= 365, "must be a whole number of business days from 1 to 365")
# Stripe's promotion codes: letters, digits and dashes; shoppers type them in any case.
_code = _rule(_string(r"[A-Za-z0-9-]{3,40}"), 'must be 3-40 letters, digits or dashes, like "SPRING10"')
# Stripe keeps percent_off to two decimals: https://docs.stripe.com/api/coupons/create#create_coupon-percent_off
_percent = _rule(lambda v: (_is_int(v) or isinstance(v, float)) and 0.01 <= v <= 100 and round(v, 2) == v,
                 "must be a number from 0.01 to 100 with at most two decimals, like 12.5")
_date = _rule(_string(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"), 'must be a date like "2027-01-31"',
              _in_calendar, "is not a date in the calendar")
_url = _rule(_string(r"https://[^\s\"'<>()]{3,500}"), "must be an https:// address without spaces, quotes or brackets",
             nullable=True)

_PRODUCT = {"id": (_REQUIRED, _identifier), "name": (_REQUIRED, _name),
            "description": (_REQUIRED, _text(DESCRIPTION_LIMIT, _CONTROL)), "price": (_REQUIRED, _price),
            "image": (_REQUIRED, _Checker.image), "tax_code": (None, _tax_code), "stock": (None, _count)}
_OPTION = {"id": (_REQUIRED, _identifier), "name": (_REQUIRED, _text(OPTION_NAME_LIMIT, _ONE_LINE)),
           "amount": (_REQUIRED, _amount(0, "an integer of 0 or more")), "min_days": (_REQUIRED, _days),
           "max_days": (_REQUIRED, _days), "tax_code": (None, _tax_code), "free_over": (None, _price)}
_PROMOTION = {"code": (_REQUIRED, _code), "percent_off": (None, _percent), "amount_off": (None, _price),
              "expires": (None, _date), "max_redemptions": (None, _redemptions), "minimum_amount": (None, _price)}
_TOP = {
    "shop": (_REQUIRED, {"name": (_REQUIRED, _name), "currency": (_REQUIRED, _Checker.check_currency)}),
    "products": (_REQUIRED, partial(_Checker.items, what="product", fields=_PRODUCT)),
    "shipping": (_REQUIRED, {"countries": (_REQUIRED, _Checker.countries), "options": (_REQUIRED, partial(
        _Checker.items, what="shipping option", fields=_OPTION, limit=MAX_SHIPPING_OPTIONS))}),
    # https://docs.stripe.com/tax/products-prices-tax-codes-tax-behavior
    "tax": ({"mode": "none", "behavior": "exclusive"}, {
        "mode": ("none", _rule(lambda v: v in ("automatic", "none"), 'must be "automatic" or "none"')),
        "behavior": ("exclusive", _rule(lambda v: v in ("exclusive", "inclusive"),
                                      'must be "exclusive" or "inclusive"'))}),
    "promotions": ((), _Checker.promotions),
    "checkout": ({"terms_url": None, "collect_tax_ids": False}, {
        "terms_url": (None, _url),
        "collect_tax_ids": (False, _rule(lambda v: isinstance(v, bool), "must be true or false"))}),
}
