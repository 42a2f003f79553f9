"""The shop's settings as data: one table of names, variables, defaults, help and checks, read from the environment."""

import ipaddress
import os
import re
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")  # a plain ASCII address
HOST = re.compile(r"[A-Za-z0-9._:%-]*|/[^@?&=]*")  # a name or an address, or a socket's folder
KEY = re.compile(r"[sr]k_(test|live)_")  # a secret or restricted key; the mode is in its name


class ShopError(Exception):
    """The one error type: a status and a message safe to show; `detail` is for the log, `code` is Stripe's."""

    def __init__(self, status, message, detail=None, retry_after=None, code=None):
        super().__init__(message)
        self.status, self.message, self.detail, self.retry_after, self.code = status, message, detail, retry_after, code


class ConfigError(ShopError):
    """Configuration the shop cannot start with; the message names the variable."""

    def __init__(self, message):
        super().__init__(500, message)


def _smtp_url(url):
    """smtp:// or smtps:// with a host, a port (if any) from 1 to 65535, and no query but ?timeout=N."""
    try:
        parts = urlsplit(url)
        parts.port  # raises on a bad port
    except ValueError:
        return False
    query = parse_qs(parts.query, keep_blank_values=True)
    return (parts.scheme in ("smtp", "smtps") and bool(parts.hostname) and parts.port != 0 and set(query) <= {"timeout"}
            and all(re.fullmatch(r"[0-9]{1,4}(\.[0-9]+)?", v) and float(v) > 0 for v in query.get("timeout", [])))


def _address(text):
    """One IP address (the proxy's connections come from one; a network or `*` would match no peer)."""
    try:
        return bool(ipaddress.ip_address(text))
    except ValueError:
        return False


def _database_url(url):
    """A postgresql:// URL that libpq reads as written. A password's own @ % / left as typed would otherwise end
    up, in part, in the connection library's log lines (as a host name, a bad token, a database)."""
    from psycopg import Error, conninfo
    try:
        parsed = conninfo.conninfo_to_dict(url)  # as libpq reads it: a password ends at its first @ or /
    except (Error, ValueError):  # a bad %-escape, or one that is not UTF-8
        return False
    scheme, _, rest = url.partition("://")
    database = rest.partition("/")[2].partition("?")[0]  # an @ here was the password's, cut at a /
    return (scheme in ("postgresql", "postgres") and "@" not in database
            and all(HOST.fullmatch(host) for host in parsed.get("host", "").split(","))
            and all(not port or re.fullmatch("[0-9]{1,5}", port) and 0 < int(port) < 65536
                    for port in parsed.get("port", "").split(",")))


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: object
    help: str
    secret: bool = False
    limits: tuple = (0, 300)  # a number's lowest and highest value
    valid: object = None  # a test a text's value (when not empty) must pass, never echoing it: it may be a secret
    must: str = ""  # what the error says the value must be


SETTINGS = (
    Setting("stripe_secret_key", "STRIPE_SECRET_KEY", "", "Empty: offline test mode against the built-in stand-in. "
            "sk_test_/rk_test_: Stripe test mode. sk_live_/rk_live_: live mode.", secret=True,
            valid=KEY.match,
            must="must start with sk_test_, rk_test_, sk_live_ or rk_live_ (a publishable pk_ key will not work)"),
    Setting("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET", "",
            "Signing secret (whsec_...) of the webhook endpoint; required outside offline mode.", secret=True,
            valid=lambda value: value.startswith("whsec_"), must="must start with whsec_"),
    Setting("base_url", "BASE_URL", "", "Public origin of the shop (no path), for Stripe's redirects and image URLs "
            "(default http://HOST:PORT). Never taken from the request's Host header."),
    Setting("host", "HOST", "127.0.0.1", "Interface the server listens on."),
    Setting("port", "PORT", 8000, "Port the server listens on.", limits=(1, 65535)),
    Setting("catalog", "CATALOG", "catalog.json", "Path of the catalog file (relative to the shop)."),
    Setting("catalog_check_seconds", "CATALOG_CHECK_SECONDS", 1.0,
            "How often, at most, the shop looks at the catalog file for edits (0: on every request)."),
    Setting("data_dir", "DATA_DIR", "data",
            "Folder for the SQLite ledger, fulfilments.jsonl and the offline stand-in."),
    Setting("database_url", "DATABASE_URL", "", "Empty: SQLite in DATA_DIR. postgresql://user:pass@host/db: "
            "PostgreSQL, shared by every instance.", secret=True,
            valid=_database_url, must="must be empty (SQLite) or a postgresql:// URL, with any @ % : / in the "
            "password written %40 %25 %3A %2F"),
    Setting("stripe_api_base", "STRIPE_API_BASE", "",
            "Send Stripe API calls to a Stripe-compatible server (stripe-mock, `python -m standin`)."),
    Setting("stripe_timeout", "STRIPE_TIMEOUT", 10.0, "Seconds before one Stripe API call gives up.",
            limits=(0.001, 300)),
    Setting("stripe_max_retries", "STRIPE_MAX_RETRIES", 2,
            "Retries of a failed Stripe call (same idempotency key, so nothing is made twice).", limits=(0, 10)),
    Setting("threads", "THREADS", 128, "Request threads, sized for waiting on Stripe: at 400 ms a call, 128 carry 320 "
            "checkouts/s, more than 2 cores prepare, so the CPU is the limit, not the pool (an idle thread costs ~100 "
            "KiB).", limits=(1, 1024)),
    Setting("connection_limit", "CONNECTION_LIMIT", 1000, "Open connections at most. One still sending its request "
            "holds no thread: slow clients cannot take the threads.",
            limits=(10, 100000)),
    Setting("channel_timeout", "CHANNEL_TIMEOUT", 30, "Seconds a connection may stay silent (mid-request or idle "
            "keep-alive) before it is closed.", limits=(1, 3600)),
    Setting("trusted_proxy", "TRUSTED_PROXY", "", "Address of the reverse proxy in front: only its X-Forwarded-For "
            "names the client (for the limits by address). Empty: none is trusted.", valid=_address,
            must="must be the proxy's IP address as its connections come from, like 10.0.0.2"),
    Setting("checkout_limit", "CHECKOUT_LIMIT", 10, "Checkouts one browser may start per minute; more get a 429 "
            "page (protects Stripe's rate limit).", limits=(1, 10000)),
    Setting("address_checkout_limit", "ADDRESS_CHECKOUT_LIMIT", 0, "Checkouts per minute per client address (behind "
            "`TRUSTED_PROXY`: the one it names), for scarce stock; 0: off, as a sale's shoppers often share one.",
            limits=(0, 100000)),
    Setting("smtp_url", "SMTP_URL", "", "Mail server for order emails: smtp://user:pass@host:587 (STARTTLS when "
            "offered) or smtps://...:465; ?timeout=30: seconds per step. Empty: emails are written to "
            "DATA_DIR/outbox/ as .eml files.", secret=True,
            valid=_smtp_url,
            must="must be empty or like smtp://user:pass@host:587 or smtps://host:465, with no query but ?timeout=N "
                 "(seconds, above 0)"),
    Setting("merchant_email", "MERCHANT_EMAIL", "",
            "Address that gets a notice of each new order, failed refund and dispute (empty: none).",
            valid=EMAIL.fullmatch, must="must be a plain address like orders@example.com"),
    Setting("mail_from", "MAIL_FROM", "", "Sender address of the shop's emails (default shop@ the BASE_URL host).",
            valid=EMAIL.fullmatch, must="must be a plain address like orders@example.com"),
    Setting("admin_password", "ADMIN_PASSWORD", "", "Password of the orders page /admin (user admin); empty: no "
            "/admin. Live mode needs 12+ characters.", secret=True),
)


class _Config:
    def public(self):
        """Every setting with secrets masked, for `shop.py settings` and logs."""
        return {s.env: ("set" if getattr(self, s.name) else "") if s.secret else str(getattr(self, s.name))
                for s in SETTINGS}

    def __repr__(self):  # a Config in a log line or a traceback shows no secret
        return f"Config({', '.join(f'{k}={v!r}' for k, v in self.public().items())}, mode={self.mode!r})"


# The settings' values by name, the mode the key selects, whether the shop is served over https (cookies get Secure
# and __Host-, HSTS is sent), and (tests only) a stand-in to use instead of making one.
Config = make_dataclass("Config", [s.name for s in SETTINGS] + ["mode", "secure", ("standin", object, None)],
                        bases=(_Config,), frozen=True, repr=False)


def _coerce(setting, raw):
    """A setting's value from its text, checked by its row of the table."""
    kind, text = type(setting.default), str(raw).strip()
    if kind is str:
        if text and setting.valid and not setting.valid(text):
            raise ConfigError(f"{setting.env}: {setting.must}")
        return text
    # Written in ASCII digits: int() and float() also take other scripts' digits, "1_0", "1e3" and "nan".
    if not re.fullmatch(r"-?[0-9]+" + ("" if kind is int else r"(\.[0-9]+)?"), text):
        raise ConfigError(f"{setting.env}: must be a {'whole ' if kind is int else ''}number, got {raw!r}")
    value = kind(text)
    low, high = setting.limits
    if not low <= value <= high:
        raise ConfigError(f"{setting.env}: must be from {low} to {high}, got {raw!r}")
    return value


def origin(url, name):
    """An http(s) origin as a browser writes it (lowercase host, no default port), or ConfigError naming `name`."""
    try:
        parts = urlsplit(url.rstrip("/"))
        host, port = parts.hostname or "", parts.port
        if host.isascii():
            host.encode("idna")  # UnicodeError (a ValueError) for an empty or overlong label
    except ValueError:  # a port that is not a number up to 65535, brackets round no address, a look-alike of @ / ?
        parts, host, port = None, "", ""
    if parts and not host.isascii():  # Python's IDNA 2003 is not the browsers' (straße.example): never guessed
        raise ConfigError(f"{name}: write an international domain name as browsers send it, in its xn-- form")
    if (not host or port == 0 or parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment
            or parts.username is not None or not all(c.isalnum() or c in ".-:[]" for c in host)):
        shown = "" if "@" in url or not url.isascii() else f", got {url!r}"  # may hold a password: never echoed
        raise ConfigError(f"{name}: must be an origin like https://shop.example.com (no path){shown}")
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    return urlunsplit((parts.scheme, host if port in (None, default) else f"{host}:{port}", "", "", ""))


def load_config(overrides=None, environ=None):
    """Every setting from overrides, then the environment, then its default; validated."""
    overrides, environ = overrides or {}, os.environ if environ is None else environ
    unknown = set(overrides) - {s.name for s in SETTINGS} - {"standin"}
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values, wrong = {}, {}  # wrong: {variable: why}, every one named at once, not one per start
    for s in SETTINGS:
        try:
            values[s.name] = _coerce(s, overrides[s.name] if s.name in overrides else environ.get(s.env) or s.default)
        except ConfigError as e:
            wrong[s.env] = e.message
            values[s.name] = s.default  # so that the checks of several settings below still run
    mode = KEY.match(values["stripe_secret_key"])[1] if values["stripe_secret_key"] else "offline"
    # This machine's own address for the interface it listens on (for `::`, waitress listens on IPv6 only).
    values["host"] = values["host"].removeprefix("[").removesuffix("]")  # [::1] as in a URL: ::1
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(values["host"], values["host"])
    host = f"[{host}]" if ":" in host else host
    for name, url, shown in (("base_url", values["base_url"] or f"http://{host}:{values['port']}",
                              "BASE_URL" if values["base_url"] else "HOST (BASE_URL is http://HOST:PORT when unset)"),
                             ("stripe_api_base", values["stripe_api_base"], "STRIPE_API_BASE")):
        try:
            values[name] = url and origin(url, shown)
        except ConfigError as e:
            wrong[shown.split()[0]] = e.message
            values[name] = "http://127.0.0.1"  # named: the checks below go on without it
    secure = values["base_url"].startswith("https://")
    if values["trusted_proxy"]:  # as the server writes a peer's address (::1, not 0:0:0:0:0:0:0:1)
        values["trusted_proxy"] = str(ipaddress.ip_address(values["trusted_proxy"]))
    rules = (  # of several settings
        ("STRIPE_API_BASE", mode == "offline" and values["stripe_api_base"],
         "needs a STRIPE_SECRET_KEY too (any sk_test_ key works against stripe-mock or `python -m standin`)"),
        ("BASE_URL", mode == "live" and not secure,
         "live mode needs an https:// URL (Stripe redirects shoppers there)"),
        ("STRIPE_API_BASE", mode == "live" and values["stripe_api_base"],  # a stand-in takes any card: never charged
         "live mode talks to Stripe itself (unset it with a live key)"),
        ("STRIPE_WEBHOOK_SECRET", mode == "live" and not values["stripe_webhook_secret"],
         "live mode needs the webhook signing secret (whsec_...)"),
        ("ADMIN_PASSWORD", mode == "live" and 0 < len(values["admin_password"]) < 12,
         "live mode needs at least 12 characters (or none: no /admin)"))
    if "STRIPE_SECRET_KEY" not in wrong:  # (a wrong key gives no mode to judge by)
        for name, broken, why in rules:
            if broken and name not in wrong:  # a variable named already is not named again
                wrong[name] = f"{name}: {why}"
    if wrong:
        raise ConfigError("\n".join(wrong.values()))
    host = urlsplit(values["base_url"]).hostname  # an address (127.0.0.1, ::1) is no mail domain
    sender = "shop@" + host
    values["mail_from"] = values["mail_from"] or (sender if EMAIL.fullmatch(sender) and not
                                                  host.replace(".", "").isdigit() else "shop@localhost")
    # Absolute, links and ".." left for the system to resolve: a link loop is the catalog's "cannot read the file".
    values["catalog"] = ROOT / values["catalog"]
    values["data_dir"] = ROOT / values["data_dir"]
    return Config(mode=mode, secure=secure, standin=overrides.get("standin"), **values)
