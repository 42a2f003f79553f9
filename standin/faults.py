"""Fault injection for resilience tests: errors, dropped connections and slow responses on chosen endpoints.

Kinds (endpoint = a template from `StandIn.calls`, e.g. "POST /v1/checkout/sessions", or "*" for any):
- "400": 400 invalid_request_error before the request runs: Stripe refuses it (the SDK does not retry).
- "500": 500 api_error before the request runs (the SDK retries it).
- "429": 429 rate_limit (the SDK does not retry; https://docs.stripe.com/rate-limits).
- "lock_timeout": 429 lock_timeout with `Stripe-Should-Retry: true` (the SDK retries).
- "reset": the request runs and commits, then the connection drops before the response (in-process client: an
  APIConnectionError with should_retry=True; standalone server: the socket is closed).
- "delay": sleep `delay` seconds (default 30) first. The in-process client gives up at its own timeout instead,
  raising a retryable APIConnectionError while the request still completes; the standalone server just sleeps.

Env `STANDIN_FAULTS` adds rules at start-up: `;`-separated `ENDPOINT=KIND[:DELAY][*TIMES]`, e.g.
`POST /v1/checkout/sessions=500*2;GET /v1/checkout/sessions/{id}=delay:30*1` (TIMES defaults to 1).
"""
import os
import re
import threading
import time

from .errors import StripeError, api_error, invalid

KINDS = ("400", "500", "429", "lock_timeout", "reset", "delay")
_RULE = re.compile(r"^\s*(.+?)\s*=\s*(400|500|429|lock_timeout|reset|delay)(?::(\d+(?:\.\d+)?))?(?:\*(\d+))?\s*$")


class Faults:
    """A thread-safe list of pending faults, consumed as matching requests arrive."""

    def __init__(self):
        self._rules = []
        self._lock = threading.Lock()

    def add(self, endpoint, kind, times=1, delay=None):
        """Inject `kind` into the next `times` requests to `endpoint`."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._rules.append({"endpoint": endpoint, "kind": kind, "left": times,
                                "delay": 30.0 if delay is None and kind == "delay" else delay})

    def clear(self):
        """Remove every pending fault."""
        with self._lock:
            self._rules.clear()

    def pending(self):
        """[(endpoint, kind, times_left)] still to fire."""
        with self._lock:
            return [(r["endpoint"], r["kind"], r["left"]) for r in self._rules]

    def load_env(self, environ=os.environ):
        """Add the rules in STANDIN_FAULTS (see module docstring); raises ValueError on a malformed rule."""
        for part in filter(str.strip, environ.get("STANDIN_FAULTS", "").split(";")):
            m = _RULE.match(part)
            if not m:
                raise ValueError(f"STANDIN_FAULTS: cannot parse {part!r}; expected ENDPOINT=KIND[:DELAY][*TIMES]")
            endpoint, kind, delay, times = m.groups()
            try:
                self.add(endpoint, kind, int(times or 1), float(delay) if delay else None)
            except ValueError as e:  # named as the setting it came from
                raise ValueError(f"STANDIN_FAULTS: {part!r}: {e}") from None

    def take(self, template):
        """The next fault for this endpoint (consuming one use), or None."""
        with self._lock:
            for rule in self._rules:
                if rule["endpoint"] in (template, "*"):
                    rule["left"] -= 1
                    if rule["left"] <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def apply(self, template, environ):
        """Act on a fault before the request runs; marks `standin.drop` in environ when the response must be lost."""
        rule = self.take(template)
        if rule is None:
            return
        kind = rule["kind"]
        if kind == "400":
            raise invalid("The request could not be carried out (a fault the stand-in was asked for).")
        if kind == "500":
            raise api_error()
        if kind == "429":
            raise StripeError(429, "invalid_request_error", "Request rate limit exceeded. You can learn more about "
                              "rate limits here https://stripe.com/docs/rate-limits.", code="rate_limit")
        if kind == "lock_timeout":
            raise StripeError(429, "invalid_request_error", "This object cannot be accessed right now because "
                              "another API request or Stripe process is currently accessing it.",
                              code="lock_timeout", headers={"Stripe-Should-Retry": "true"})
        if kind == "reset":
            environ["standin.drop"] = "reset"
            return
        pause(rule["delay"], environ)


def pause(seconds, environ):
    """Sleep before answering. The in-process client sets `standin.timeout`: a wait that reaches it stops there and
    marks the response lost (`standin.drop`), as a socket's read timeout would; the request itself still runs."""
    timeout = environ.get("standin.timeout")
    if timeout is not None and seconds >= timeout:
        time.sleep(timeout)
        environ["standin.drop"] = "timeout"
    else:
        time.sleep(seconds)
