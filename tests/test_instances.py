"""More than one process: gunicorn's workers on one DATA_DIR, and two shops on one PostgreSQL with a SIGKILL in the
middle. Every paid order is handed off exactly once, whichever process hears of it, however often."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import psycopg
import pytest

from standin import StandIn
from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


def browse(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    answer = conn.getresponse()
    token = re.search(r'name="csrf_token" value="([^"]+)"', answer.read().decode())[1]
    return answer.getheader("Set-Cookie").split(";")[0], token


def request(port, method, path, cookie="", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    conn.request(method, path, body, headers)
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer


def start(port, product="walden"):
    """A new browser clicks "Buy now" for one book on the shop at `port`: its session id."""
    cookie, token = browse(port)
    answer = request(port, "POST", "/checkout", cookie, f"csrf_token={token}&product_id={product}&quantity=1")
    assert answer.status == 303, answer.status
    return answer.getheader("Location").rsplit("/", 1)[-1]


def buy(port, stripe, product="walden"):
    """A new browser buys one book with "Buy now" on the shop at `port`; paid at the stand-in. Its session id."""
    session_id = start(port, product)
    stripe.pay(session_id)
    return session_id


def keep_delivering(stripe, stop):
    """Deliver the stand-in's events until told to stop: each one twice, half the callers newest first."""
    def run(reverse):
        while not stop.is_set():
            stripe.deliver_pending(reverse=reverse, duplicate=True)
            stop.wait(0.05)
    threads = [threading.Thread(target=run, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    return threads


def test_two_gunicorn_workers_on_one_data_dir_fulfil_each_order_once(spawn, tmp_path):
    port, data = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    spawn([sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "16",
           "--bind", f"127.0.0.1:{port}", "shop:make_app()"], port, env={"DATA_DIR": str(data), "BASE_URL": base})
    stripe = StandIn(data, public_url=base, webhook_url=base + "/webhook")
    stripe.webhook_retry_base = 0.05
    sessions = [buy(port, stripe) for _ in range(8)]
    stop = threading.Event()
    threads = keep_delivering(stripe, stop)
    try:  # the confirmation pages race the webhooks for the same orders
        for session_id in sessions:
            assert request(port, "GET", f"/success?session_id={session_id}").status == 200
        wait_for(lambda: len((data / "fulfilments.jsonl").read_text().splitlines()) >= 8, "8 hand-offs")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    stripe.deliver_pending(duplicate=True)
    lines = [json.loads(line) for line in (data / "fulfilments.jsonl").read_text().splitlines()]
    assert sorted(line["session_id"] for line in lines) == sorted(sessions)  # each once, none missing


def test_a_price_edit_under_two_gunicorn_workers_closes_every_checkout_open_at_the_old_price(spawn, tmp_path):
    port, data, catalog = free_port(), tmp_path / "data", tmp_path / "catalog.json"
    base, books = f"http://127.0.0.1:{port}", json.loads((ROOT / "catalog.json").read_text())
    catalog.write_text(json.dumps(books))
    spawn([sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "8",
           "--bind", f"127.0.0.1:{port}", "shop:make_app()"], port,
          env={"DATA_DIR": str(data), "BASE_URL": base, "CATALOG": str(catalog), "CATALOG_CHECK_SECONDS": "0"})
    stripe = StandIn(data, public_url=base)
    sessions = [start(port) for _ in range(6)]  # left open, as with Back
    walden = next(p for p in books["products"] if p["id"] == "walden")
    walden["price"] += 100
    catalog.write_text(json.dumps(books))
    for _ in range(6):  # pages on both workers, each of which loads the edit
        assert request(port, "GET", "/").status == 200
    wait_for(lambda: all(stripe.get(s)["status"] == "expired" for s in sessions), "the old-price checkouts expired")
    assert stripe.get(start(port))["amount_subtotal"] == walden["price"]


def test_a_price_edit_closes_the_old_price_checkouts_with_no_page_asked_for_meanwhile(spawn, tmp_path):
    port, data, catalog = free_port(), tmp_path / "data", tmp_path / "catalog.json"
    base, books = f"http://127.0.0.1:{port}", json.loads((ROOT / "catalog.json").read_text())
    catalog.write_text(json.dumps(books))
    spawn([sys.executable, "shop.py"], port, env={"DATA_DIR": str(data), "BASE_URL": base, "CATALOG": str(catalog),
                                                  "PORT": str(port), "STRIPE_SECRET_KEY": ""})
    stripe = StandIn(data, public_url=base)
    sessions = [start(port) for _ in range(2)]  # the shoppers are on Stripe's page, which asks the shop for nothing
    next(p for p in books["products"] if p["id"] == "walden")["price"] += 100
    catalog.write_text(json.dumps(books))
    wait_for(lambda: all(stripe.get(s)["status"] == "expired" for s in sessions), "the old-price checkouts expired",
             timeout=20)


def test_gunicorn_workers_warn_of_offline_mode_on_a_public_address(spawn, tmp_path):
    """No Stripe key and a BASE_URL shoppers can reach: each worker says its payment page takes test cards."""
    port = free_port()
    spawn([sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "2",
           "--bind", f"127.0.0.1:{port}", "shop:make_app()"], port,
          env={"DATA_DIR": str(tmp_path / "data"), "BASE_URL": "https://shop.example"})
    log = tmp_path / "process-0.log"
    wait_for(lambda: log.read_text().count("offline mode at https://shop.example") == 2, "a warning from each worker")
    assert "orders are handed off uncharged" in log.read_text()


@pytest.mark.parametrize("env, said", [
    ({"DATABASE_URL": "postgresql://shop:s3cret@127.0.0.1:{closed}/shop"}, "DATABASE_URL: cannot connect: "),
    ({"THREADS": "abc"}, "THREADS: must be a whole number"),
    ({"DATA_DIR": "/proc/no-such-dir"}, "DATA_DIR /proc/no-such-dir: No such file or directory"),
    ({"STANDIN_LATENCY_MS": "soon"}, "STANDIN_LATENCY_MS")])
def test_gunicorn_with_settings_the_shop_cannot_start_with_says_why_in_a_line_not_a_traceback(tmp_path, env, said):
    env = {k: v.format(closed=free_port()) for k, v in env.items()}
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
                           "--bind", f"127.0.0.1:{free_port()}", "shop:make_app()"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DATA_DIR": str(tmp_path / "data"),
                                                      "STANDIN_LATENCY_MS": "", **env})
    assert proc.returncode != 0 and "App failed to load" in proc.stderr
    assert f"cannot start: {said}" in proc.stderr and "Traceback" not in proc.stderr and "s3cret" not in proc.stderr


@pytest.mark.parametrize("path", ["/cart", "/checkout", "/webhook"])
@pytest.mark.parametrize("chunks", [b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabc"], ids=["bad size", "cut off"])
def test_a_body_gunicorn_cannot_read_is_refused_with_400_and_no_traceback(spawn, tmp_path, path, chunks):
    port = free_port()
    spawn([sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", "2",
           "--bind", f"127.0.0.1:{port}", "shop:make_app()"], port, env={"DATA_DIR": str(tmp_path / "data")})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
                  f"Connection: close\r\n\r\n".encode() + chunks)
        s.shutdown(socket.SHUT_WR)
        assert s.makefile("rb").readline().split()[1] == b"400"
    assert "Traceback" not in (tmp_path / "process-0.log").read_text()


def test_two_shops_on_one_postgresql_with_one_killed_mid_run_hand_off_each_order_once(spawn, tmp_path,
                                                                                       postgres_url):
    stripe_port, a, b = free_port(), free_port(), free_port()
    stripe_dir, secret = tmp_path / "stripe", "whsec_two_instances"
    shop_env = {"STRIPE_SECRET_KEY": "sk_test_two", "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
                "STRIPE_WEBHOOK_SECRET": secret, "DATABASE_URL": postgres_url}
    spawn([sys.executable, "-m", "standin", "--port", str(stripe_port), "--data-dir", str(stripe_dir),
           "--webhook-url", f"http://127.0.0.1:{b}/webhook", "--webhook-secret", secret], stripe_port)

    def shop(port, name):
        return spawn([sys.executable, "shop.py"], port, env={**shop_env, "PORT": str(port),
                                                             "DATA_DIR": str(tmp_path / name)})
    shop(a, "a")
    shop_b = shop(b, "b")
    # The test pays and delivers through the same stand-in store as the server (shared SQLite file).
    stripe = StandIn(stripe_dir, webhook_url=f"http://127.0.0.1:{b}/webhook", webhook_secret=secret)
    stripe.webhook_retry_base = 0.05
    stop = threading.Event()
    threads = keep_delivering(stripe, stop)
    sessions = []
    try:
        for i in range(12):  # every checkout on A; every webhook to B
            sessions.append(buy(a, stripe, ["walden", "moby-dick"][i % 2]))
            if i == 5:
                shop_b.send_signal(signal.SIGKILL)  # mid-run: its deliveries fail until it is back
                shop_b.wait()
                shop(b, "b")

        def handed_off():
            with psycopg.connect(postgres_url) as db:
                return db.execute("SELECT COUNT(*) FROM fulfilments").fetchone()[0] >= 12
        wait_for(handed_off, "12 hand-offs", timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    with psycopg.connect(postgres_url) as db:
        records = [json.loads(r[0]) for r in db.execute("SELECT record FROM fulfilments")]
        statuses = {r[0] for r in db.execute("SELECT status FROM orders")}
    assert sorted(r["session_id"] for r in records) == sorted(sessions)
    assert statuses == {"paid"}
    reconcile = subprocess.run([sys.executable, "shop.py", "reconcile"], cwd=ROOT, capture_output=True, text=True,
                               env={**shop_env, "DATA_DIR": str(tmp_path / "a"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert reconcile.returncode == 0, reconcile.stderr
    assert "nothing to repair" in reconcile.stdout
