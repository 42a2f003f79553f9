"""The shop's configuration as data: one table of settings, read from the environment and `.env`."""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent


class ShopError(Exception):
    """An error with an HTTP status and a message that is safe to show a shopper."""

    def __init__(self, status, message, detail=None):
        super().__init__(message)
        self.status = status
        self.message = message
        # `detail` is for logs only (never rendered): it may name internals.
        self.detail = detail


class ConfigError(ShopError):
    """Configuration that the shop cannot start with; the message names the variable."""

    def __init__(self, message):
        super().__init__(500, message)


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: object
    help: str
    secret: bool = False


# One row per setting: the README's configuration table and `.env.sample` follow this list.
SETTINGS = (
    Setting("stripe_secret_key", "STRIPE_SECRET_KEY", "",
            "Stripe secret key. Empty: offline test mode against the built-in stand-in. "
            "sk_test_/rk_test_: Stripe test mode. sk_live_/rk_live_: live mode.", secret=True),
    Setting("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET", "",
            "Signing secret (whsec_...) of the webhook endpoint; required outside offline mode.",
            secret=True),
    Setting("base_url", "BASE_URL", "",
            "Public URL of the shop, used for Stripe redirects and image URLs "
            "(default http://HOST:PORT). Never taken from the request's Host header."),
    Setting("host", "HOST", "127.0.0.1", "Interface the server listens on."),
    Setting("port", "PORT", 8000, "Port the server listens on."),
    Setting("catalog", "CATALOG", "catalog.json", "Path of the catalog file (relative to the shop)."),
    Setting("catalog_check_seconds", "CATALOG_CHECK_SECONDS", 1.0,
            "How often, at most, the running shop looks at the catalog file for edits (0: on every request)."),
    Setting("data_dir", "DATA_DIR", "data",
            "Folder for the order ledger and the offline stand-in's state (relative to the shop)."),
    Setting("stripe_api_base", "STRIPE_API_BASE", "",
            "Send Stripe API calls to another Stripe-compatible server (e.g. stripe-mock or "
            "`python -m standin`) instead of api.stripe.com."),
    Setting("stripe_timeout", "STRIPE_TIMEOUT", 10.0, "Seconds before a Stripe API call gives up."),
    Setting("stripe_max_retries", "STRIPE_MAX_RETRIES", 2,
            "Automatic retries of a failed Stripe call (same idempotency key)."),
    Setting("workers", "WORKERS", 1, "Server processes sharing the listening socket."),
    Setting("threads", "THREADS", 8, "Request threads per server process."),
    Setting("pin_cpus", "PIN_CPUS", "auto",
            "auto: each server process runs on one CPU of its own (when there are at least as many CPUs as "
            "workers and no cgroup CPU quota), so its threads pass the GIL on one core, under SCHED_BATCH so "
            "that they do not preempt each other; off: the kernel places them."),
)

MODES = ("offline", "test", "live")


@dataclass(frozen=True)
class Config:
    stripe_secret_key: str
    stripe_webhook_secret: str
    base_url: str
    host: str
    port: int
    catalog: Path
    catalog_check_seconds: float
    data_dir: Path
    stripe_api_base: str
    stripe_timeout: float
    stripe_max_retries: int
    workers: int
    threads: int
    pin_cpus: str
    mode: str
    # Test-only hooks, never from the environment.
    standin: object = None

    @property
    def secure(self):
        """True when the shop is served over https (cookies get Secure, HSTS is sent)."""
        return self.base_url.startswith("https://")

    def public(self):
        """The configuration with secrets masked, for `shop.py check` and logs."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            if s.secret and value:
                value = value[:8] + "…" if not s.name.endswith("webhook_secret") else "set"
            out[s.env] = str(value)
        return out


def _coerce(setting, raw):
    kind = type(setting.default)
    if kind is int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{setting.env}: must be a whole number, got {raw!r}") from None
        low = 0 if setting.name == "stripe_max_retries" else 1  # 0 retries is a valid choice: fail fast
        if value < low or (setting.name == "port" and value > 65535):
            raise ConfigError(f"{setting.env}: out of range, got {raw!r}")
        return value
    if kind is float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{setting.env}: must be a number of seconds, got {raw!r}") from None
        if not 0 <= value <= 300 or (value == 0 and setting.name == "stripe_timeout"):
            raise ConfigError(f"{setting.env}: must be between 0 and 300 seconds, got {raw!r}")
        return value
    return str(raw).strip()


def key_mode(key):
    """Which mode a Stripe secret key selects: offline (none), test or live."""
    if not key:
        return "offline"
    if key.startswith(("sk_test_", "rk_test_")):
        return "test"
    if key.startswith(("sk_live_", "rk_live_")):
        return "live"
    raise ConfigError("STRIPE_SECRET_KEY: must start with sk_test_, rk_test_, sk_live_ or rk_live_ "
                      "(a publishable pk_ key will not work)")


def load_config(overrides=None, environ=None):
    """Read every setting from overrides, then the environment, then its default; validate."""
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    values = {}
    for s in SETTINGS:
        if s.name in overrides:
            raw = overrides.pop(s.name)
        else:
            raw = environ.get(s.env, "")
            if raw == "":
                raw = s.default
        values[s.name] = _coerce(s, raw)
    standin = overrides.pop("standin", None)
    if overrides:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(overrides))}")

    values["pin_cpus"] = values["pin_cpus"].lower()
    if values["pin_cpus"] not in ("auto", "off"):
        raise ConfigError(f"PIN_CPUS: must be auto or off, got {values['pin_cpus']!r}")
    mode = key_mode(values["stripe_secret_key"])
    if not values["base_url"]:
        host = values["host"] if values["host"] not in ("0.0.0.0", "::", "") else "127.0.0.1"
        values["base_url"] = f"http://{host}:{values['port']}"
    base = values["base_url"].rstrip("/")
    parts = urlsplit(base)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or parts.username is not None or port == -1):
        raise ConfigError(f"BASE_URL: must be an absolute http(s) URL like https://shop.example.com, got {base!r}")
    # As browsers write an origin (lowercase host, no default port), so the CSRF check's Origin comparison holds
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    values["base_url"] = urlunsplit((parts.scheme, host if port in (None, default) else f"{host}:{port}",
                                     parts.path, "", ""))
    if mode == "live":
        if parts.scheme != "https":
            raise ConfigError("BASE_URL: live mode needs an https:// URL (Stripe redirects shoppers there)")
        if not values["stripe_webhook_secret"]:
            raise ConfigError("STRIPE_WEBHOOK_SECRET: live mode needs the webhook signing secret (whsec_...)")
    if values["stripe_webhook_secret"] and not values["stripe_webhook_secret"].startswith("whsec_"):
        raise ConfigError("STRIPE_WEBHOOK_SECRET: must start with whsec_")
    if values["stripe_api_base"]:
        api = urlsplit(values["stripe_api_base"])
        if api.scheme not in ("http", "https") or not api.netloc:
            raise ConfigError("STRIPE_API_BASE: must be an absolute http(s) URL like http://127.0.0.1:12111")
        values["stripe_api_base"] = values["stripe_api_base"].rstrip("/")
        if mode == "offline":
            raise ConfigError("STRIPE_API_BASE: needs a STRIPE_SECRET_KEY too "
                              "(any sk_test_ key works against stripe-mock or `python -m standin`)")
    values["catalog"] = (ROOT / values["catalog"]).resolve()
    values["data_dir"] = (ROOT / values["data_dir"]).resolve()
    return Config(mode=mode, standin=standin, **values)
