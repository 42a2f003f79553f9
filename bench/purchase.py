"""Figures 2, 5 and 6: POST /checkout against the in-process stand-in, API calls per purchase, webhook ingestion."""

import json
import re
import statistics
import time
from collections import Counter
from urllib.parse import urlencode, urlsplit

from load import process_cpu, run_python
from servers import fetch

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BASE = "http://127.0.0.1:8000"


def checkout_form(url, product_id, sid):
    """The headers and body of a "Buy now" POST /checkout from a returning browser."""
    _, _, html = fetch(url + "/", {"Cookie": f"sid={sid}"})
    token = _CSRF.search(html.decode())[1]
    headers = {"Cookie": f"sid={sid}", "Content-Type": "application/x-www-form-urlencoded"}
    return headers, urlencode({"csrf_token": token, "product_id": product_id, "quantity": "1"})


def checkout_load(load, shop, product_id, sid, seconds, connections=8):
    """Requests/s and latency of POST /checkout over HTTP (each one a new order and Checkout Session; from one
    browser, each also expires the session before it, as a new checkout replaces an open one)."""
    headers, body = checkout_form(shop.url, product_id, sid)
    status, hdrs, _ = fetch(shop.url + "/checkout", headers, "POST", body)
    if status != 303:
        raise RuntimeError(f"POST /checkout answered {status}, not 303")
    return load.run(shop.url + "/checkout", seconds, connections, "POST", headers, body)


def shop_in_process(data_dir, **overrides):
    """The real app on a private DATA_DIR, driven in-process through WebTest."""
    import webtest
    from shop import make_app
    app = make_app({"data_dir": str(data_dir), "base_url": BASE, **overrides})
    return webtest.TestApp(app, extra_environ={"HTTP_HOST": "127.0.0.1:8000"}), app.config["shop"]


def _session_id(location):
    return urlsplit(location).path.rsplit("/", 1)[-1]


def _share(requests, warm_up=20):
    """Run (method, args) requests in-process; the share of their time spent inside the stand-in's API."""
    from standin.client import InProcessClient
    spent = [0.0]
    original = InProcessClient.request

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    for send in requests[:warm_up]:
        send()
    InProcessClient.request = timed
    try:
        start = time.perf_counter()
        for send in requests[warm_up:]:
            send()
        total = time.perf_counter() - start
    finally:
        InProcessClient.request = original
    n = len(requests) - warm_up
    return {"share": spent[0] / total, "per_request_ms": total / n * 1000, "standin_ms": spent[0] / n * 1000}


def standin_share(data_dir, product_id, n=200):
    """Of the time POST /checkout takes in-process, the share spent inside the stand-in's API."""
    browser, shop = shop_in_process(data_dir)
    token = _CSRF.search(browser.get("/").text)[1]
    form = {"csrf_token": token, "product_id": product_id, "quantity": "1"}
    result = _share([lambda: browser.post("/checkout", form, status=303)] * (n + 20))
    shop.standin.close()
    return result


def webhook_standin_share(data_dir, product_id, n=150):
    """Of the time a checkout.session.completed webhook takes in-process, the share inside the stand-in."""
    signed, _ = prepare_paid_sessions(data_dir, product_id, n + 20)
    browser, shop = shop_in_process(data_dir)
    result = _share([lambda h=h, b=b: browser.post("/webhook", b, headers=h, status=200) for h, b in signed])
    shop.standin.close()
    return result


def api_calls_per_purchase(data_dir, product_ids):
    """Stripe API calls counted at the stand-in for one purchase: checkout, success page, and each webhook."""
    browser, shop = shop_in_process(data_dir)
    standin = shop.standin
    token = _CSRF.search(browser.get("/").text)[1]
    for pid in product_ids:
        browser.post("/cart", {"csrf_token": token, "action": "add", "product_id": pid, "quantity": "1"}, status=303)

    def counted(step):
        before = Counter(standin.calls)
        result = step()
        return result, sum((Counter(standin.calls) - before).values())

    to_stripe, checkout = counted(lambda: browser.post("/checkout", {"csrf_token": token}, status=303))
    session_id = _session_id(to_stripe.location)
    standin.pay(session_id)
    page, success = counted(lambda: browser.get(f"/success?session_id={session_id}", status=200))
    per_webhook = []

    def deliver(url, body, headers):
        before = Counter(standin.calls)
        res = browser.post(urlsplit(url).path, body, headers=headers, expect_errors=True)
        per_webhook.append((json.loads(body)["type"], sum((Counter(standin.calls) - before).values()), res.status_int))
        return res.status_int

    standin.deliver = deliver
    standin.deliver_pending()
    standin.close()
    return {"checkout": checkout, "success": success, "webhooks": per_webhook, "paid": "Thank you" in page.text}


def prepare_paid_sessions(data_dir, product_id, n):
    """n paid Checkout Sessions for n orders in DATA_DIR's ledger, and their signed checkout.session.completed events."""
    from standin import StandIn
    from standin.events import sign
    standin = StandIn(data_dir, public_url=BASE, webhook_url=None)  # no outbox: the bench delivers these itself
    browser, shop = shop_in_process(data_dir, standin=standin)
    token = _CSRF.search(browser.get("/").text)[1]
    form = {"csrf_token": token, "product_id": product_id, "quantity": "1"}
    sessions = []
    for _ in range(n):  # each paid before the next checkout, which would expire an open one of this browser
        sessions.append(_session_id(browser.post("/checkout", form, status=303).location))
        standin.pay(sessions[-1])
    wanted, found = set(sessions), {}
    page = shop.stripe.v1.events.list({"type": "checkout.session.completed", "limit": 100})
    for event in page.auto_paging_iter():
        event = event.to_dict()
        if event["data"]["object"]["id"] in wanted:
            found[event["data"]["object"]["id"]] = event
    secret = standin.webhook_secret
    signed = []
    for event in (found[s] for s in sessions):  # in the order of the orders returned
        body = json.dumps(event, indent=2).encode()
        signed.append(({"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(secret, body)},
                       body))
    standin.close()
    return signed, [shop.ledger.by_session(s)["id"] for s in sessions]


def webhook_ingestion(shop_url, data_dir, signed, order_ids, senders=8, reconnect=True, pids=()):
    """Deliver each event once from `senders` concurrent senders, each on a new connection unless `reconnect` is
    False (as Stripe delivers: one POST per event); events/s, lost and double fulfilments."""
    cpu0 = process_cpu(pids)
    result = run_python(shop_url + "/webhook", 120, senders, "POST", bodies=signed, reconnect=reconnect)
    server_ms = (process_cpu(pids) - cpu0) / max(1, len(signed)) * 1000
    from ledger import Ledger
    ledger = Ledger(data_dir / "shop.sqlite3")
    fulfilled = sum(1 for oid in order_ids if (ledger.get(oid) or {}).get("fulfilled_at"))
    lines = [json.loads(line) for line in (data_dir / "fulfilments.jsonl").read_text().splitlines() if line]
    handed_off = Counter(rec["order_id"] for rec in lines)
    ledger.close()
    return {
        "events": len(signed), "rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
        "acknowledged": result.statuses.get(200, 0),
        "lost": len(order_ids) - sum(1 for oid in order_ids if handed_off[oid] >= 1 and oid),
        "not_marked_paid": len(order_ids) - fulfilled,
        "double": sum(1 for oid, n in handed_off.items() if n > 1),
        "statuses": result.statuses, "errors": result.errors, "client_cores": result.client_cores,
        "server_ms": server_ms,
    }


def median(values):
    return statistics.median(values) if values else 0.0
