"""A small web shop on Stripe Checkout: `make_app()` builds it, `python shop.py` serves it (see --help)."""

import atexit
import functools
import hashlib
import json
import logging
import os
import random
import sqlite3
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import bottle
from bottle import Bottle, request, response, static_file

from webshop import admin, mail, payments, storefront, webhooks
from webshop.catalog import CatalogError, CatalogStore, format_money
from webshop.fulfilment import Orders
from webshop.ledger import Ledger
from webshop.security import LOOPBACK, Guard, admin_page
from webshop.settings import ROOT, Config, ShopError, load_config

PUBLIC = ROOT / "public"
VIEWS = [str(ROOT / "views")]
log = logging.getLogger("shop")
access = logging.getLogger("shop.access")
MAX_WEBHOOK, MAX_FORM = 512 * 1024, 16 * 1024  # Stripe's events are a few KB; every other body is a small form
CLOSERS = 4  # Stripe calls at once that expire the checkouts an edit repriced or withdrew
CLOSE_WAIT = 5.0  # seconds the request or watcher loading an edit waits for the closer (see close_later)
PAGES = {  # status: (the error page's title, its message when no ShopError gives one)
    400: ("Bad request", "The request could not be understood."), 401: ("Sign in", "Please sign in."),
    403: ("Forbidden", "That is not allowed."), 404: ("Not found", "There is no such page."),
    405: ("Method not allowed", "That page does not take this kind of request."),
    409: ("Sorry", "That cannot be done any more."), 413: ("Too large", "That request is too large."),
    429: ("Too many requests", "Too many requests. Please wait a minute and try again."),
    500: ("Server error", "Something went wrong on our side. Nothing was charged twice; please try again."),
    502: ("Payment refused", payments.REFUSED), 503: ("Temporarily unavailable", payments.UNAVAILABLE),
}
DATABASE_DOWN = "The shop cannot reach its order records right now. Please try again in a minute."


class Shop:
    """What every request handler needs, made once per app: catalog, orders, Stripe reads, the guard."""

    def __init__(self, config):
        self.config, self.loaded = config, None  # the catalog this process last looked at
        self.closing, self.closer, self.to_close, self.retry_closing = threading.Lock(), None, False, None
        ledger = Ledger(config)  # first: a start while catalog.json is broken serves the version last loaded
        self.catalogs = CatalogStore(config.catalog, PUBLIC, log, check_every=config.catalog_check_seconds,
                                     kept=ledger.kept_catalog)
        # The emails' shop name, from the catalog already loaded: a webhook marking an order paid never checks an edit
        # (seconds for a large one) inside its transaction.
        self.orders = Orders(config, ledger=ledger,
                             shop_name=lambda: (self.loaded or self.catalogs.current()).shop_name)
        self.reads = payments.SharedReads(self.orders.stripe)
        self.guard = Guard(config, self.orders.ledger.secret())
        self.catalog()  # the closer thread closes the checkouts it no longer backs, then makes its promotion codes

    def catalog(self):
        """The current catalog (re-read only when the file changed; the last good one if an edit is broken). A newly
        loaded one's name and text go to the ledger; the closer thread brings its promotion codes at Stripe in line
        and closes the checkouts it no longer backs, and the page or watcher that loaded it waits CLOSE_WAIT at most
        for that, so a few checkouts close before it is answered and the rest after."""
        catalog, ledger = self.catalogs.current(), self.orders.ledger
        if catalog is not self.loaded:  # at start, and after an edit
            previous, self.loaded = self.loaded, catalog
            try:
                if ledger.checkpoint("shop name") != catalog.shop_name:  # for commands run while an edit is broken
                    ledger.set_checkpoint("shop name", catalog.shop_name)
                if ledger.kept_catalog(self.config.catalog) != (text := catalog.source.decode("utf-8-sig")):
                    ledger.set_checkpoint("catalog", {"path": os.path.abspath(self.config.catalog), "text": text})
                self.close_later()
            except Exception:  # the database away, say: the next look does it all again
                self.loaded = previous
                raise
            if closer := self.closer:
                closer.join(CLOSE_WAIT)
        elif self.retry_closing and time.monotonic() > self.retry_closing:  # Stripe did not answer the closer
            self.close_later()
        return catalog

    def sync_promotions(self, catalog):
        """Make the catalog's promotions the active codes at Stripe; False if Stripe did not answer (codes it refused
        are tried again at the next edit or start, not every minute)."""
        # Stripe is asked only when the promotions or the key (a live account needs its own codes) differ from what
        # the ledger says is active (for all instances): after any edit, even while stopped; not at each start.
        cfg, ledger = self.config, self.orders.ledger
        account = hashlib.sha256(f"{cfg.stripe_secret_key} {cfg.stripe_api_base}".encode()).hexdigest()[:16]
        wanted = json.dumps([catalog.promotions, catalog.currency, account], sort_keys=True)
        if ledger.checkpoint("promotions") == wanted:
            return True
        try:
            payments.sync_promotions(self.orders.stripe, catalog)
        except ShopError as e:
            log.warning("promotion codes not brought in line with the catalog: %s", e.detail or e.message)
            return e.status != 503
        ledger.set_checkpoint("promotions", wanted)
        return True

    def close_later(self):
        """Close the open checkouts the newest catalog no longer backs, then bring the promotion codes in line, in this
        process's one closer thread, so that no request waits for a Stripe call each; one at work looks again."""
        with self.closing:
            self.to_close, self.retry_closing = True, None
            if self.closer is None:
                closer = threading.Thread(target=self._closer, name="close checkouts", daemon=True)
                closer.start()  # (it waits for this lock)
                self.closer = closer

    def _closer(self):
        while True:
            with self.closing:
                if not self.to_close:
                    self.closer = None
                    return
                self.to_close = False
            try:
                catalog = self.loaded  # one catalog for both: codes only once its checkouts are closed
                closed = self.close_unbacked(catalog)  # first: it keeps old prices and stock from being paid
                if catalog is not self.loaded:  # a newer edit came meanwhile: its own pass (close_later) does it all
                    continue
                if not self.sync_promotions(catalog) or not closed:  # Stripe down: a look a minute on tries again
                    self.retry_closing = time.monotonic() + 60
            except Exception as e:  # noqa: BLE001 — the database went away, say: a look a minute on tries again
                log.error("closing the checkouts the catalog no longer backs stopped: %s", type(e).__name__)
                self.retry_closing = time.monotonic() + 60

    EDITED = ("withdrawn or repriced", "stock lowered", "catalog edit")  # why an edit expired a checkout

    @staticmethod
    def priced(catalog, order):
        """Whether the catalog still sells every book of an order, at its price and in its currency."""
        return order["currency"] == catalog.currency and all(
            (p := catalog.product(i["product_id"])) and p.price == i["unit_amount"] for i in order["items"])

    def stale(self, catalog):
        """Sessions of open checkouts holding a book withdrawn or repriced since, or priced in another currency."""
        return [o["session_id"] for o in self.orders.ledger.open_checkouts() if not self.priced(catalog, o)]

    def unbacked(self, catalog, stale):
        """Sessions of open checkouts `catalog` no longer backs: the stale ones, then the newest beyond a stock."""
        stock = {p.id: p.stock for p in catalog.products if p.stock is not None}
        return stale + (self.orders.ledger.over_stock(stock, closing=set(stale)) if stock else [])

    def close_unbacked(self, catalog):
        """Expire the open checkouts the catalog no longer backs, so that nothing is sold that is gone, at a price that
        is not, or beyond its copies; stops when a newer edit is loaded. False if Stripe did not answer, or kept one
        open (tried again a minute on)."""
        stale, ledger, down, kept_open = self.stale(catalog), self.orders.ledger, [], []

        def close(session_id, why):
            if down or catalog is not self.loaded or ledger.by_session(session_id)["status"] != "open":
                return  # Stripe down, a newer edit (its own pass does it), or closed meanwhile (an instance, a click)
            try:
                self.orders.expire(session_id, why)
            except ShopError as e:  # that checkout stays payable until it expires
                more = ""
                if e.code == "still_open":  # refused for that one: the others go on
                    kept_open.append(session_id)
                elif e.status == 503:  # Stripe down: each of the rest would wait as long, and fail too (said once)
                    down.append(session_id)
                    if down[0] == session_id:  # the first of those under way at once
                        more = f" and {len(self.unbacked(catalog, self.stale(catalog))) - 1} more"
                log.warning("could not expire %s%s (%s): %s", session_id, more, why, e.detail or e.message)
        # Each call waits on Stripe, so the old prices go a few side by side; in an order of their own, so that
        # instances loading the same edit mostly close different ones (each skips those closed already).
        with ThreadPoolExecutor(CLOSERS, thread_name_prefix="close checkouts") as pool:
            list(pool.map(close, random.sample(stale, len(stale)), [self.EDITED[0]] * len(stale)))
        # Then one at a time, the sums made again after each: one paid before it could be closed counts as sold.
        tried = set(stale)
        while not down and catalog is self.loaded and (
                closing := [s for s in self.unbacked(catalog, stale) if s not in tried]):
            tried.add(closing[0])
            close(closing[0], self.EDITED[1])
        return not (down or kept_open)

    def render(self, name, cart_count=None, title=None, **values):
        """A page in the shop's layout, with what every page shows."""
        catalog = self.catalog()
        if cart_count is None:
            cart_count = sum(storefront.in_stock(self, storefront.read_cart(self, catalog).items, catalog)[0].values())
        return bottle.template(
            name, template_lookup=VIEWS, shop_name=catalog.shop_name, offline=self.config.mode == "offline",
            test_mode=self.config.mode != "live", cart_count=cart_count, currency=catalog.currency, title=title,
            money=functools.partial(format_money, currency=catalog.currency), path=request.path,
            csrf=self.guard.token(request, response), **values)


def make_app(config=None):
    """The shop as a WSGI app: from a dict of settings (tests), a Config (`python shop.py`), or the environment and
    `.env` (gunicorn)."""
    from_env = config is None  # gunicorn's 'shop:make_app()' (`python shop.py` reads .env and starts the threads)
    if from_env:
        from dotenv import load_dotenv
        load_dotenv(ROOT / ".env")  # never overrides a variable the environment already has
    try:
        config = config if isinstance(config, Config) else load_config(config)
        shop = Shop(config)
    except (ShopError, CatalogError, OSError, ValueError, sqlite3.Error) as e:  # settings, the catalog, DATA_DIR,
        if not from_env:  # the database or a stand-in setting it cannot start with (a bug keeps its traceback)
            raise
        from webshop.merchant import cannot_open  # worded as `python shop.py` words them
        # Exit 4 is gunicorn's "App failed to load": one line, no traceback from each worker
        # (https://docs.gunicorn.org/en/stable/run.html)
        print(f"cannot start: {cannot_open(config, e)}", file=sys.stderr)
        raise SystemExit(4) from None
    if from_env:  # as `python shop.py` warns when it serves
        from webshop.merchant import env_warnings
        for warning in env_warnings():
            log.warning(warning)
    app = Bottle()
    app.config["shop"] = shop

    @app.hook("before_request")
    def check_request():
        """Send another name of this machine to BASE_URL (307); refuse what no route should see: a path that is not
        UTF-8, an oversized or unreadable body."""
        request.environ["shop.start"] = time.monotonic()
        try:  # bottle would drop the bytes it cannot decode and serve another page
            request.environ.get("bottle.raw_path", "").encode("latin-1").decode("utf-8")
            length = int(request.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise refusal(ShopError(400, "The address or the Content-Length is not valid.")) from None
        if length > (MAX_WEBHOOK if request.path == "/webhook" else MAX_FORM):
            raise refusal(ShopError(413, PAGES[413][1]))
        moved = request.path not in ("/healthz", "/webhook") and shop.guard.elsewhere(request)
        if moved:  # http://localhost:8000/ when the shop is http://127.0.0.1:8000: the cart would not follow
            raise bottle.HTTPResponse(status=307, Location=moved)
        if request.method == "POST":  # read here, so that a body that cannot be read is a 400, never a 500
            try:
                request.body if request.path == "/webhook" else request.forms
            except Exception:  # noqa: BLE001 — bottle's ValueError or MultipartError; gunicorn's own, on bad chunks
                raise refusal(ShopError(400, "The form data could not be read.")) from None

    @app.hook("after_request")
    def finish():
        """Security headers on every answer, and one access line (the path escaped: it cannot forge a line)."""
        shop.guard.headers(response, request.path)
        started = request.environ.get("shop.start", time.monotonic())
        access.info("%s %s status=%d duration_ms=%.1f", request.method, _logged_path(), response.status_code,
                    (time.monotonic() - started) * 1000)

    app.install(_shop_errors)
    storefront.install(app, shop)
    webhooks.install(app, shop)
    admin.install(app, shop)  # /admin, only when ADMIN_PASSWORD is set
    if shop.orders.standin is not None:  # offline test mode: the stand-in's payment page
        shop.orders.standin.install_pay_page(app)

    @app.get("/static/<path:path>")
    def static(path):
        """Files from public/ only: no dotfiles, no symlinks, no way out of the folder."""
        if ("\0" in path or any(p.startswith(".") or p == "" for p in path.split("/"))  # a NUL: resolve() raises
                or PUBLIC.joinpath(path).resolve() != PUBLIC.resolve().joinpath(path)):
            raise ShopError(404, PAGES[404][1])
        request.environ.pop("HTTP_RANGE", None)  # the pages' files are small: always whole
        return static_file(path, root=str(PUBLIC), headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/healthz")
    def healthz():
        """200 when the database and the catalog are fine, else 503 naming which (never a path or a secret)."""
        problems = []
        try:
            shop.orders.ledger.ping()
        except Exception as e:  # noqa: BLE001 — any database failure is a health failure
            problems.append(f"database: {e.message if isinstance(e, ShopError) else type(e).__name__}")
        shop.catalogs.current(force=True)
        if shop.catalogs.error:
            problems.append("catalog: the last edit was not loaded (see `python shop.py check`)")
        response.content_type = "text/plain; charset=utf-8"
        response.status = 503 if problems else 200
        return "\n".join(["unhealthy", *problems] if problems else ["ok"]) + "\n"

    for status in PAGES:  # bottle calls _error_page for these statuses only
        app.error(status)(functools.partial(_error_page, shop))
    if from_env:
        start_background(shop)
    return app


def keep_doing(job, what, stopping, seconds):
    """Run `job` every `seconds` until `stopping` is set. A failure (the database away, say) is logged once, with its
    traceback, then that it works again: not each round."""
    failing = None
    while not stopping.is_set():
        try:
            job()
        except Exception as e:  # noqa: BLE001 — the next round tries again
            if failing != type(e).__name__:
                failing = type(e).__name__
                log.exception("%s failed: %s; trying again every %g s", what, failing, seconds)
        else:
            if failing:
                log.info("%s works again", what)
            failing = None
        stopping.wait(seconds)


def start_background(shop):
    """Start the email sender, the catalog's watcher (and offline the stand-in's webhook sender); returns the function
    that stops the first two (the stand-in's is a daemon thread, which ends with the process)."""
    # Threads of each serving process: the outbox's leases keep two processes from sending one message.
    base_url = shop.config.base_url
    if shop.config.mode == "offline" and urlsplit(base_url).hostname not in LOOPBACK:
        log.warning("offline mode at %s: anyone reaching it pays with test cards and orders are handed off uncharged;"
                    " set STRIPE_SECRET_KEY before the shop is open to the public", base_url)
    if shop.config.mode == "test" and not shop.config.stripe_webhook_secret:  # (live mode does not start without)
        log.warning("STRIPE_WEBHOOK_SECRET is not set: POST /webhook refuses every event, so orders are fulfilled "
                    "only from their confirmation pages and `reconcile` (`stripe listen` prints the secret)")
    if shop.orders.standin is not None:
        shop.orders.standin.start_webhook_sender()
    # The catalog's watcher loads each edit within a second, pages asked for or not: shoppers on Stripe's page ask
    # the shop for nothing, and the checkouts a repriced or withdrawn book no longer backs must close.
    stopping, seconds = threading.Event(), max(1.0, shop.config.catalog_check_seconds)
    threads = [threading.Thread(target=keep_doing, args=args, name=args[1], daemon=True) for args in (
        (shop.catalog, "looking at the catalog", stopping, seconds),
        (lambda: mail.send_due(shop.orders, stop=stopping), "sending emails", stopping, 1.0))]
    for thread in threads:
        thread.start()

    def stop():
        """Before the ledger is closed: the email under way is answered and marked first (one at most, bounded by
        the SMTP timeout), else it would be sent again after its lease."""
        stopping.set()
        for thread in threads:
            thread.join()
    atexit.register(stop)  # a gunicorn worker's exit too waits for the email under way
    return stop


def _shop_errors(callback):
    """Plugin: a route's ShopError becomes the error page with its status, and any other exception the 500 page."""
    # Answered here, before the after_request hook, so that the access line says 500, not bottle's 200.

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except ShopError as e:
            if e.detail:  # Stripe refusing a request is the merchant's to look into (a Dashboard setting, say)
                log.log(logging.WARNING if e.status == 502 else logging.INFO, "refused %s %s: %s (%s)",
                        request.method, _logged_path(), e.status, e.detail)
            raise refusal(e) from None
        except bottle.HTTPResponse:
            raise
        except Exception as e:  # noqa: BLE001 — a crash is a 500 here, before the access line is written
            if Ledger.unavailable(e):  # not a bug: said so, and worth a retry
                log.error("database unavailable on %s %s: %s", request.method, _logged_path(), type(e).__name__)
                raise refusal(ShopError(503, DATABASE_DOWN)) from None
            request.environ["wsgi.errors"].write(traceback.format_exc())  # the traceback where bottle writes it
            raise bottle.HTTPError(500, PAGES[500][1], e) from None
    return wrapper


def _logged_path():
    """The request's path for a log line, escaped: a newline or escape sequence in it cannot forge a line."""
    return ascii(request.path)[1:-1]


def refusal(error):
    """A ShopError as bottle's HTTPError, so that the one error handler renders it."""
    return bottle.HTTPError(error.status, error.message, error)


def _error_page(shop, error):
    """The one error handler: the shop's page for every status, never a traceback or an exception's text."""
    cause, status = error.exception, error.status_code
    if not isinstance(cause, ShopError):  # a ShopError's message is written for shoppers; no other text is shown
        if status >= 500 and cause is not None:
            log.error("unhandled %s on %s %s", type(cause).__name__, request.method, _logged_path())
        cause = ShopError(status, PAGES[status][1])
    shop.guard.headers(response, request.path)
    response.set_header("Cache-Control", "no-store")
    allow = response.headers.get("Allow", "").split(",")
    if status == 405 and "GET" in allow and "HEAD" not in allow:  # bottle answers HEAD as GET, yet leaves it out
        response.set_header("Allow", ",".join(allow + ["HEAD"]))
    if cause.retry_after or status == 503:
        response.set_header("Retry-After", str(cause.retry_after or 30))
    if request.path == "/webhook":  # Stripe's endpoint answers in JSON
        response.content_type = "application/json"
        return json.dumps({"error": cause.message})
    try:
        admin = shop.config.admin_password and admin_page(request.path)
        return shop.render("error.tpl", title=PAGES[status][0], status=status, message=cause.message,
                           admin=admin, cart_count="" if cause.message == DATABASE_DOWN else None)  # no second wait
    except Exception:  # noqa: BLE001 — a broken template must still answer, plainly
        response.content_type = "text/plain; charset=utf-8"
        return f"{status}: {cause.message}\n"


if __name__ == "__main__":
    from webshop.merchant import main
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
