"""Static files come from public/ only: no way out by `..`, encoded slashes, dotfiles or a symlink, whether the path
reaches the app through WSGI or raw over a socket; and the server itself refuses oversized headers and bodies."""

import http.client
import os
import shutil
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shop
from tests.conftest import ROOT, as_served, free_port, survived, wait_for, wsgi

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(
    ["..", "%2e%2e", "%2f", ".", "", "img", "books", ".git", "style.css", "%00", "\\", "..%5c", "~", "%252e"]),
    max_size=6).map("/".join)))
def test_static_files_come_only_from_public(module_app, tail):
    status, _, body, _ = survived(wsgi(module_app, "GET", as_served("/static/" + tail)))
    if status == 200:
        served = [p for p in shop.PUBLIC.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts)]
        assert any(body == p.read_bytes() for p in served)


@pytest.fixture
def public_copy(tmp_path, monkeypatch):
    """A copy of public/ the shop serves instead (made before the shop), with a file outside it to reach for."""
    public = tmp_path / "public"
    shutil.copytree(shop.PUBLIC, public)
    (public / "style.css").write_text("/* the copy */")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.css").write_text("SECRET OUTSIDE PUBLIC")
    monkeypatch.setattr(shop, "PUBLIC", public)
    return public, outside


def test_a_symlink_out_of_public_is_not_followed(public_copy, make_shopper):
    public, outside = public_copy
    (public / "leak.css").symlink_to(outside / "secret.css")
    (public / "img" / "out").symlink_to(outside, target_is_directory=True)
    (public / "up").symlink_to("..", target_is_directory=True)
    shopper = make_shopper()
    assert shopper.get("/static/style.css").text == "/* the copy */"  # the copy is what the shop serves
    for path in ("/static/leak.css", "/static/img/out/secret.css", "/static/up/outside/secret.css",
                 "/static/up/public/style.css"):
        page = shopper.get(path, status=404)
        assert "SECRET" not in page.text and "Paper Lantern Books" in page.text, path


# -- over a real socket: paths as the server decodes them -------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python shop.py serve` in offline mode on a free loopback port; its URL. It ends with the module, or by itself
    within five minutes."""
    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
    env.update(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", BASE_URL=url, HOST="127.0.0.1",
               PORT=str(port), DATA_DIR=str(folder / "data"), CATALOG=str(ROOT / "catalog.json"), DATABASE_URL="")
    with open(folder / "shop.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "shop.py"), "serve"], cwd=ROOT, env=env, stdout=log,
                                stderr=log, preexec_fn=lambda: signal.alarm(300))
    try:
        wait_for(lambda: proc.poll() is not None or _status(port, "/healthz") == 200, "the shop to start", 30)
        assert proc.poll() is None, (folder / "shop.log").read_text()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _status(port, path):
    try:
        return raw_get(port, path)[0]
    except OSError:
        return None


def raw_get(port, path, method="GET", body=None, headers=None):
    """(status, headers, body) of one request whose path is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


RAW = ["/static/../shop.py", "/static/%2e%2e/shop.py", "/static/..%2fshop.py", "/static/%2e%2e%2fshop.py",
       "/static/img/..%2f..%2fshop.py", "/static/..%5cshop.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
       "/static/img/", "/static/img", "/static/", "/static/.gitignore", "/static/%2egitignore", "/static/style.css%00",
       "/static/img/books/", "//static/../shop.py", "/static/%252e%252e/shop.py", "/static/..;/shop.py",
       "/static/img/../../catalog.json", "/static/%c0%ae%c0%ae/shop.py", "/static/.%2e/.%2e/etc/passwd",
       "/static/..%00/shop.py", "http://127.0.0.1/static/../shop.py", "/static/~/.bashrc", "/static/*"]


@pytest.mark.parametrize("path", RAW)
def test_static_paths_sent_raw_never_leave_public(served, path):
    status, response, body = raw_get(served, path)
    assert status in (400, 403, 404), (path, status)
    for leaked in (b"import ", b"root:", b'"products"', b"*.pyc", b"Index of"):
        assert leaked not in body, (path, leaked)
    if status != 400:  # waitress itself refuses what is not HTTP; everything else is the shop's
        assert response.getheader("Content-Security-Policy") and response.getheader("X-Content-Type-Options")


def test_oversized_headers_and_bodies_are_refused_by_the_server(served):
    assert raw_get(served, "/", headers={"X-Big": "a" * 100_000})[0] in (400, 413, 431)
    assert raw_get(served, "/cart", "POST", b"a" * (600 * 1024),
                   {"Content-Type": "application/x-www-form-urlencoded"})[0] == 413
    try:  # beyond waitress's own limit the server may close the connection before the body is sent
        status = raw_get(served, "/webhook", "POST", b"a" * (2 * 1024 * 1024))[0]
    except ConnectionError:
        status = 413
    assert status == 413
    assert raw_get(served, "/healthz")[0] == 200
