"""Browser fixtures: Debian's Chromium, driven by Playwright, against `python shop.py` run as a real server."""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
STEP_TIMEOUT_MS = 10_000  # any one click, fill or page load
START_TIMEOUT_S = 20  # the shop answering /healthz after launch
# No calls home: this machine's network is closed, and tests must not depend on Google's services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable(reason):
    """Skip locally; fail in CI, which must really run the browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason)


def chromium_path():
    """The system Chromium: env CHROMIUM, else `chromium` on PATH (Debian's package)."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run (Playwright gives it a fresh temporary profile)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -r requirements-dev.txt)")
    path = chromium_path()
    if not path:
        unavailable("Chromium is not installed (Debian: apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield chromium
        finally:
            chromium.close()


class ShopServer:
    """`python shop.py` in a subprocess on a free loopback port, offline, with its own DATA_DIR."""

    def __init__(self, data_dir, log_path, extra_env=None):
        self.data_dir, self.log_path, self.extra_env = data_dir, log_path, extra_env or {}
        self.proc = self.url = None

    def start(self):
        for _ in range(3):  # another process may grab the free port between the probe and the bind
            if self._launch(free_port()):
                return self
        pytest.fail(f"the shop did not start; its log:\n{self.log_tail()}", pytrace=False)

    def _launch(self, port):
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "STANDIN_FAULTS"}
        # Set (not just unset) the keys: an empty value also stops a developer's .env from filling them in.
        env.update(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", CATALOG="catalog.json",
                   HOST="127.0.0.1", PORT=str(port), BASE_URL=self.url, DATA_DIR=str(self.data_dir),
                   PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "shop.py"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the shop did not answer /healthz within {START_TIMEOUT_S}s; its log:\n{self.log_tail()}",
                    pytrace=False)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def start_shop(tmp_path_factory):
    """Start shops on demand (extra env per shop); all are stopped at the end of the run."""
    servers = []

    def start(name="shop", **extra_env):
        folder = tmp_path_factory.mktemp(name)
        server = ShopServer(folder / "data", folder / "shop.log", extra_env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def shop(start_shop):
    """The shop every browser test shares (each test has its own browser context, so its own cart)."""
    return start_shop()


@pytest.fixture(scope="session")
def screenshot_root():
    """test-artifacts/screenshots/ (and axe/ beside it), emptied at the start of the run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    shutil.rmtree(ARTIFACTS.parent / "axe", ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


class Browsing:
    """One shopper's tab: a page plus step screenshots and the console errors it saw."""

    def __init__(self, page, folder, base_url):
        self.page, self.folder, self.base_url = page, folder, base_url
        self.errors = []
        self.steps = 0
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"script error: {e}"))
        page.on("response", self._response)

    def _console(self, message):
        # A page answered with an error status on purpose (402 declined, 404, 503) is checked by the tests;
        # Chromium also logs it as "Failed to load resource". Anything else logged as an error is a problem.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def _response(self, response):
        if response.request.resource_type != "document" and response.status >= 400:
            self.errors.append(f"{response.request.resource_type} {response.url} answered {response.status}")

    def goto(self, path):
        return self.page.goto(self.base_url + path)

    def shot(self, name, full_page=True):
        """Save a screenshot of this step as NN-name.png in the test's folder; returns the path."""
        self.steps += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.steps:02d}-{name}.png"
        if full_page:
            self._load_lazy_images()
        self.page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        return path

    def _load_lazy_images(self, timeout=5.0):
        """A full-page picture shows covers below the fold too, which loading="lazy" has not fetched yet."""
        self.page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
        deadline = time.monotonic() + timeout
        while not self.page.evaluate("Array.from(document.images).every(i => i.complete)"):
            if time.monotonic() > deadline:
                break  # the screenshot still shows what there is; missing images fail elsewhere
            time.sleep(0.05)

    def publish(self, shot, name, stable=True):
        """The README's picture docs/screenshots/NAME.png: replaced with UPDATE_SCREENSHOTS=1, else checked."""
        target = DOCS / f"{name}.png"
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)
        elif not target.exists():
            warnings.warn(f"{target.relative_to(ROOT)} is missing: run the browser tests with UPDATE_SCREENSHOTS=1")
        elif stable and target.read_bytes() != shot.read_bytes():
            # Only pages without per-order ids can be compared byte for byte.
            warnings.warn(f"{target.relative_to(ROOT)} differs from the page as it is now ({shot.relative_to(ROOT)}); "
                          "if the change is intended, refresh it with UPDATE_SCREENSHOTS=1")

    def no_sideways_scroll(self):
        # The screen's width, not window.innerWidth: an emulated phone widens its layout to fit what overflows.
        width, inner = self.page.evaluate("document.documentElement.scrollWidth"), self.page.viewport_size["width"]
        assert width <= inner, f"{self.page.url} scrolls sideways at {inner}px: content is {width}px wide"


def one_line_cells(page, cells):
    """The texts of the cells matching the CSS selector that break over more than one line."""
    return page.evaluate("""cells => [...document.querySelectorAll(cells)].filter(cell => {
        const text = document.createRange(); text.selectNodeContents(cell); return text.getClientRects().length > 1;
    }).map(cell => cell.textContent)""", cells)


def cut_words(page, cells):
    """The words of the cells matching the CSS selector that break across lines ("refund / ed")."""
    return page.evaluate("""cells => [...document.querySelectorAll(cells)].flatMap(cell => {
        const cut = [], texts = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node; (node = texts.nextNode());) for (const word of node.data.matchAll(/\\S+/g)) {
            const range = document.createRange();
            range.setStart(node, word.index); range.setEnd(node, word.index + word[0].length);
            if (range.getClientRects().length > 1) cut.push(word[0]);
        }
        return cut; })""", cells)


@pytest.fixture
def open_tab(browser, shop, screenshot_root, request):
    """Open a fresh browser context (no cookies) at a size, with or without JavaScript."""
    contexts = []

    def open_(viewport=DESKTOP, javascript=True, server=None, label=None):
        phone = viewport["width"] < 600
        context = browser.new_context(viewport=viewport, java_script_enabled=javascript, is_mobile=phone,
                                      has_touch=phone, device_scale_factor=1, locale="en-US",
                                      timezone_id="UTC", reduced_motion="reduce")
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
        contexts.append(context)
        name = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
        folder = screenshot_root / (name + (f"-{label}" if label else ""))
        return Browsing(context.new_page(), folder, (server or shop).url)

    yield open_
    for context in contexts:
        context.close()


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items):
    """Everything under tests/browser/ carries the browser marker, so -m "not browser" skips it."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)
