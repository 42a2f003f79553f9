"""A small web shop on Stripe Checkout: `make_app()` builds it, `python shop.py` serves it."""

import functools
import json
import logging
import secrets
import sys
import threading

import bottle
from bottle import Bottle, request, response, static_file

import cart as carts
import payments
import webhooks
from backend import Backend
from catalog import CatalogStore, format_money
from logs import request_id
from security import Guard, load_secret
from settings import ROOT, Config, ShopError, load_config

PUBLIC = ROOT / "public"
VIEWS = [str(ROOT / "views")]  # one list object: bottle caches compiled templates by its id
log = logging.getLogger("shop")
access_log = logging.getLogger("shop.access")


class Shop(Backend):
    """Everything a request handler needs, made once per app."""

    def __init__(self, config):
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalogs = CatalogStore(config.catalog, PUBLIC, log, check_every=config.catalog_check_seconds)
        super().__init__(config, business_name=self.catalog().shop_name)
        self.guard = Guard(config, load_secret(config.data_dir))
        self._pages = {}  # render_cached: {None: the catalog they were made from, key: page}
        self._pages_lock = threading.Lock()

    def catalog(self):
        """The current catalog (re-read only when the file changed)."""
        return self.catalogs.current()

    def render(self, name, cart_count=None, **values):
        """A page in the shop's layout, with what every page shows (the cart count from the cookie unless given)."""
        catalog = self.catalog()
        if cart_count is None:
            cart_count = carts.count(carts.parse(request.get_cookie(carts.COOKIE), catalog))
        return self._template(name, catalog, cart_count, self.guard.token(request, response), **values)

    def _template(self, name, catalog, cart_count, csrf, **values):
        values.setdefault("title", None)
        return bottle.template(
            name, template_lookup=VIEWS, shop_name=catalog.shop_name, offline=self.config.mode == "offline",
            test_mode=self.config.mode != "live", cart_count=cart_count, money=functools.partial(
                format_money, currency=catalog.currency), currency=catalog.currency,
            csrf=csrf, path=request.path, **values)

    def render_cached(self, key, name, **values):
        """render(), made once per catalog version and key: only the browser's CSRF token and cart count vary.

        The template may only print `csrf` and `cart_count` (they are placeholders while it runs). Returns bytes."""
        catalog = self.catalog()
        pieces = self.cached_page(catalog, key)
        if pieces is None:
            page = self._template(name, catalog, _COUNT_MARK, _CSRF_MARK, **values).encode()
            # Split at the marks: a request only joins the pieces around its own token and count.
            pieces = [part.split(_CSRF_MARK.encode()) for part in page.split(_COUNT_MARK.encode())]
            with self._pages_lock:
                if self._pages.get(None) is not catalog:  # a reloaded catalog starts a fresh cache
                    self._pages = {None: catalog}
                elif len(self._pages) > _MAX_CACHED_PAGES:
                    self._pages.pop(next(k for k in self._pages if k is not None))
                self._pages[key] = pieces
        cart = carts.parse(request.get_cookie(carts.COOKIE), catalog)
        return self.fill_page(pieces, self.guard.token(request, response), carts.count(cart))

    def cached_page(self, catalog, key):
        """The pieces render_cached kept for this catalog version and key, or None."""
        pages = self._pages
        return pages.get(key) if pages.get(None) is catalog else None

    @staticmethod
    def fill_page(pieces, csrf, cart_count):
        """A cached page's bytes with this browser's CSRF token and cart count filled in."""
        csrf = csrf.encode()
        return str(cart_count).encode().join([csrf.join(part) for part in pieces])


# Placeholders for per-browser values in cached pages: random, so no catalog text can contain them.
_CSRF_MARK = "csrf" + secrets.token_hex(12)
_COUNT_MARK = "count" + secrets.token_hex(12)
_MAX_CACHED_PAGES = 64  # catalog pages kept rendered (a 10,000-product catalog has 417)


class ShopApp(Bottle):
    """The shop's Bottle app; a catalog page that is already rendered skips bottle's per-request machinery."""

    fast = None  # storefront.fast_home: returns the response, or None to take the normal path

    def __call__(self, environ, start_response):
        if self.fast is not None:
            try:
                out = self.fast(environ, start_response)
            except Exception:  # it answers before start_response or not at all: the framework takes over
                log.exception("fast path failed on %s; answered by the framework", environ.get("PATH_INFO"))
                out = None
            if out is not None:
                return out
        return self.wsgi(environ, start_response)


def make_app(config=None):
    """The shop as a WSGI app: pass a dict of settings (tests) or nothing (environment and .env)."""
    if config is None:  # e.g. `waitress-serve --call shop:make_app`: read .env as `python shop.py` does
        from dotenv import load_dotenv
        load_dotenv(ROOT / ".env")  # never overrides a variable the environment already has
    if not isinstance(config, Config):
        config = load_config(config)
    shop = Shop(config)
    app = ShopApp()
    app.config["shop"] = shop

    @app.hook("before_request")
    def start():
        request_id(request.environ)
        _check_path(request)
        _limit_body(request)
        _parse_form(request)

    @app.hook("after_request")
    def finish():
        shop.guard.headers(response)
        response.set_header("X-Request-Id", request_id(request.environ))

    app.install(functools.partial(_render_errors, shop))

    import storefront
    storefront.install(app, shop)
    app.fast = storefront.fast_home(shop)
    webhooks.install(app, shop)
    if shop.standin is not None:
        shop.standin.install_pay_page(app)

    @app.get("/static/<path:path>")
    def static(path):
        """Files from public/ only: no dotfiles, no way out of the folder."""
        if any(part.startswith(".") or part == "" for part in path.split("/")):
            raise ShopError(404, "There is no such page.")
        res = static_file(path, root=str(PUBLIC))
        if res.status_code == 416:  # a malformed or unsatisfiable Range: the whole file (RFC 9110, 14.2 allows it)
            request.environ.pop("HTTP_RANGE", None)
            res = static_file(path, root=str(PUBLIC))
        res.set_header("Cache-Control", "public, max-age=3600")
        return res

    @app.get("/healthz")
    def healthz():
        """200 when the database and the catalog are fine, else 503 with the reason."""
        problems = []
        try:
            shop.ledger.ping()
        except Exception as e:  # any database failure is a health failure
            problems.append(f"database: {type(e).__name__}")
        try:
            shop.catalogs.current(force=True)  # a stat now, whatever CATALOG_CHECK_SECONDS says
        except Exception as e:  # the store keeps the last good catalog; this is only a safety net
            problems.append(f"catalog: {type(e).__name__}")
        if shop.catalogs.error:
            problems.append(f"catalog: {shop.catalogs.error}")
        response.content_type = "text/plain; charset=utf-8"
        if problems:
            response.status = 503
            return "unhealthy\n" + "\n".join(problems) + "\n"
        return "ok\n"

    for status in (400, 403, 404, 405, 413, 500, 502, 503):
        app.error(status)(functools.partial(_error_page, shop))
    return app


MAX_FORM_BODY = 16 * 1024  # a cart form is a few hundred bytes


class Refused(bottle.HTTPError):
    """A request refused before it reaches a route; its message is safe to show (the page says it)."""


def _check_path(request):
    """400 for a path that is not UTF-8: bottle would drop the bytes it cannot decode and serve another page."""
    try:
        request.environ.get("bottle.raw_path", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise Refused(400, "The address is not valid UTF-8.") from None


def _limit_body(request):
    """Refuse oversized bodies (413) before anything reads them."""
    limit = webhooks.MAX_BODY if request.path == "/webhook" else MAX_FORM_BODY
    try:
        length = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refused(400, "The request's Content-Length is not a number.") from None
    if length > limit:
        raise Refused(413, "That request is too large.")


def _parse_form(request):
    """Parse a posted form once, up front: bottle raises ValueError (not a 400) on some malformed multipart bodies."""
    if request.method == "POST" and request.path != "/webhook":  # the webhook reads its raw body itself
        try:
            request.forms
        except (ValueError, bottle.MultipartError):
            raise Refused(400, "The form data could not be read.") from None


def _render_errors(shop, callback):
    """Plugin: a ShopError from any route becomes the shop's error page with its status."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except ShopError as e:
            if e.detail:
                log.info("refused %s %s: %s (%s)", request.method, request.path, e.status, e.detail)
            response.status = e.status
            if e.status == 503:
                response.set_header("Retry-After", "30")
            return _page(shop, e.status, e.message)
    return wrapper


MESSAGES = {
    400: "The request could not be understood.",
    403: "That is not allowed.",
    404: "There is no such page.",
    405: "That page does not take this kind of request.",
    413: "That request is too large.",
    500: "Something went wrong on our side. Nothing was charged twice; please try again.",
    502: "The payment service refused the request. Your cart is kept.",
    503: payments.UNAVAILABLE,
}


def _error_page(shop, error):
    """Bottle's error handler: the shop's error page, never a traceback."""
    if error.status_code >= 500 and error.exception is not None:
        log.error("unhandled %s on %s %s", type(error.exception).__name__, request.method, request.path)
    shop.guard.headers(response)
    response.set_header("Cache-Control", "no-store")
    # An unhandled exception replaces the response headers set so far, the request id among them.
    response.set_header("X-Request-Id", request_id(request.environ))
    message = error.body if isinstance(error, Refused) else MESSAGES.get(error.status_code, MESSAGES[500])
    if request.path == "/webhook":  # Stripe's endpoint answers in JSON, as it does when it gets that far
        response.content_type = "application/json"
        return json.dumps({"error": message})
    return _page(shop, error.status_code, message)


def _page(shop, status, message):
    try:
        return shop.render("error.tpl", title=_TITLES.get(status, "Error"), status=status, message=message)
    except Exception:  # the catalog or a template is broken: still answer, plainly
        response.content_type = "text/plain; charset=utf-8"
        return f"{status}: {message}\n"


_TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           413: "Too large", 500: "Server error", 502: "Payment refused", 503: "Payment service unavailable"}


def main(argv=None):
    """`python shop.py [serve|check|...]`."""
    import cli
    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
