"""What the simulated people and Stripe do, as operations for load.run(): shoppers, returning payers, webhooks."""

import asyncio
import hashlib
import hmac
import json
import re
import time
from urllib.parse import urlencode

from load import Connection, cookie_of
from servers import WEBHOOK_SECRET

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PRODUCTS = ("pride-and-prejudice", "moby-dick", "frankenstein", "jane-eyre")


def checkout(port, stripe_port, needs_csrf, sessions=None):
    """A shopper on a new browser: GET / (the shop's sid cookie and CSRF token), then "Buy now" (POST /checkout).

    Timed: the POST, which must answer 303 to the stand-in's payment page. The session ids land in `sessions`."""
    pay_page = f"http://127.0.0.1:{stripe_port}/offline-checkout/"

    async def op(i, result):
        conn = Connection(port)
        try:
            status, headers, body = await conn.request("GET", "/")
            if status != 200:
                result.error(f"GET / {status}")
                return True
            form = {"product_id": PRODUCTS[i % len(PRODUCTS)], "quantity": "1"}
            send = dict(FORM)
            if needs_csrf:
                sid, token = cookie_of(headers, "sid"), CSRF.search(body)
                if sid is None or token is None:
                    result.error("GET / without sid cookie or csrf token")
                    return True
                form["csrf_token"] = token[1].decode()
                send["Cookie"] = f"sid={sid}"
            start = time.monotonic()
            status, headers, _ = await conn.request("POST", "/checkout", send, urlencode(form).encode())
            location = (headers.get("location") or [""])[0]
            if status == 303 and location.startswith(pay_page):
                result.ok(time.monotonic() - start)
                if sessions is not None:
                    sessions.append(location[len(pay_page):])
            else:
                result.error(f"POST /checkout {status}")
        finally:
            conn.close()
        return True
    return op


def pay_token(session_id):
    """The stand-in's pay-page form token (HMAC of its webhook secret, which the bench sets)."""
    return hmac.new(WEBHOOK_SECRET.encode(), f"pay:{session_id}".encode(), hashlib.sha256).hexdigest()[:32]


def payer(stripe_port, sessions, paid):
    """Pay sessions, in the order given, on the stand-in's payment page with the 4242 card, as a browser would."""
    pending = list(reversed(sessions))
    conns = {}

    async def op(i, result):
        if not pending:
            return False
        session_id = pending.pop()
        form = {"email": "reader@example.com", "name": "Ada Reader", "phone": "+1 555 010 0000",
                "address_line1": "1 Test Street", "address_city": "Testville", "address_postal_code": "12345",
                "address_country": "US", "shipping_option": "0", "card_number": "4242424242424242",
                "card_expiry": "12/34", "card_cvc": "123", "cardholder_name": "Ada Reader",
                "pay_token": pay_token(session_id)}
        conn = conns.setdefault(i, Connection(stripe_port))
        start = time.monotonic()
        status, _, _ = await conn.request("POST", f"/offline-checkout/{session_id}", FORM, urlencode(form).encode())
        if status == 303:
            result.ok(time.monotonic() - start)
            paid.append(session_id)
        else:
            result.error(f"pay {status}")
        return True
    return op


def viewer(port, sessions, expect):
    """A shopper back from Stripe: GET /success?session_id=... once for each paid session (its first view).

    The page must be 200 and say `expect` (the paid confirmation)."""
    pending = list(sessions)

    async def op(i, result):
        if not pending:
            return False
        conn = Connection(port)
        try:
            start = time.monotonic()
            status, _, body = await conn.request("GET", f"/success?session_id={pending.pop()}")
            if status == 200 and expect in body:
                result.ok(time.monotonic() - start)
            elif status == 200:
                result.error("GET /success 200 without the paid confirmation")
            else:
                result.error(f"GET /success {status}")
        finally:
            conn.close()
        return True
    return op


def sign(payload, secret=WEBHOOK_SECRET, at=None):
    """A Stripe-Signature header for payload: https://docs.stripe.com/webhooks#verify-manually."""
    at = int(at or time.time())
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def deliverer(ports, events, answers=None):
    """Stripe delivering events: one POST /webhook each, signed at send time, on a keep-alive connection per
    sender; sender i posts to ports[i mod n] (with two instances, a duplicate may reach either).

    `answers` collects (event, status) so that the caller can check what was acknowledged."""
    ports = [ports] if isinstance(ports, int) else list(ports)
    pending = list(reversed(events))
    conns = {}

    async def op(i, result):
        if not pending:
            return False
        event = pending.pop()
        payload = event if isinstance(event, bytes) else json.dumps(event, separators=(",", ":")).encode()
        conn = conns.setdefault(i, Connection(ports[i % len(ports)]))
        headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(payload),
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
        start = time.monotonic()
        status, _, _ = await conn.request("POST", "/webhook", headers, payload)
        if answers is not None:
            answers.append((event, status))
        if 200 <= status < 300:
            result.ok(time.monotonic() - start)
        else:
            result.error(f"POST /webhook {status}")
        return True
    return op


def getter(port, path="/", cookie=None):
    """A returning browser reloading one page on its keep-alive connection."""
    conns = {}
    headers = {"Cookie": cookie} if cookie else {}

    async def op(i, result):
        conn = conns.setdefault(i, Connection(port))
        start = time.monotonic()
        status, _, _ = await conn.request("GET", path, headers)
        if status == 200:
            result.ok(time.monotonic() - start)
        else:
            result.error(f"GET {path} {status}")
        return True
    return op


async def completed_events(stripe_port, session_ids):
    """The checkout.session.completed events the stand-in holds for these sessions (GET /v1/events, 100 a page)."""
    from servers import STRIPE_KEY
    wanted, found, after = set(session_ids), {}, None
    conn = Connection(stripe_port)
    auth = {"Authorization": f"Bearer {STRIPE_KEY}"}
    while len(found) < len(wanted):
        query = {"type": "checkout.session.completed", "limit": "100"}
        if after:
            query["starting_after"] = after
        status, _, body = await conn.request("GET", "/v1/events?" + urlencode(query), auth)
        if status != 200:
            raise RuntimeError(f"GET /v1/events answered {status}: {body[:300]!r}")
        page = json.loads(body)
        for event in page["data"]:
            if event["data"]["object"]["id"] in wanted:
                found[event["data"]["object"]["id"]] = event
        if not page["has_more"] or not page["data"]:
            break
        after = page["data"][-1]["id"]
    conn.close()
    return [found[s] for s in session_ids if s in found]


async def calls(stripe_port):
    """The stand-in's call counter ({"POST /v1/checkout/sessions": n, ...})."""
    conn = Connection(stripe_port)
    status, _, body = await conn.request("GET", "/_bench/calls")
    conn.close()
    return json.loads(body)


async def slow_clients(port, slow=300, normal=20, hold=1.0):
    """`slow` connections each send half a request line and stay; then `normal` new connections GET / at once.

    Returns (slow connections the server held, the slowest normal answer in seconds, normal answers that were 200)."""
    loop = asyncio.get_running_loop()
    held = []
    for _ in range(slow):
        try:
            transport, _ = await asyncio.wait_for(loop.create_connection(asyncio.Protocol, "127.0.0.1", port), 5)
            transport.write(b"GET /ind")
            held.append(transport)
        except (OSError, asyncio.TimeoutError):
            break
    await asyncio.sleep(hold)
    held_open = sum(1 for t in held if not t.is_closing())

    async def one():
        conn = Connection(port)
        start = time.monotonic()
        try:
            status, _, _ = await conn.request("GET", "/", timeout=10)
        except Exception:  # noqa: BLE001 — a failure to answer is the finding
            status = None
        conn.close()
        return status, time.monotonic() - start

    answers = await asyncio.gather(*(one() for _ in range(normal)))
    for transport in held:
        transport.close()
    return held_open, max(t for _, t in answers), sum(1 for s, _ in answers if s == 200)
