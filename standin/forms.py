"""Stripe's form encoding (`a[b][0][c]=v`, `expand[]=x`) parsed into nested values, and checked against a schema."""
import re
from urllib.parse import parse_qsl, urlsplit

from .errors import invalid, missing_param, unknown_param

# Request encoding: https://docs.stripe.com/api/request-encoding (nested bracket keys, arrays by index or `[]`).
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEG = re.compile(r"\[([^\[\]]*)\]")
MAX_BODY = 1 << 20


def parse_form(text):
    """Nested dicts of strings from a form-encoded string; arrays stay digit-keyed dicts until a schema asks."""
    root = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise invalid("Invalid request body: could not decode form parameters.")
    for key, value in pairs:
        m = _KEY.match(key)
        if not m:
            raise invalid(f"Invalid parameter name: {key}", key)
        path = [m.group(1)] + _SEG.findall(m.group(2))
        node = root
        for i, seg in enumerate(path):
            last = i == len(path) - 1
            if seg == "":  # `expand[]=x`: append
                seg = str(len(node))
            if last:
                if isinstance(node.get(seg), dict):
                    raise invalid(f"Invalid parameter: {key} mixes a value with nested parameters.", key)
                node[seg] = value
            else:
                child = node.setdefault(seg, {})
                if not isinstance(child, dict):
                    raise invalid(f"Invalid parameter: {key} mixes a value with nested parameters.", key)
                node = child
    return root


def decode_body(raw):
    """Form text from a raw request body (bytes), or Stripe's 400 when it is not UTF-8."""
    if len(raw) > MAX_BODY:
        raise invalid("Request body too large.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("Invalid request body: not valid UTF-8.")


def join(path, key):
    """Stripe's parameter path notation: `line_items[0][quantity]`."""
    return f"{path}[{key}]" if path else str(key)


class Field:
    """Base schema node; `clean(value, path)` returns the typed value or raises Stripe's 400."""

    unsettable = False

    def clean(self, value, path):
        raise NotImplementedError

    def _scalar(self, value, path, what):
        if isinstance(value, dict):
            raise invalid(f"Invalid {what}: expected a single value, got an object or array.", path)
        return value


class Str(Field):
    """A string, optionally limited to an enum of choices, a max length, or a URL."""

    def __init__(self, choices=None, max_length=5000, url=False, email=False, pattern=None, empty_ok=False):
        self.choices, self.max_length, self.url, self.email = choices, max_length, url, email
        self.pattern, self.empty_ok = pattern, empty_ok

    def clean(self, value, path):
        value = self._scalar(value, path, "string")
        if value == "" and not self.empty_ok:
            # https://docs.stripe.com/api/errors#error_object-code parameter_invalid_empty
            raise invalid(f"You passed an empty string for '{path}'. We assume empty values are an attempt to "
                          f"unset a parameter; however '{path}' cannot be unset. You should remove '{path}' "
                          "from your request or supply a non-empty value.", path, "parameter_invalid_empty")
        if self.choices is not None and value not in self.choices:
            opts = list(self.choices)
            listed = ", ".join(opts[:-1]) + (", or " if len(opts) > 2 else " or ") + opts[-1] if len(opts) > 1 else opts[0]
            raise invalid(f"Invalid {path.rsplit('[', 1)[-1].rstrip(']')}: must be one of {listed}", path)
        if len(value) > self.max_length:
            raise invalid(f"Invalid string: {value[:20]}...; must be at most {self.max_length} characters", path)
        if self.url and not is_url(value):
            raise invalid("Not a valid URL", path, "url_invalid")
        if self.email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise invalid(f"Invalid email address: {value}", path, "email_invalid")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise invalid(f"Invalid {path}: {value!r}", path)
        return value


class Int(Field):
    """An integer in decimal digits, optionally bounded."""

    def __init__(self, min=None, max=None):
        self.min, self.max = min, max

    def clean(self, value, path):
        value = self._scalar(value, path, "integer")
        if not re.fullmatch(r"-?[0-9]{1,18}", value):
            raise invalid(f"Invalid integer: {value}", path, "parameter_invalid_integer")
        n = int(value)
        if self.min is not None and n < self.min:
            raise invalid(f"Invalid {path}: must be greater than or equal to {self.min}", path)
        if self.max is not None and n > self.max:
            raise invalid(f"Invalid {path}: must be less than or equal to {self.max}", path)
        return n


class Num(Field):
    """A decimal number (`25.5`), as a float; `gt` is an exclusive lower bound, `max` an inclusive upper one."""

    def __init__(self, gt=None, max=None):
        self.gt, self.max = gt, max

    def clean(self, value, path):
        value = self._scalar(value, path, "number")
        if not re.fullmatch(r"-?[0-9]{1,18}(\.[0-9]{1,12})?", value):
            raise invalid(f"Invalid decimal: {value}", path)
        n = float(value)
        if self.gt is not None and n <= self.gt:
            raise invalid(f"Invalid {path}: must be greater than {self.gt:g}", path)
        if self.max is not None and n > self.max:
            raise invalid(f"Invalid {path}: must be less than or equal to {self.max:g}", path)
        return n


class Bool(Field):
    """`true` / `false`."""

    def clean(self, value, path):
        value = self._scalar(value, path, "boolean")
        if value not in ("true", "false"):
            raise invalid(f"Invalid boolean: {value}", path)
        return value == "true"


class Obj(Field):
    """A nested object with known fields; unknown fields are `parameter_unknown`, required ones `parameter_missing`."""

    def __init__(self, fields, required=()):
        self.fields, self.required = fields, tuple(required)

    def clean(self, value, path):
        if not isinstance(value, dict):
            if value == "":
                return None  # an empty string unsets an optional hash
            raise invalid("Invalid object", path)
        out = {}
        for key, raw in value.items():
            field = self.fields.get(key)
            if field is None:
                raise unknown_param(join(path, key))
            out[key] = field.clean(raw, join(path, key))
        for key in self.required:
            if out.get(key) is None:
                raise missing_param(join(path, key))
        return out


class Arr(Field):
    """An array, sent as `x[0]=..&x[1]=..` or `x[]=..`."""

    def __init__(self, item, max_items=None):
        self.item, self.max_items = item, max_items

    def clean(self, value, path):
        if value == "":
            return []
        if not isinstance(value, dict) or not all(k.isascii() and k.isdigit() for k in value):
            raise invalid("Invalid array", path)
        keys = sorted(value, key=int)
        if self.max_items is not None and len(keys) > self.max_items:
            raise invalid(f"Invalid array: {path} must have at most {self.max_items} elements", path)
        return [self.item.clean(value[k], f"{path}[{i}]") for i, k in enumerate(keys)]


class Metadata(Field):
    """Metadata: up to 50 string keys (40 chars) with string values (500 chars); https://docs.stripe.com/metadata.

    On an update (`update=True`) an empty value unsets: `metadata=""` gives None (unset every key) and
    `metadata[k]=""` keeps k with the value None (unset that key); see `merge_metadata`."""

    def __init__(self, update=False):
        self.update = update

    def clean(self, value, path):
        if value == "":
            return None if self.update else {}
        if not isinstance(value, dict):
            raise invalid("Invalid object", path)
        if len(value) > 50:
            raise invalid("Invalid metadata: metadata can have at most 50 keys.", path)
        out = {}
        for k, v in value.items():
            if isinstance(v, dict):
                raise invalid(f"Invalid value for metadata key {k}: must be a string", join(path, k))
            if len(k) > 40:
                raise invalid(f"Invalid metadata: keys must be at most 40 characters (got {k[:40]}...)", join(path, k))
            if len(v) > 500:
                raise invalid("Invalid metadata: values must be at most 500 characters", join(path, k))
            if v != "":
                out[k] = v
            elif self.update:
                out[k] = None
        return out


def merge_metadata(current, update):
    """An object's metadata after an update cleaned by `Metadata(update=True)`."""
    if update is None:
        return {}
    merged = dict(current or {})
    for k, v in update.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


def is_url(value):
    """True for an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c.isspace() for c in value)


def clean(schema, params):
    """Validate a whole request's params against an Obj schema (top level has no path prefix)."""
    return schema.clean(params, "")


EXPAND = Arr(Str(max_length=500), max_items=20)
