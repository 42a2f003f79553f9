"""The shop's settings as data: one table (name, env var, default, help), read from the environment and `.env`."""

import os
import re
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")  # a plain ASCII address


class ShopError(Exception):
    """The one error type: an HTTP status and a message that is safe to show; `detail` is for the log only."""

    def __init__(self, status, message, detail=None, retry_after=None):
        super().__init__(message)
        self.status, self.message, self.detail, self.retry_after = status, message, detail, retry_after


class ConfigError(ShopError):
    """Configuration the shop cannot start with; the message names the variable."""

    def __init__(self, message):
        super().__init__(500, message)


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: object
    help: str
    secret: bool = False


SETTINGS = (
    Setting("stripe_secret_key", "STRIPE_SECRET_KEY", "",
            "Stripe secret key. Empty: offline test mode against the built-in stand-in. "
            "sk_test_/rk_test_: Stripe test mode. sk_live_/rk_live_: live mode.", secret=True),
    Setting("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET", "",
            "Signing secret (whsec_...) of the webhook endpoint; required outside offline mode.", secret=True),
    Setting("base_url", "BASE_URL", "",
            "Public origin of the shop (no path), for Stripe's redirects and image URLs (default http://HOST:PORT). "
            "Never taken from the request's Host header."),
    Setting("host", "HOST", "127.0.0.1", "Interface the server listens on."),
    Setting("port", "PORT", 8000, "Port the server listens on."),
    Setting("catalog", "CATALOG", "catalog.json", "Path of the catalog file (relative to the shop)."),
    Setting("catalog_check_seconds", "CATALOG_CHECK_SECONDS", 1.0,
            "How often, at most, the shop looks at the catalog file for edits (0: on every request)."),
    Setting("data_dir", "DATA_DIR", "data", "Folder for the SQLite ledger, fulfilments.jsonl and the offline stand-in."),
    Setting("database_url", "DATABASE_URL", "",
            "Empty: SQLite in DATA_DIR. postgresql://user:pass@host/db: PostgreSQL, shared by every instance.",
            secret=True),
    Setting("stripe_api_base", "STRIPE_API_BASE", "",
            "Send Stripe API calls to another Stripe-compatible server (stripe-mock, `python -m standin`)."),
    Setting("stripe_timeout", "STRIPE_TIMEOUT", 10.0, "Seconds before one Stripe API call gives up."),
    Setting("stripe_max_retries", "STRIPE_MAX_RETRIES", 2,
            "Retries of a failed Stripe call (same idempotency key, so nothing is made twice)."),
    Setting("threads", "THREADS", 128,
            "Request threads, sized for waiting on Stripe: at 400 ms a call 128 threads carry 320 checkouts/s, more "
            "than 2 cores prepare, so the CPU, not the pool, is the limit (an idle thread costs ~100 KiB)."),
    Setting("connection_limit", "CONNECTION_LIMIT", 1000,
            "Open connections at most. One still sending its request holds no thread, so slow clients cannot take "
            "the threads; the limit bounds memory and file descriptors."),
    Setting("channel_timeout", "CHANNEL_TIMEOUT", 30,
            "Seconds a connection may stay silent (mid-request or idle keep-alive) before it is closed."),
    Setting("trusted_proxy", "TRUSTED_PROXY", "",
            "Address of the reverse proxy in front: only its X-Forwarded-For names the client (/admin's sign-in "
            "limit). Empty: none is trusted."),
    Setting("checkout_limit", "CHECKOUT_LIMIT", 10,
            "Checkouts one browser may start per minute; more get a 429 page (protects Stripe's rate limit)."),
    Setting("smtp_url", "SMTP_URL", "",
            "Mail server for order emails: smtp://user:pass@host:587 (STARTTLS when offered) or smtps://...:465; "
            "?timeout=30 sets the seconds per step. Empty: each email is written to DATA_DIR/outbox/ as a .eml file.",
            secret=True),
    Setting("merchant_email", "MERCHANT_EMAIL", "", "Address that gets a notice of each new order (empty: none)."),
    Setting("mail_from", "MAIL_FROM", "", "Sender address of the shop's emails (default shop@ the BASE_URL host)."),
    Setting("admin_password", "ADMIN_PASSWORD", "",
            "Password of the orders page /admin (user admin); empty: no /admin. Live mode needs 12+ characters.",
            secret=True),
)

_LIMITS = {"port": (1, 65535), "stripe_max_retries": (0, 10), "threads": (1, 1024),
           "connection_limit": (10, 100000), "channel_timeout": (1, 3600), "checkout_limit": (1, 10000)}


class _Config:
    @property
    def secure(self):
        """True when the shop is served over https (cookies get Secure and __Host-, HSTS is sent)."""
        return self.base_url.startswith("https://")

    def public(self):
        """Every setting with secrets masked, for `shop.py settings` and logs."""
        return {s.env: ("set" if getattr(self, s.name) else "") if s.secret else str(getattr(self, s.name))
                for s in SETTINGS}


# The settings' values by name, the mode the key selects, and (tests only) a stand-in to use instead of making one.
Config = make_dataclass("Config", [s.name for s in SETTINGS] + ["mode", ("standin", object, None)],
                        bases=(_Config,), frozen=True)


def _coerce(setting, raw):
    kind = type(setting.default)
    if kind is str:
        return str(raw).strip()
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{setting.env}: must be a {'whole ' if kind is int else ''}number, got {raw!r}") from None
    low, high = _LIMITS.get(setting.name, (0, 300))
    if not low <= value <= high or (value == 0 and setting.name == "stripe_timeout"):
        raise ConfigError(f"{setting.env}: must be from {low} to {high}, got {raw!r}")
    return value


def key_mode(key):
    """Which mode a Stripe secret key selects: offline (none), test or live."""
    if not key:
        return "offline"
    for prefix, mode in (("sk_test_", "test"), ("rk_test_", "test"), ("sk_live_", "live"), ("rk_live_", "live")):
        if key.startswith(prefix):
            return mode
    raise ConfigError("STRIPE_SECRET_KEY: must start with sk_test_, rk_test_, sk_live_ or rk_live_ "
                      "(a publishable pk_ key will not work)")


def origin(url, name):
    """An http(s) origin as a browser writes it (lowercase host, no default port), or ConfigError naming `name`."""
    parts = urlsplit(url.rstrip("/"))
    try:
        port = parts.port
    except ValueError:
        port = -1
    host = parts.hostname or ""
    if (parts.scheme not in ("http", "https") or not host or parts.path or parts.query or parts.fragment
            or parts.username is not None or port == -1 or not all(c.isalnum() or c in ".-:[]" for c in host)):
        raise ConfigError(f"{name}: must be an origin like https://shop.example.com (no path), got {url!r}")
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    return urlunsplit((parts.scheme, host if port in (None, default) else f"{host}:{port}", "", "", ""))


def load_config(overrides=None, environ=None):
    """Every setting from overrides, then the environment, then its default; validated."""
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    values = {}
    for s in SETTINGS:
        raw = overrides.pop(s.name) if s.name in overrides else (environ.get(s.env) or s.default)
        values[s.name] = _coerce(s, raw)
    standin = overrides.pop("standin", None)
    if overrides:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(overrides))}")
    mode = key_mode(values["stripe_secret_key"])
    if not values["base_url"]:
        host = values["host"] if values["host"] not in ("0.0.0.0", "::", "") else "127.0.0.1"
        values["base_url"] = f"http://{host}:{values['port']}"
    values["base_url"] = origin(values["base_url"], "BASE_URL")
    secret = values["stripe_webhook_secret"]
    if mode == "live" and not values["base_url"].startswith("https://"):
        raise ConfigError("BASE_URL: live mode needs an https:// URL (Stripe redirects shoppers there)")
    if mode == "live" and not secret:
        raise ConfigError("STRIPE_WEBHOOK_SECRET: live mode needs the webhook signing secret (whsec_...)")
    if secret and not secret.startswith("whsec_"):
        raise ConfigError("STRIPE_WEBHOOK_SECRET: must start with whsec_")
    if values["stripe_api_base"]:
        values["stripe_api_base"] = origin(values["stripe_api_base"], "STRIPE_API_BASE")
        if mode == "offline":
            raise ConfigError("STRIPE_API_BASE: needs a STRIPE_SECRET_KEY too "
                              "(any sk_test_ key works against stripe-mock or `python -m standin`)")
    if values["database_url"] and urlsplit(values["database_url"]).scheme not in ("postgresql", "postgres"):
        raise ConfigError("DATABASE_URL: must be empty (SQLite) or a postgresql:// URL")
    if mode == "live" and values["admin_password"] and len(values["admin_password"]) < 12:
        raise ConfigError("ADMIN_PASSWORD: live mode needs at least 12 characters (or none: no /admin)")
    smtp = urlsplit(values["smtp_url"])  # never echoed: it may hold a password
    try:
        smtp.port  # raises on a port that is not a number up to 65535
    except ValueError:
        smtp = smtp._replace(scheme="")
    if values["smtp_url"] and (smtp.scheme not in ("smtp", "smtps") or not smtp.hostname):
        raise ConfigError("SMTP_URL: must be empty or like smtp://user:pass@host:587 or smtps://host:465")
    host = "shop@" + urlsplit(values["base_url"]).hostname
    values["mail_from"] = values["mail_from"] or (host if EMAIL.fullmatch(host) else "shop@localhost")
    for name in ("merchant_email", "mail_from"):
        if values[name] and not EMAIL.fullmatch(values[name]):
            raise ConfigError(f"{name.upper()}: must be a plain address like orders@example.com")
    values["catalog"] = (ROOT / values["catalog"]).resolve()
    values["data_dir"] = (ROOT / values["data_dir"]).resolve()
    return Config(mode=mode, standin=standin, **values)
