"""`python shop.py` as a real process: serves on loopback, logs each request, stops cleanly; `check` reports."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, stop_waitress, wait_for


def run(args, env_extra, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "shop.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serves_logs_each_request_and_stops_cleanly(tmp_path, stop):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(PORT=str(port), DATA_DIR=str(tmp_path / "data"))
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
    assert "offline test mode" in log
    line = next(li for li in log.splitlines() if "shop.access GET / " in li)
    assert "status=200" in line and "duration_ms=" in line and "request_id=" in line
    assert log.rstrip().endswith("stopped")


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
    assert "catalog.json: products[3].price: must be a positive integer in minor units, got 12.5" in result.stdout
    assert "products[1].id" in result.stdout and "duplicate" in result.stdout


def test_check_reports_missing_webhook_secret_in_test_mode(tmp_path):
    result = run(["check"], {"STRIPE_SECRET_KEY": "sk_test_abc", "DATA_DIR": str(tmp_path)})
    assert result.returncode == 1 and "STRIPE_WEBHOOK_SECRET: not set" in result.stdout
    assert "sk_test_abc" not in result.stdout + result.stderr


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



@pytest.fixture
def serve_like_shop_py(monkeypatch):
    """serve(app) runs a WSGI app under waitress with `python shop.py`'s settings; returns (base URL, server).
    `sends` records each send() to a client: (thread name, bytes sent)."""
    import threading
    from waitress.channel import HTTPChannel
    from waitress.server import create_server
    from cli import waitress_options
    from settings import load_config
    sends, servers = [], []
    original = HTTPChannel.send

    def send(self, data, do_close=True):
        sent = original(self, data, do_close)
        if any(self.server is server for server, _ in servers):  # not another test's server still running
            sends.append((threading.current_thread().name, bytes(data[:sent])))
        return sent

    monkeypatch.setattr(HTTPChannel, "send", send)

    def serve(app):
        options = waitress_options(load_config())
        options.pop("_quiet")
        server = create_server(app, host="127.0.0.1", port=0, **options)
        thread = threading.Thread(target=server.run, name="main-loop", daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.effective_port}", server

    serve.sends = sends
    yield serve
    for server, thread in servers:
        stop_waitress(server, thread)


def test_a_page_goes_out_in_one_send_from_the_main_loop(serve_like_shop_py, make_shopper):
    from cli import SEND_BUFFER
    url, server = serve_like_shop_py(make_shopper().app)
    assert server.adj.send_bytes == SEND_BUFFER  # the pinned waitress still honours the setting
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        body = r.read()
    assert r.status == 200 and b"</html>" in body and 4000 < len(body) < SEND_BUFFER
    sends = serve_like_shop_py.sends
    # The client can have the last byte before the sending thread has recorded its send() returning.
    wait_for(lambda: b"".join(d for _, d in sends).endswith(body), "the sends to be recorded", timeout=5)
    # Headers and page in one send() (the kernel may take less than all of it, and the rest follows), made by
    # waitress's main loop rather than by the request's thread.
    assert sends and sends[0][1].startswith(b"HTTP/1.1 200") and body[:200] in sends[0][1], \
        [(t, len(d)) for t, d in sends]
    assert b"".join(d for _, d in sends).endswith(body) and {t for t, _ in sends} == {"main-loop"}


def test_a_response_larger_than_the_send_buffer_arrives_whole(serve_like_shop_py):
    from cli import SEND_BUFFER
    chunk = bytes(range(256)) * 64  # 16 KiB

    def big(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(chunk) * 20))])
        return (chunk for _ in range(20))  # 320 KiB, written as it is made

    url, _ = serve_like_shop_py(big)
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        assert r.read() == chunk * 20
    # The client can have the last byte before the sending thread has recorded its send() returning.
    def recorded():
        return sum(len(d) for _, d in serve_like_shop_py.sends)
    wait_for(lambda: recorded() > len(chunk) * 20, "the sends to be recorded", timeout=5)
    sent = recorded()
    assert len(chunk) * 20 > 4 * SEND_BUFFER and sent > len(chunk) * 20
    # Sent while being written: the request's thread flushed whenever a send buffer's worth was waiting.
    assert any(thread != "main-loop" for thread, _ in serve_like_shop_py.sends)
