"""The shop's catalog: catalog.json checked in full (see catalog_rules.py), reloaded when edited, money formatted."""
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

from . import catalog_rules
from .iso_codes import THREE_DECIMAL, ZERO_DECIMAL

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}


@dataclass(frozen=True)
class Product:
    """A product on sale, priced in minor units, with an image path relative to public/."""
    id: str
    name: str
    description: str
    price: int
    image: str
    tax_code: str | None = None
    stock: int | None = None  # copies to sell in all (sold ones count against it); None: unlimited
    # What Stripe Checkout gets: Checkout shows JPEG/PNG product images, so an SVG cover with a PNG of the
    # same name beside it sends the PNG. https://docs.stripe.com/payments/checkout/customization/product-images
    checkout_image: str = ""


@dataclass(frozen=True)
class ShippingOption:
    """A way to deliver an order, its fee in minor units and its delivery estimate in business days."""
    id: str
    name: str
    amount: int
    min_days: int
    max_days: int
    tax_code: str | None = None
    free_over: int | None = None  # a subtotal from which this option costs nothing


@dataclass(frozen=True)
class Catalog:
    """A checked, read-only catalog: the shop's products, shipping and tax settings."""
    shop_name: str
    currency: str
    products: tuple
    shipping_options: tuple
    countries: tuple
    tax_mode: str = "none"
    tax_behavior: str = "exclusive"
    promotions: tuple = ()  # dicts: code, percent_off or amount_off, expires, max_redemptions, minimum_amount
    terms_url: str | None = None
    collect_tax_ids: bool = False
    source: bytes = field(default=b"", repr=False)  # the file as checked: the ledger keeps it for a restart

    @cached_property
    def _by_id(self):
        return {p.id: p for p in self.products}

    def product(self, product_id) -> Product | None:
        """The product with this id, or None."""
        return self._by_id.get(product_id) if isinstance(product_id, str) else None


SHOWN = 50  # problems listed in the log, on /admin and by the commands; `python shop.py check` lists them all


def first_problems(found: list[str]) -> list[str]:
    """At most SHOWN problems, then how many more there are: a broken 16 MB file must not make a 16 MB log line."""
    more = len(found) - SHOWN
    return found[:SHOWN] + ([f"... and {more} more (python shop.py check lists them all)"] if more > 0 else [])


class CatalogError(Exception):
    """The catalog file cannot be used; .problems lists every reason, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def currency_exponent(currency: str) -> int:
    """How many decimals Stripe's minor unit has for this currency (0 for jpy, 3 for kwd, else 2)."""
    currency = currency.lower()
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def format_money(amount: int, currency: str) -> str:
    """An amount in minor units as shoppers read it: "$12.99", "¥1,500", "1,234.56 CHF"."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"amount must be an int in minor units, not {type(amount).__name__}")
    exponent = currency_exponent(currency)
    whole, fraction = divmod(abs(amount), 10 ** exponent)
    number = f"{whole:,}.{fraction:0{exponent}d}" if exponent else f"{whole:,}"
    sign, symbol = "-" if amount < 0 else "", _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"


def money(amount, currency: str) -> str:
    """format_money, or a dash for an amount not known yet."""
    return "—" if amount is None else format_money(amount, currency)


MAX_BYTES = 16 * 2**20  # 10,000 products take about 4 MB
RETRY_BROKEN = 10  # seconds between reads of an edit not loaded whose file has not changed (a large one takes long)


def _key(st):
    """A file's version: one swapped in (cp -p, rsync, a symlink) may keep size and mtime, never inode and ctime."""
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


def _read(path):
    """(bytes, key); ValueError saying why when the path is no regular file or too big to be a catalog."""
    # Non-blocking, so that a FIFO put there by mistake cannot hang the reload and every request behind it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file (a FIFO, a device or a folder?)")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ValueError(f"is larger than {MAX_BYTES // 2**20} MB")
    return data, _key(st)


def _load(path, public_dir, data=None):
    """(catalog or None, problems, the _key of the bytes checked or None when unreadable or given): from the file at
    path, or from its bytes `data` as kept elsewhere."""
    name, key = os.path.basename(path), None
    try:
        if data is None:
            data, key = _read(path)
    except OSError as e:
        return None, [f"{name}: cannot read the file: {e.strerror or e}"], None
    except ValueError as e:
        return None, [f"{name}: {e}"], None
    found, fields = catalog_rules.check(data, name, public_dir)
    if found:
        return None, found, key
    products = tuple(Product(**p, checkout_image=_checkout_image(p["image"], public_dir))
                     for p in fields.pop("products"))
    options = tuple(ShippingOption(**o) for o in fields.pop("shipping_options"))
    return Catalog(products=products, shipping_options=options, source=data, **fields), [], key


def _checkout_image(image, public_dir):
    """The PNG beside an SVG image when there is one, else the image itself."""
    png = image.removesuffix(".svg") + ".png"
    return png if image.endswith(".svg") and os.path.isfile(os.path.join(public_dir, png)) else image


def load_catalog(path, public_dir) -> Catalog:
    """The catalog in the file at path, with images looked up under public_dir; CatalogError lists every problem."""
    catalog, found, _ = _load(path, public_dir)
    if found:
        raise CatalogError(found)
    return catalog


def problems(path, public_dir) -> list[str]:
    """Every problem with the catalog file, one line each; empty when it is valid."""
    return _load(path, public_dir)[1]


class CatalogStore:
    """The last good catalog, re-read only when the file changes, so edits go live without a restart."""

    def __init__(self, path, public_dir, log, check_every=0.0, kept=None):
        self.path, self.public_dir = os.fspath(path), os.fspath(public_dir)
        self.name = os.path.basename(self.path)
        # log: a logging.Logger, which gets each message's level, or any callable taking the message alone
        self._log = log.log if isinstance(log, (logging.Logger, logging.LoggerAdapter)) else lambda _, text: log(text)
        self.error: str | None = None
        self.summary: str | None = None
        self.found: list[str] = []  # the first problems of the edit that was not loaded (for /admin)
        self.withdrawn: dict[str, str] = {}  # {id: name} of products edits took out, so a cart can name them
        self.reads = 1  # how many times the file was read and checked, for tests and diagnostics
        self._lock = threading.Lock()
        # Seconds between looks at the file (0: every call): on a busy server a stat() costs more than a cached page.
        self.check_every, self._next_check, self._retry_at = check_every, 0.0, 0.0
        self._catalog, found, self._key = _load(self.path, self.public_dir)
        if found and kept:  # a start while the file is broken: kept(path) gives the text last loaded, or None
            text = kept(self.path)
            self._catalog = _load(self.path, self.public_dir, text.encode())[0] if text else None
            if self._catalog:
                self._key = self._key or self._stat()
                self._not_loaded(found, "serving the last good version, kept from before the restart")
        if self._catalog is None:  # nothing older to fall back on
            raise CatalogError(found)

    def current(self, force=False) -> Catalog:
        """The catalog to serve now: reloaded first if the file changed, the last good one if the edit is invalid."""
        if self.check_every and not force:
            now = time.monotonic()  # no system call: cheap enough for every request
            if now < self._next_check:
                return self._catalog
            self._next_check = now + self.check_every
        key = self._stat()
        # One reload at a time; meanwhile the others go on with the catalog they have, until the new one is whole
        # (but for /healthz and /admin, which `force` a look at the file as it is now: they wait for the reload).
        # An edit not loaded is read again every RETRY_BROKEN seconds: its fix may be an image put in place.
        again = self.error is not None and time.monotonic() >= self._retry_at
        if (key != self._key or again) and self._lock.acquire(blocking=force):
            try:
                if key != self._key or again:
                    self._retry_at = time.monotonic() + RETRY_BROKEN
                    self._reload(key)
            finally:
                self._lock.release()
        return self._catalog

    def _stat(self):
        try:
            return _key(os.stat(self.path))
        except OSError as e:
            return ("unreadable", e.errno)

    def _reload(self, stat_key):
        self.reads += 1
        catalog, found, read_key = _load(self.path, self.public_dir)
        if found:
            # Remember the bad version (as read, else as seen) so it is reported once, not on every request.
            self._key = read_key or stat_key
            self._not_loaded(found, "still serving the previous version")
            return
        fixed = " (earlier problems fixed)" if self.error else ""
        named = {**self.withdrawn, **{p.id: p.name for p in self._catalog.products}}  # a new dict: readers keep theirs
        self.withdrawn = {pid: name for pid, name in named.items() if catalog.product(pid) is None}
        self._catalog, self._key, self.error, self.summary, self.found = catalog, read_key, None, None, []
        self._log(logging.INFO, f"{self.name}: reloaded, {len(catalog.products)} products{fixed}")

    def _not_loaded(self, found, serving):
        """Log a version of the file that was not loaded, once, and keep its problems for /admin (/healthz: 503)."""
        if self.error and first_problems(found) == self.found:
            return  # the same problems, looked at again: said already
        first = found[0].removeprefix(f"{self.name}: ")
        head = f"{self.name}: the last edit was not loaded ({len(found)} problem{'s' * (len(found) > 1)}"
        self.error = f"{head}, first: {first}); {serving}"
        self.summary = f"{head}); {serving}"  # above the list of them, on /admin
        self.found = first_problems(found)
        self._log(logging.ERROR, "\n  ".join([self.error] + self.found))
