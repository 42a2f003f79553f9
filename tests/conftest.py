"""Fixtures: a fresh shop per test on a temporary DATA_DIR, driven through WebTest."""

import re
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import webtest

from settings import SETTINGS
from shop import make_app

ROOT = Path(__file__).resolve().parents[1]
BASE = "http://shop.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Tests never pick up a developer's real keys or settings."""
    for s in SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    monkeypatch.delenv("STANDIN_FAULTS", raising=False)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_waitress(server, thread):
    """Stop a waitress server running in `thread`: its sockets are closed by its own loop, woken by its trigger.
    Closed from here instead, they can vanish under the loop's select() (EBADF in the loop thread)."""
    from waitress import wasyncore
    server.task_dispatcher.shutdown()
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(5)


def wait_for(condition, what, timeout=20):
    """condition()'s first truthy value, polled until `timeout` seconds; AssertionError naming `what` after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {what}")


class Shopper(webtest.TestApp):
    """A browser on the shop: WebTest plus the steps a shopper takes."""

    def __init__(self, app):
        super().__init__(app, extra_environ={"HTTP_HOST": "shop.test"})
        self.shop = app.config["shop"]
        self.standin = self.shop.standin

    def csrf(self):
        """The CSRF token of this browser, from a page's form."""
        page = self.get("/")
        return _CSRF.search(page.text).group(1)

    def add(self, product_id, quantity=1):
        return self.post("/cart", {"csrf_token": self.csrf(), "action": "add", "product_id": product_id,
                                   "quantity": str(quantity)}, status=303)

    def set_quantity(self, product_id, quantity):
        return self.post("/cart", {"csrf_token": self.csrf(), "action": "set", "product_id": product_id,
                                   "quantity": str(quantity)}, status=303)

    def remove(self, product_id):
        return self.post("/cart", {"csrf_token": self.csrf(), "action": "remove", "product_id": product_id},
                         status=303)

    def checkout(self, **fields):
        """POST /checkout; returns the 303 response to Stripe's (the stand-in's) page."""
        return self.post("/checkout", {"csrf_token": self.csrf(), **fields}, status=303)

    def session_id(self, checkout_response):
        return urlsplit(checkout_response.location).path.rsplit("/", 1)[-1]

    def cart_cookie(self):
        return self.cookies.get("cart")


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def make_shopper(data_dir):
    """Build a shop with settings overrides; each call is a new app on the same DATA_DIR."""
    def factory(**overrides):
        # Look at catalog.json on every request, so a test's edit shows at once (the server: once a second).
        config = {"data_dir": str(data_dir), "base_url": BASE, "catalog_check_seconds": 0, **overrides}
        return Shopper(make_app(config))
    return factory


@pytest.fixture
def shopper(make_shopper):
    return make_shopper()


@pytest.fixture
def catalog_copy(tmp_path):
    """A private copy of catalog.json that a test may edit."""
    path = tmp_path / "catalog.json"
    shutil.copy(ROOT / "catalog.json", path)
    return path
