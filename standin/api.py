"""The stand-in's Stripe HTTP API as a plain WSGI app: routing, auth, idempotency, faults, JSON and errors."""
import base64
import hashlib
import json
import logging
import re
import threading
import time

from . import checkout, payments, promotions, schemas
from . import objects as o
from .errors import StripeError, api_error, invalid, no_such
from .faults import pause
from .forms import MAX_BODY, clean, decode_body, parse_form

log = logging.getLogger("standin.api")
_STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 402: "402 Payment Required",
           404: "404 Not Found", 409: "409 Conflict", 429: "429 Too Many Requests", 500: "500 Internal Server Error"}
_VERSION = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(\.[a-z]+)?(; *[a-z_]+=v[0-9]+)*$")


class ApiApp:
    """WSGI callable for /v1/*; `standin` supplies the store, context, counters and faults."""

    def __init__(self, standin):
        self.s = standin
        self.routes = []
        self.running, self._lock = set(), threading.Lock()  # idempotency keys of the requests under way
        for method, template, handler, schema in (
            ("POST", "/v1/checkout/sessions", self.create_session, schemas.SESSION_CREATE),
            ("GET", "/v1/checkout/sessions", self.list_sessions, schemas.SESSION_LIST),
            ("GET", "/v1/checkout/sessions/{id}", self.get_session, schemas.RETRIEVE),
            ("GET", "/v1/checkout/sessions/{id}/line_items", self.session_line_items, schemas.LINE_ITEMS_LIST),
            ("POST", "/v1/checkout/sessions/{id}/expire", self.expire_session, schemas.EXPIRE),
            ("GET", "/v1/payment_intents/{id}", self.retriever("payment_intent"), schemas.RETRIEVE),
            ("GET", "/v1/charges/{id}", self.retriever("charge"), schemas.RETRIEVE),
            ("GET", "/v1/charges/{id}/refunds", self.charge_refunds, schemas.CHARGE_REFUNDS_LIST),
            ("POST", "/v1/refunds", self.create_refund, schemas.REFUND_CREATE),
            ("GET", "/v1/refunds", self.list_refunds, schemas.REFUND_LIST),
            ("GET", "/v1/refunds/{id}", self.retriever("refund"), schemas.RETRIEVE),
            ("GET", "/v1/events", self.list_events, schemas.EVENT_LIST),
            ("GET", "/v1/events/{id}", self.retriever("event"), schemas.RETRIEVE),
            ("GET", "/v1/shipping_rates/{id}", self.retriever("shipping_rate"), schemas.RETRIEVE),
            ("GET", "/v1/disputes", self.list_disputes, schemas.DISPUTE_LIST),
            ("GET", "/v1/disputes/{id}", self.retriever("dispute"), schemas.RETRIEVE),
            ("POST", "/v1/coupons", self.create_coupon, schemas.COUPON_CREATE),
            ("GET", "/v1/coupons/{id}", self.retriever("coupon"), schemas.RETRIEVE),
            ("POST", "/v1/promotion_codes", self.create_promotion_code, schemas.PROMOTION_CODE_CREATE),
            ("GET", "/v1/promotion_codes", self.list_promotion_codes, schemas.PROMOTION_CODE_LIST),
            ("GET", "/v1/promotion_codes/{id}", self.retriever("promotion_code"), schemas.RETRIEVE),
            ("POST", "/v1/promotion_codes/{id}", self.update_promotion_code, schemas.PROMOTION_CODE_UPDATE),
        ):
            # "search" is a route of its own at Stripe (not served here), never an id
            pattern = re.compile("^" + re.escape(template).replace(r"\{id\}", "(?!search$)([^/]+)") + "$")
            self.routes.append((method, template, pattern, handler, schema))

    def __call__(self, environ, start_response):
        status, body, headers = self.handle(environ)
        # Pretty like Stripe's own answers over HTTP; compact for the in-process client, where nobody reads the
        # text and json's indenting (pure-Python) encoder was a quarter of the CPU time of a shop webhook.
        data = (json.dumps(body, separators=(",", ":")) if environ.get("standin.in_process")
                else json.dumps(body, indent=2)).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-cache, no-store")] + list(headers.items())
        start_response(_STATUS.get(status, f"{status} Error"), headers)
        return [data]

    def handle(self, environ):
        """(status, body, headers) for one request; never raises."""
        request_id = o.new_id("req_", 14)
        headers = {"Request-Id": request_id}
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        key = environ.get("HTTP_IDEMPOTENCY_KEY") if method == "POST" else None
        with self._lock:  # from its arrival, latency included, as a request is under way at Stripe
            mine = key is not None and key not in self.running
            if mine:
                self.running.add(key)
        try:
            latency = self.s.latency_ms  # before any lock or transaction, so that concurrent calls wait side by side
            if latency:
                pause(latency / 1000, environ)
            route, ids = self.match(method, path)
            template = f"{method} {route[1]}"
            self.s.count(template)
            self.s.faults.apply(template, environ)
            self.authenticate(environ)
            version = environ.get("HTTP_STRIPE_VERSION")
            # A version from after the stand-in's own (the SDK's) does not exist yet; older ones get today's shapes
            if version is not None and (not _VERSION.match(version) or version[:10] > self.s.api_version[:10]):
                raise invalid(f"Invalid Stripe API version: {version}", "stripe_version")
            headers["Stripe-Version"] = version or self.s.api_version
            if method == "POST":
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                except ValueError:
                    raise invalid("Invalid Content-Length header.") from None
                raw = environ["wsgi.input"].read(min(length, MAX_BODY + 1))  # never more than the limit into memory
                if environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower() == "application/json":
                    raise invalid("Invalid request (check that your POST content type is "
                                  "application/x-www-form-urlencoded). If you have any questions, we can help at "
                                  "https://support.stripe.com/.")
                params = parse_form(decode_body(raw))
            else:
                params = parse_form(environ.get("QUERY_STRING", ""))
            params = clean(route[4], params)
            if key is not None:
                headers["Idempotency-Key"] = key
            if key is not None and not mine:  # the SDK retries a 409 after a pause
                raise StripeError(409, "idempotency_error", "There is currently another in-progress request using "
                                  "this Idempotent Key (that probably means you submitted twice, and the other "
                                  f"request is still going through): {key}. Please try again later.")
            status, body, replayed = self.execute(route, f"{method} {path}", ids, params, key, request_id)
            if replayed:
                headers["Idempotent-Replayed"] = "true"
            return status, body, headers
        except StripeError as e:
            headers.update(e.headers)
            return e.status, e.body(), headers
        except Exception:
            log.exception("stand-in API error on %s %s (%s)", method, path, request_id)
            return 500, api_error().body(), headers
        finally:
            if mine:
                self.running.discard(key)

    def match(self, method, path):
        for route in self.routes:
            m = route[2].match(path)
            if m and route[0] == method:
                return route, m.groups()
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}). Please see "
                          "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def authenticate(self, environ):
        """Bearer (or Basic) auth with any test-mode secret or restricted key: https://docs.stripe.com/keys."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        key = ""
        if auth.startswith("Bearer "):
            key = auth[7:].strip()
        elif auth.startswith("Basic "):
            try:
                key = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if not key:
            raise StripeError(401, "invalid_request_error", "You did not provide an API key. You need to provide "
                              "your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: "
                              "Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details.")
        if not re.match(r"^(sk|rk)_test_[A-Za-z0-9_]+$", key):
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "****"
            raise StripeError(401, "invalid_request_error", f"Invalid API Key provided: {masked}. The offline "
                              "stand-in accepts only test-mode keys (sk_test_... or rk_test_...).")

    def execute(self, route, endpoint, ids, params, key, request_id):
        """Run the handler in one transaction, honouring Idempotency-Key: https://docs.stripe.com/api/idempotent_requests."""
        write = route[0] == "POST"
        with self.s.store.tx(write=write) as tx:
            # Sessions whose expiry or delayed settlement is due change first, so no answer shows them stale;
            # the check shares the request's transaction (one statement when nothing is due, as is usual).
            if not tx.due(time.time()):
                return self._run(tx, route, endpoint, ids, params, key, request_id)
        self.s.sweep()
        with self.s.store.tx(write=write) as tx:
            return self._run(tx, route, endpoint, ids, params, key, request_id)

    def _run(self, tx, route, endpoint, ids, params, key, request_id):
        if key is not None:
            if len(key) > 255:
                raise invalid("Idempotency key must be at most 255 characters long.", None)
            fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
            row = tx.idem_get(key)
            if row is not None:
                # A key belongs to the request's own path (the session it expires, say), not to the route
                first, fp, status, body = row
                if first != endpoint:
                    raise StripeError(400, "idempotency_error", "Keys for idempotent requests can only be used "
                                      f"for the same endpoint they were first used for ('{first}' vs "
                                      f"'{endpoint}'). Try using a key other than '{key}' if you meant to "
                                      "execute a different request.")
                if fp != fingerprint:
                    raise StripeError(400, "idempotency_error", "Keys for idempotent requests can only be used "
                                      "with the same parameters they were first used with. Try using a key "
                                      f"other than '{key}' if you meant to execute a different request.")
                return status, json.loads(body), True
        ctx = self.s.context(tx, {"id": request_id, "idempotency_key": key})
        body = route[3](ctx, params, *ids)
        if key is not None:  # only completed requests are saved; validation errors roll back unsaved
            tx.idem_put(key, endpoint, fingerprint, 200, json.dumps(body))
        return 200, body, False

    @staticmethod
    def virtual(ctx):
        """Lists made when expanded: a session's `line_items`, a charge's `refunds` (newest first, 10)."""
        def make(obj, field):
            if field == "line_items":
                return checkout.line_items_page(obj, {})
            rows, more = ctx.tx.list("refund", 10, None, None, [("charge", obj["id"])], None)
            return o.list_object(rows, f"/v1/charges/{obj['id']}/refunds", more)
        return make

    def render(self, ctx, obj, expand):
        """Public JSON of a stored object with `expand[]` applied."""
        return o.public(o.expand(obj, expand or [], ctx.tx.get, self.virtual(ctx)))

    def retriever(self, type_):
        def retrieve(ctx, p, id_):
            obj = ctx.tx.get(id_, type_)
            if obj is None:
                raise no_such(type_, id_, PATH_PARAM.get(type_, "id"))
            return self.render(ctx, obj, p.get("expand"))
        return retrieve

    def create_session(self, ctx, p):
        return self.render(ctx, checkout.create(ctx, p), p.get("expand"))

    def get_session(self, ctx, p, sid):
        return self.render(ctx, checkout.get(ctx, sid), p.get("expand"))

    def session_line_items(self, ctx, p, sid):
        page = checkout.line_items_page(checkout.get(ctx, sid), p)
        return o.public(o.expand(page, p.get("expand") or [], ctx.tx.get, self.virtual(ctx)))

    def expire_session(self, ctx, p, sid):
        return self.render(ctx, checkout.expire(ctx, checkout.get(ctx, sid)), p.get("expand"))

    def create_refund(self, ctx, p):
        return self.render(ctx, payments.create_refund(ctx, p), p.get("expand"))

    def charge_refunds(self, ctx, p, charge_id):
        if ctx.tx.get(charge_id, "charge") is None:
            raise no_such("charge", charge_id, "charge")
        return self._list(ctx, p, "refund", f"/v1/charges/{charge_id}/refunds", [("charge", charge_id)])

    def _list(self, ctx, p, type_, url, where):
        if p.get("starting_after") and p.get("ending_before"):
            raise invalid("You may only specify one of these parameters: ending_before, starting_after.")
        rows, more = ctx.tx.list(type_, p.get("limit") or 10, p.get("starting_after"), p.get("ending_before"),
                                 where, p.get("created"))
        if rows is None:
            cursor = p.get("starting_after") or p.get("ending_before")
            raise no_such(type_, cursor, "starting_after" if p.get("starting_after") else "ending_before")
        page = o.list_object(rows, url, more)
        return o.public(o.expand(page, p.get("expand") or [], ctx.tx.get, self.virtual(ctx)))

    def list_sessions(self, ctx, p):
        where = [(k, p[k]) for k in ("status", "payment_intent", "customer", "payment_link") if p.get(k)]
        return self._list(ctx, p, "checkout.session", "/v1/checkout/sessions", where)

    def list_refunds(self, ctx, p):
        where = [(k, p[k]) for k in ("charge", "payment_intent") if p.get(k)]
        return self._list(ctx, p, "refund", "/v1/refunds", where)

    def list_disputes(self, ctx, p):
        where = [(k, p[k]) for k in ("charge", "payment_intent") if p.get(k)]
        return self._list(ctx, p, "dispute", "/v1/disputes", where)

    def create_coupon(self, ctx, p):
        return self.render(ctx, promotions.create_coupon(ctx, p), p.get("expand"))

    def create_promotion_code(self, ctx, p):
        return self.render(ctx, promotions.create_promotion_code(ctx, p), p.get("expand"))

    def update_promotion_code(self, ctx, p, promo_id):
        return self.render(ctx, promotions.update_promotion_code(ctx, p, promo_id), p.get("expand"))

    def list_promotion_codes(self, ctx, p):
        return self._list(ctx, p, "promotion_code", "/v1/promotion_codes", promotions.list_where(p))

    def list_events(self, ctx, p):
        # `type` may end in a `*` wildcard, `types` is a list of exact types: https://docs.stripe.com/api/events/list
        if p.get("type") and p.get("types"):
            raise invalid("You may only specify one of these parameters: type, types.")
        types = [p["type"]] if p.get("type") else p.get("types") or []
        where = [("type", types)] if types else []
        if "delivery_success" in p:
            where.append(("pending_webhooks", 0 if p["delivery_success"] else 1))
        return self._list(ctx, p, "event", "/v1/events", where)


# The path parameter Stripe names in a 404 for a missing object; older objects say "id"
PATH_PARAM = {"checkout.session": "session", "payment_intent": "intent"}


def now():
    return time.time()
