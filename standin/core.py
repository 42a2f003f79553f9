"""The StandIn object: state in a data_dir, the WSGI API, the in-process SDK client, payments and webhooks."""
import logging
import os
import re
import threading
import time
from collections import Counter

import stripe

from . import checkout, events, payments, promotions
from . import objects as o
from .api import ApiApp
from .client import InProcessClient
from .errors import StripeError
from .faults import Faults
from .payments import PayError
from .store import Store

log = logging.getLogger("standin")
# The most latency_ms takes: a minute, within the SDK's default 80 s timeout
MAX_LATENCY_MS = 60_000


def parse_latency(value, name="latency_ms"):
    """Whole milliseconds from 0 to MAX_LATENCY_MS, given as an int or as its digits in text; ValueError otherwise."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        ms = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        ms = None
    if ms is None or not 0 <= ms <= MAX_LATENCY_MS:
        raise ValueError(f"{name} must be a whole number of milliseconds from 0 to {MAX_LATENCY_MS}, not {value!r}")
    return ms


class Ctx:
    """What a handler needs inside one transaction: the store, the time, config, and how to emit events."""

    def __init__(self, standin, tx, request=None):
        self.tx, self.now = tx, int(time.time())
        self.public_url, self.api_version = standin.public_url, standin.api_version
        self.webhook_url, self.async_delay = standin.webhook_url, standin.async_delay
        self.enabled_events = standin.enabled_events
        self.request = request or {"id": None, "idempotency_key": None}

    def emit(self, type_, obj, previous_attributes=None):
        return events.emit(self, type_, obj, previous_attributes)


class StandIn:
    """An offline imitation of the Stripe API parts the shop uses, persisted in `<data_dir>/standin.sqlite3`."""

    def __init__(self, data_dir, public_url="http://127.0.0.1:8000", *, webhook_url=None, webhook_secret=None,
                 async_delay=5.0, load_env_faults=True, business_name="Test shop", enabled_events=None,
                 latency_ms=None):
        # Checked first, so that a bad value is refused before anything is opened
        if latency_ms is None:
            self.latency_ms = parse_latency(os.environ.get("STANDIN_LATENCY_MS", "").strip() or 0,
                                            "STANDIN_LATENCY_MS")
        else:
            self.latency_ms = latency_ms
        self.data_dir = os.path.abspath(data_dir)
        self.public_url = public_url.rstrip("/")
        self.business_name = business_name
        self.api_version = stripe.api_version
        self.store = Store(self.data_dir)
        self.calls = Counter()
        self._calls_lock = threading.Lock()
        self.faults = Faults()
        if load_env_faults:
            self.faults.load_env()
        self.webhook_url = webhook_url
        # What the webhook endpoint is subscribed to, as in the Dashboard (None: every event); every event is
        # still kept and listed at /v1/events: https://docs.stripe.com/webhooks#events-overview
        self.enabled_events = None if enabled_events is None else frozenset(enabled_events)
        self.webhook_secret = events.load_secret(self.data_dir, webhook_secret)
        self.deliver = events.http_post
        self.hold_webhooks = False
        self.webhook_max_attempts = events.MAX_ATTEMPTS
        self.webhook_retry_base = 1.0
        self.async_delay = async_delay
        self.outbox = events.Outbox(self)
        self.wsgi_api = ApiApp(self)
        self._sender = None
        self._stop = threading.Event()

    @property
    def latency_ms(self):
        """Milliseconds every API request waits before it is handled (0: none); may be changed while serving."""
        return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value):
        self._latency_ms = parse_latency(value)

    def count(self, template):
        """Record one served request for `calls`."""
        with self._calls_lock:
            self.calls[template] += 1

    def context(self, tx, request=None):
        return Ctx(self, tx, request)

    def http_client(self, timeout=80.0):
        """A stripe.HTTPClient that serves SDK requests from this stand-in in-process."""
        return InProcessClient(self.wsgi_api, timeout)

    def get(self, object_id):
        """Any stored object as the API would show it (None if unknown); handy in tests."""
        with self.store.tx() as tx:
            obj = tx.get(object_id)
        return o.public(obj) if obj else None

    # -- payments -------------------------------------------------------------------------------------------------
    def pay(self, session_id, card="4242424242424242", email="jenny.rosen@example.com", name="Jenny Rosen",
            address=None, shipping_option_index=0, phone=None, expiry="12/34", cvc="123", cardholder=None,
            promotion_code=None, accept_terms=True, tax_id=None, authentication="complete"):
        """Pay a session as the hosted page would; returns the session, raises PayError (400/402/404/409/410).

        `promotion_code` is typed into the code field (sessions with allow_promotion_codes), `accept_terms` ticks
        the terms of service box (sessions with consent_collection[terms_of_service]=required), `tax_id` is a
        (type, value) pair such as ("eu_vat", "DE123456789") (sessions with tax_id_collection[enabled]).
        `authentication` is the answer on the test 3D Secure page for the cards that ask for it: "complete" pays,
        "fail" raises PayError(402) with Stripe's message and leaves the session open."""
        if authentication not in ("complete", "fail"):
            raise ValueError(f'authentication must be "complete" or "fail", not {authentication!r}')
        session = self.peek_session(session_id)
        if session is None:
            raise PayError(404, "No such checkout session.")
        allowed = (session["shipping_address_collection"] or {}).get("allowed_countries") or ["US"]
        address = address or {"line1": "1 Test Street", "city": "Testville", "postal_code": "12345",
                              "country": allowed[0]}
        if phone is None and session["phone_number_collection"]["enabled"]:
            phone = "+1 555 010 0000"
        tax_type, tax_value = tax_id or ("", "")
        form = {"email": email, "name": name, "address": address, "shipping_option_index": str(shipping_option_index),
                "phone": phone, "card": card, "expiry": expiry, "cvc": cvc, "cardholder": cardholder,
                "promotion_code": promotion_code or "", "terms": "accepted" if accept_terms else "",
                "tax_id_type": tax_type, "tax_id_value": tax_value, "authentication": authentication}
        session, result, err = self.submit_payment(session_id, form)
        if err:
            raise err
        return session

    def peek_session(self, session_id):
        """The stored session (expired lazily first), or None."""
        self.sweep()
        with self.store.tx() as tx:
            return tx.get(session_id, "checkout.session")

    def submit_payment(self, session_id, form):
        """Validate and attempt a payment in one transaction: (session, "paid"|"processing"|"declined", PayError|None)."""
        self.sweep()
        with self.store.tx(write=True) as tx:
            session = tx.get(session_id, "checkout.session")
            if session is None:
                raise PayError(404, "No such checkout session.")
            if session["status"] != "open":
                raise PayError(410 if session["status"] == "expired" else 409,
                               f"This checkout session is {session['status']}.")
            cleaned = payments.validate(session, form)
            ctx = self.context(tx)
            if cleaned["promotion_code"]:
                cleaned["discount"] = promotions.resolve(tx, session, cleaned["promotion_code"], ctx.now)
            result, err = payments.attempt(ctx, session, cleaned)
            if cleaned.get("discount") and result != "declined":  # a completed session redeems its code
                promotions.redeem(ctx, cleaned["discount"])
        return o.public(session), result, err

    def check_promotion_code(self, session, code):
        """(discount, None) for a code the session can use now, else (None, why not); for the page's preview."""
        with self.store.tx() as tx:
            try:
                return promotions.resolve(tx, session, code, time.time()), None
            except PayError as e:
                return None, e.message

    def settle_async(self, session_id=None):
        """Settle delayed payments now (one session or all); returns how many settled."""
        with self.store.tx(write=True) as tx:
            ctx = self.context(tx)
            if session_id:
                ids = [session_id]
            else:
                ids = [r[0] for r in tx.conn.execute(
                    "SELECT id FROM objects WHERE type = 'checkout.session' AND due_at IS NOT NULL "
                    "AND json_extract(data, '$.status') = 'complete'")]
            done = 0
            for sid in ids:
                session = tx.get(sid, "checkout.session")
                if session and session.get("_settle_at"):
                    payments.settle(ctx, session)
                    done += 1
        return done

    def open_dispute(self, charge_id, inquiry=False):
        """Dispute a paid charge (or inquire: `inquiry`), as a cardholder may weeks later; emits
        charge.dispute.created, returns the dispute."""
        with self.store.tx(write=True) as tx:
            charge = tx.get(charge_id, "charge")
            if charge is None or charge["status"] != "succeeded" or charge["disputed"]:
                raise ValueError(f"Charge {charge_id} cannot be disputed: no such paid, undisputed charge.")
            return o.public(payments.open_dispute(self.context(tx), charge, inquiry))

    def close_dispute(self, dispute_id, won=True):
        """Close a dispute as won or lost (an inquiry: warning_closed); emits charge.dispute.closed and returns the
        dispute (ValueError if it can't)."""
        try:
            with self.store.tx(write=True) as tx:
                return o.public(payments.close_dispute(self.context(tx), dispute_id, won))
        except StripeError as e:
            raise ValueError(e.message) from None

    def fail_refund(self, refund_id):
        """Fail a succeeded refund, as a card's bank may days later; emits refund.failed and returns the refund."""
        try:
            with self.store.tx(write=True) as tx:
                return o.public(payments.fail_refund(self.context(tx), refund_id))
        except StripeError as e:
            raise ValueError(e.message) from None

    def sweep(self, now=None):
        """Expire lapsed open sessions, settle due delayed payments, turn promotion codes past their expires_at
        inactive and coupons past their redeem_by invalid; returns how many were handled."""
        now = time.time() if now is None else now
        with self.store.tx() as tx:
            if not tx.due(now):
                return 0
        handled = 0
        with self.store.tx(write=True) as tx:
            ctx = self.context(tx)
            for sid in tx.due(now):
                session = tx.get(sid)
                if session["object"] != "checkout.session":
                    handled += promotions.lapse(ctx, session, now)
                    continue
                if session["status"] == "open" and session["expires_at"] <= now:
                    checkout.expire(ctx, session)
                elif session.get("_settle_at") and session["_settle_at"] <= now:
                    payments.settle(ctx, session)
                else:
                    continue
                handled += 1
        return handled

    # -- webhooks -------------------------------------------------------------------------------------------------
    def deliver_pending(self, reverse=False, duplicate=False):
        """Deliver every due event once, synchronously; returns [(event_id, http_status)]."""
        return self.outbox.deliver_pending(reverse=reverse, duplicate=duplicate)

    def pending_events(self):
        """Events queued for delivery and not yet delivered, oldest first (full event objects)."""
        ids = [r["event_id"] for r in self.outbox.rows("pending")]
        return [self.get(i) for i in ids]

    def webhook_log(self):
        """Every outbox row (event_id, type, state, attempts, last_status, next_attempt)."""
        return self.outbox.rows()

    def drop_pending_events(self):
        """Never deliver the currently pending events; returns their ids."""
        return self.outbox.drop_pending()

    def redeliver(self, event_id):
        """Send an event once more (a duplicate); returns the endpoint's status."""
        return self.outbox.redeliver(event_id)

    def start_webhook_sender(self, interval=0.5):
        """Start a daemon thread that sweeps expiry/settlement and delivers due events every `interval` seconds."""
        if self._sender and self._sender.is_alive():
            return
        self._stop.clear()

        def run():
            while True:
                try:
                    self.sweep()
                    self.deliver_pending()
                except Exception:
                    log.exception("stand-in background sender iteration failed")
                if self._stop.wait(interval):
                    return
        self._sender = threading.Thread(target=run, name="standin-webhooks", daemon=True)
        self._sender.start()

    def stop_webhook_sender(self, timeout=15):
        """Stop the sender thread and wait for it."""
        self._stop.set()
        if self._sender:
            self._sender.join(timeout)
            self._sender = None

    def install_pay_page(self, app):
        """Add GET/POST /offline-checkout/<session_id> (the hosted-style payment page) to a Bottle app, and
        GET /offline-checkout/static/standin.css (its stylesheet; the page needs nothing from the app's /static)."""
        from .page import install
        install(self, app)
        return app

    def close(self):
        """Stop background work and close database connections."""
        self.stop_webhook_sender()
        self.store.close()
