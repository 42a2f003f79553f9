"""`python shop.py` as a real process: serves on loopback, logs each request, stops cleanly; `check` reports."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, postgres_server, wait_for


def shop_env(**settings):
    """This process's environment without its Stripe settings (offline mode), plus these settings."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}, **settings}


def run(args, env_extra, timeout=60):
    return subprocess.run([sys.executable, "shop.py", *args], cwd=ROOT, env=shop_env(**env_extra),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serves_logs_each_request_and_stops_cleanly(tmp_path, stop):
    port = free_port()
    env = shop_env(PORT=str(port), DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, "shop.py"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert "Offline test mode" in body
        proc.send_signal(stop)
        assert proc.wait(timeout=15) == 0
        log = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "(offline mode, 128 threads)" in log
    line = next(li for li in log.splitlines() if "shop.access: GET / " in li)
    assert "status=200" in line and "duration_ms=" in line
    assert log.rstrip().endswith("stopped") and "Traceback" not in log


def test_a_log_reader_that_stalls_never_stalls_the_shop(tmp_path):
    """Its stdout a pipe nobody reads (a stuck log collector): the pipe fills after a few hundred access lines, and
    the shop must go on answering; the lines wait for the reader instead (10,000 at most), and a stop waits for
    them a few seconds, not for ever."""
    port = free_port()
    env = shop_env(PORT=str(port), DATA_DIR=str(tmp_path / "data"), CATALOG_CHECK_SECONDS="300")
    proc = subprocess.Popen([sys.executable, "shop.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), "the shop to listen", timeout=30)
        long_path = "/static/" + "x" * 2000  # a 404 whose access line is 2 kB: 64 kB of pipe in 32 requests
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{long_path}", timeout=5)
            except urllib.error.HTTPError as e:
                assert e.code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)  # impatient: a second one while it stops
        proc.wait(timeout=30)  # raises if it is still waiting for the reader
    finally:
        proc.kill()
        proc.communicate(timeout=15)


def test_log_lines_dropped_while_the_reader_is_stalled_are_counted_once_it_reads_again():
    from webshop.merchant import _write_logs_in_a_thread
    reading, written = threading.Event(), []

    class Stalled(logging.Handler):
        def emit(self, record):
            reading.wait(10)  # a log collector that stopped reading, until the test lets it go on
            written.append(record.getMessage())
    logger = logging.getLogger("test.stalled")
    logger.handlers, logger.propagate, logger.level = [Stalled()], False, logging.INFO
    stop = _write_logs_in_a_thread(logger, most=3)

    def caught_up():
        return any("dropped" in line for line in written) and len(written) >= 3
    for n in range(10):
        logger.info("line %d", n)
    reading.set()
    wait_for(caught_up, "the writer to read again")
    logger.info("after")
    stop()
    kept, (dropped, after) = written[:-2], written[-2:]  # the warning where the gap is, after the lines that waited
    assert dropped == f"{10 - len(kept)} log line(s) dropped: the log's reader stopped reading" and len(kept) <= 4
    assert kept == [f"line {n}" for n in range(len(kept))] and after == "after"


def test_log_lines_dropped_just_before_a_stop_are_counted_too():
    """The stop's mark may follow the last line that waited: the count is written before the writer ends."""
    from webshop.merchant import _write_logs_in_a_thread
    held, first, last, written = threading.Event(), threading.Event(), threading.Event(), []

    class Stalled(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message == "line 0":
                held.set()
                first.wait(10)
            elif message == "line 3":
                last.wait(10)
            written.append(message)
    logger = logging.getLogger("test.stalled.stop")
    logger.handlers, logger.propagate, logger.level = [Stalled()], False, logging.INFO
    stop = _write_logs_in_a_thread(logger, most=3)
    logger.info("line 0")
    assert held.wait(10)  # being written, the reader stalled
    for n in range(1, 10):  # 1 to 3 wait, the rest are dropped
        logger.info("line %d", n)
    first.set()
    wait_for(lambda: len(written) == 3, "the writer at the last line that waited")
    stopping = threading.Thread(target=stop)
    stopping.start()  # its mark goes in while "line 3" is still being written
    time.sleep(0.5)
    last.set()
    stopping.join(10)
    assert written == ["line 0", "line 1", "line 2", "line 3",
                       "6 log line(s) dropped: the log's reader stopped reading"]


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_check_passes_on_the_shipped_catalog(tmp_path):
    result = run(["check"], {"DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: catalog.json is valid; mode offline" in result.stdout


def test_check_prints_every_problem_and_fails(tmp_path):
    data = json.loads((ROOT / "catalog.json").read_text())
    data["products"][3]["price"] = 12.5
    data["products"][1]["id"] = data["products"][0]["id"]
    bad = tmp_path / "catalog.json"
    bad.write_text(json.dumps(data, indent=2))
    result = run(["check"], {"CATALOG": str(bad), "DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert ("catalog.json: products[3].price: must be a positive integer in minor units, got 12.5 (product jane-eyre)"
            in result.stdout)  # the place, and the id to search the file for
    assert "products[1].id" in result.stdout and "duplicate" in result.stdout


def test_check_reports_missing_webhook_secret_in_test_mode(tmp_path):
    result = run(["check"], {"STRIPE_SECRET_KEY": "sk_test_abc", "DATA_DIR": str(tmp_path),
                             "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}", "STRIPE_MAX_RETRIES": "0"})
    assert result.returncode == 1 and "STRIPE_WEBHOOK_SECRET: not set" in result.stdout
    assert "sk_test_abc" not in result.stdout + result.stderr


def test_serving_in_test_mode_without_a_webhook_secret_says_every_event_is_refused(tmp_path, spawn):
    port = free_port()
    spawn([sys.executable, "shop.py"], port, env={"PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
                                                  "STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_MAX_RETRIES": "0",
                                                  "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"})
    log = tmp_path / "process-0.log"
    wait_for(lambda: "STRIPE_WEBHOOK_SECRET is not set: POST /webhook refuses every event" in log.read_text(),
             "the warning")


def test_check_asks_stripe_once_whether_it_answers_and_takes_the_key(tmp_path, spawn):
    port = free_port()
    spawn([sys.executable, "-m", "standin", "--port", str(port), "--data-dir", str(tmp_path / "stripe")], port)
    env = {"DATA_DIR": str(tmp_path), "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_API_BASE": f"http://127.0.0.1:{port}"}
    for key, code, said in (("sk_test_works", 0, "ok: catalog.json is valid; mode test"),
                            ("sk_test_rolled-key", 1, "STRIPE_SECRET_KEY: Stripe refused it (AuthenticationError)")):
        result = run(["check"], {**env, "STRIPE_SECRET_KEY": key})
        assert result.returncode == code and said in result.stdout, result.stdout + result.stderr
        assert key not in result.stdout + result.stderr
    result = run(["check"], {**env, "STRIPE_SECRET_KEY": "sk_test_works", "STRIPE_MAX_RETRIES": "0",
                             "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"})  # nothing listens there
    # Stripe's answer alone: "run it again", told apart from a problem of the shop's by a monitor
    assert result.returncode == 3 and "Stripe: no answer (APIConnectionError)" in result.stdout
    refusing = free_port()  # but Stripe refusing the request is no "run it again"
    spawn([sys.executable, "-m", "standin", "--port", str(refusing), "--data-dir", str(tmp_path / "refusing")],
          refusing, env={"STANDIN_FAULTS": "GET /v1/checkout/sessions=400*5"})
    result = run(["check"], {**env, "STRIPE_SECRET_KEY": "sk_test_works",
                             "STRIPE_API_BASE": f"http://127.0.0.1:{refusing}"})
    assert result.returncode == 1 and "Stripe: The request could not be carried out" in result.stdout, result.stdout


@pytest.mark.parametrize("env, said", [
    ({"DATA_DIR": "{tmp}/a-file/data"}, "DATA_DIR: {tmp}/a-file/data: Not a directory"),
    ({"DATA_DIR": "{tmp}/a-file"}, "DATA_DIR: {tmp}/a-file: File exists")])
def test_check_finds_a_data_dir_serving_could_not_make(tmp_path, env, said, spawn):
    (tmp_path / "a-file").write_text("")
    result = run(["check"], {k: v.format(tmp=tmp_path) for k, v in env.items()})
    assert result.returncode == 1 and said.format(tmp=tmp_path) in result.stdout, result.stdout + result.stderr
    stripe_port = free_port()
    spawn([sys.executable, "-m", "standin", "--port", str(stripe_port), "--data-dir", str(tmp_path / "stripe")],
          stripe_port)
    unused = run(["check"], {**{k: v.format(tmp=tmp_path) for k, v in env.items()}, "STRIPE_SECRET_KEY": "sk_test_x",
                             "STRIPE_WEBHOOK_SECRET": "whsec_x", "DATABASE_URL": postgres_server(),
                             "SMTP_URL": "smtp://mail.invalid:587",
                             "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}"})
    assert unused.returncode == 0, unused.stdout  # with PostgreSQL, a mail server and a key, DATA_DIR holds nothing


def test_check_warns_of_offline_mode_at_an_address_that_is_not_this_machine(tmp_path):
    result = run(["check"], {"DATA_DIR": str(tmp_path), "BASE_URL": "https://shop.example.com"})
    assert result.returncode == 0, result.stdout + result.stderr  # the keys may come with the deployment
    assert "warning: without STRIPE_SECRET_KEY the shop at https://shop.example.com is offline" in result.stdout


def test_invalid_catalog_at_start_stops_with_the_problems(tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text('{"shop": {"name": "X", "currency": "usd"},\n "products": [}')
    result = run([], {"CATALOG": str(bad), "DATA_DIR": str(tmp_path), "PORT": str(free_port())})
    assert result.returncode == 2
    assert "catalog.json: line 2, column" in result.stderr and "cannot start" in result.stderr


@pytest.mark.parametrize("env, message", [
    ({"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "http://shop.example.com",
      "STRIPE_WEBHOOK_SECRET": "whsec_x"}, "BASE_URL: live mode needs an https:// URL"),
    ({"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "https://shop.example.com"},
     "STRIPE_WEBHOOK_SECRET: live mode needs"),
])
def test_live_mode_refuses_to_start_unsafely(tmp_path, env, message):
    result = run([], {**env, "DATA_DIR": str(tmp_path), "PORT": str(free_port())})
    assert result.returncode == 2 and message in result.stderr
    assert "sk_live_abc" not in result.stderr



@pytest.mark.parametrize("base_url", [
    "https://shop.example.com/store", "https://shop.example.com/ x", "https://shop example.com",
    'https://shop.example.com"', "https://shop.example.com'><script>",
])
def test_check_refuses_a_base_url_that_is_not_a_bare_origin(tmp_path, base_url):
    result = run(["check"], {"BASE_URL": base_url, "DATA_DIR": str(tmp_path)})
    assert result.returncode == 2 and "BASE_URL: must be an origin" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr and not result.stdout


@pytest.mark.parametrize("argv, port", [([], 8765), (["serve"], 8765), (["--port", "8766", "serve"], 8766),
                                        (["serve", "--port", "8766"], 8766)])
def test_serve_hands_the_server_settings_to_waitress(tmp_path, monkeypatch, argv, port):
    """THREADS, CONNECTION_LIMIT and CHANNEL_TIMEOUT reach waitress, which polls (select() stops at 1,024 fds);
    --port, before or after `serve`, wins over PORT."""
    import waitress

    from webshop import merchant
    given = {}

    class Server:
        def run(self):
            raise KeyboardInterrupt  # Ctrl-C at once

        def close(self):
            pass

    def create_server(app, **options):
        given.update(options)
        return Server()

    monkeypatch.setattr(waitress, "create_server", create_server)
    monkeypatch.setattr(merchant.signal, "signal", lambda *args: None)  # leave pytest's SIGTERM handler alone
    for name, value in (("DATA_DIR", tmp_path / "data"), ("THREADS", 7), ("CONNECTION_LIMIT", 77),
                        ("CHANNEL_TIMEOUT", 9), ("PORT", 8765)):
        monkeypatch.setenv(name, str(value))
    assert merchant.main(argv) == 0
    assert {k: given[k] for k in ("threads", "connection_limit", "channel_timeout", "asyncore_use_poll", "port")} == {
        "threads": 7, "connection_limit": 77, "channel_timeout": 9, "asyncore_use_poll": True, "port": port}
    # Stopped with the server, before the ledger was closed: no thread of it looks at a closed one afterwards.
    assert not [t for t in threading.enumerate() if t.name in ("catalog-watch", "mail-sender")]


@pytest.mark.parametrize("base_url, warned", [("", False), ("https://shop.example", True)])
def test_offline_mode_on_a_public_address_is_warned_of_at_start(tmp_path, monkeypatch, caplog, base_url, warned):
    """The stand-in's page takes test cards: a shop left without its key where shoppers can reach it says so."""
    import waitress

    from webshop import merchant

    class Server:
        def run(self):
            raise KeyboardInterrupt  # Ctrl-C at once

        def close(self):
            pass

    monkeypatch.setattr(waitress, "create_server", lambda app, **options: Server())
    monkeypatch.setattr(merchant.signal, "signal", lambda *args: None)  # leave pytest's SIGTERM handler alone
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BASE_URL", base_url)
    caplog.set_level(logging.INFO, logger="shop")
    assert merchant.main([]) == 0
    assert "stopped" in caplog.text and ("orders are handed off uncharged" in caplog.text) is warned


def test_a_connection_silent_for_channel_timeout_is_closed(spawn, tmp_path):
    """Half a request line, then nothing (a slow client, or one holding a connection): waitress looks for such
    connections only every 30 s unless told otherwise, so CHANNEL_TIMEOUT=1 closed them 1 to 31 s late."""
    import socket
    port = free_port()
    spawn([sys.executable, "shop.py"], port, env={"PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
                                                  "CHANNEL_TIMEOUT": "1"})
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:  # far longer than 1 s and a look
        s.sendall(b"GET / HT")
        assert s.recv(100) == b""  # closed by the shop, not a timeout here


def test_behind_a_trusted_proxy_the_admin_sign_in_limit_counts_each_forwarded_client(spawn, tmp_path):
    """TRUSTED_PROXY: only that proxy's X-Forwarded-For names the client, so one visitor's wrong passwords do
    not lock out the merchant, who comes through the same proxy."""
    import base64
    import http.client

    port = free_port()
    spawn([sys.executable, "shop.py"], port, env={"PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
                                                  "ADMIN_PASSWORD": "correct horse battery",
                                                  "TRUSTED_PROXY": "127.0.0.1"})

    def sign_in(client, password):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        conn.request("GET", "/admin", headers={"Authorization": f"Basic {token}", "X-Forwarded-For": client})
        status = conn.getresponse().status
        conn.close()
        return status
    assert [sign_in("203.0.113.7", "guess") for _ in range(10)] == [401] * 10
    assert sign_in("203.0.113.7", "guess") == 429
    assert sign_in("::ffff:203.0.113.7", "guess") == 429  # the same client, as a dual-stack proxy writes it
    assert sign_in("198.51.100.2", "correct horse battery") == 200
    assert sign_in("::ffff:198.51.100.3", "correct horse battery") == 200  # another one


def test_behind_a_trusted_proxy_the_address_checkout_limit_counts_each_forwarded_client(spawn, tmp_path):
    """ADDRESS_CHECKOUT_LIMIT under waitress, which takes the client's address from the trusted proxy's header."""
    import http.client
    import re

    port = free_port()
    spawn([sys.executable, "shop.py"], port, env={"PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
                                                  "ADDRESS_CHECKOUT_LIMIT": "1", "TRUSTED_PROXY": "127.0.0.1"})

    def buy_now(client):
        """A new browser at `client` (as the proxy names it) clicks "Buy now": the answer's status."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/", headers={"X-Forwarded-For": client})
        page = conn.getresponse()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.read().decode())[1]
        conn.request("POST", "/checkout", f"csrf_token={token}&product_id=walden",
                     {"Cookie": page.getheader("Set-Cookie").split(";")[0], "X-Forwarded-For": client,
                      "Content-Type": "application/x-www-form-urlencoded"})
        status = conn.getresponse().status
        conn.close()
        return status
    assert buy_now("203.0.113.7") == 303
    assert buy_now("198.51.100.2") == 303  # another shopper behind the same proxy
    assert buy_now("203.0.113.7") == 429
