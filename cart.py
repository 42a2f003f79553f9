"""The shopping cart: product ids and quantities in a plain cookie, re-checked against the catalog."""

import re

COOKIE = "cart"
MAX_QUANTITY = 99
MAX_LINES = 50
MAX_ID = 64  # catalog ids are at most 64 characters
# The longest cart the shop writes: 50 lines of a 64-character id at 99, dot-separated (3,399 characters),
# within the 4,096 bytes every browser keeps for a cookie: https://www.rfc-editor.org/rfc/rfc6265#section-6.1
MAX_COOKIE = MAX_LINES * (MAX_ID + 1 + len(str(MAX_QUANTITY))) + MAX_LINES - 1
_ITEM = re.compile(rf"([a-z0-9][a-z0-9-]{{0,{MAX_ID - 1}}}):([0-9]{{1,6}})")


def parse(raw, catalog):
    """The cart as an ordered {product_id: quantity}: unknown ids dropped, quantities clamped to 1..99."""
    cart = {}
    if not raw or len(raw) > MAX_COOKIE:
        return cart
    for part in raw.split("."):
        m = _ITEM.fullmatch(part)
        if not m or catalog.product(m[1]) is None:
            continue
        cart[m[1]] = clamp(cart.get(m[1], 0) + int(m[2]))
        if len(cart) >= MAX_LINES:
            break
    return cart


def serialize(cart):
    """The cookie value for a cart: `id:qty.id:qty` (cookie-safe characters only, no prices)."""
    return ".".join(f"{pid}:{qty}" for pid, qty in cart.items())


def clamp(quantity):
    """A quantity forced into 1..99."""
    return max(1, min(MAX_QUANTITY, quantity))


def lines(cart, catalog):
    """Priced lines from the server's catalog: [(product, quantity, line_total)]."""
    out = []
    for pid, qty in cart.items():
        product = catalog.product(pid)
        if product is not None:
            out.append((product, qty, product.price * qty))
    return out


def count(cart):
    """How many items the cart holds."""
    return sum(cart.values())
