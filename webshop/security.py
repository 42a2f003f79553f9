"""What keeps shoppers safe: cookies read leniently, a signed browser id, CSRF checks, security headers."""

import base64
import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import quote, urlsplit

from .settings import ShopError

FORBIDDEN = ("This form has expired or did not come from this shop, so nothing was changed. "
             "Please go back, reload the page and try again.")
NO_COOKIE = FORBIDDEN + (" Your browser sent it without the shop's cookie, which keeps your cart: please allow "
                         "cookies for this site first.")
ELSEWHERE = ("This form was sent from another address than the shop's, so nothing was changed. "
             "Please open the shop at {} and try again.")
MONTH = 60 * 60 * 24 * 30
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # one machine's names for itself, as urlsplit().hostname gives them


def cookies(request):
    """The request's cookies as {name: value}; a malformed one (another app's on this host) costs only itself."""
    # Python's cookie parser, which bottle uses, drops the whole header for one bad pair (`theme=dark mode`).
    if "shop.cookies" not in request.environ:
        # reversed: of two cookies with one name, the first wins (RFC 6265)
        pairs = (part.strip().partition("=") for part in reversed(request.environ.get("HTTP_COOKIE", "").split(";")))
        request.environ["shop.cookies"] = {name: value.strip().strip('"') for name, eq, value in pairs if eq and name}
    return request.environ["shop.cookies"]


class Guard:
    """The browser id (signed, so only ids this shop issued count), CSRF protection and response headers."""

    def __init__(self, config, secret):
        self.secret, self.secure, self.origin, self.proxy = secret, config.secure, config.base_url, config.trusted_proxy
        # __Host- cookies can only be set over https, for this host and path "/": no subdomain can plant one.
        self.prefix = "__Host-" if config.secure else ""
        # When the shop is this machine (the default BASE_URL), its other names for itself (localhost for 127.0.0.1):
        # cookies and forms work at one origin only, the one Stripe sends shoppers back to.
        base = urlsplit(config.base_url)
        names = {(f"[{name}]" if ":" in name else name) + (f":{base.port}" if base.port else "") for name in LOOPBACK}
        self.aliases = names - {base.netloc} if base.netloc in names else set()
        # No script anywhere; forms post to the shop, which sends the browser on to Checkout (303), and Chromium holds
        # that redirect to form-action too. Checkout's page is on checkout.stripe.com or on the merchant's custom
        # domain (https://docs.stripe.com/payments/checkout/custom-domains), which the shop cannot know: any https
        # origin; with a Stripe-compatible test server (http), any http origin too. /admin's forms stay in the shop.
        targets = "'self' https:" + (" http:" if config.stripe_api_base.startswith("http:") else "")
        csp = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action ")
        self.admin_csp = csp + "'self'"
        self.security_headers = {
            "Content-Security-Policy": csp + targets, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(self)",
            **({"Strict-Transport-Security": "max-age=63072000; includeSubDomains"} if config.secure else {})}

    def sign(self, purpose, value):
        """A MAC of `value` for `purpose` with the shop's secret: what only this shop can have written."""
        mac = hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def browser_id(self, request, response):
        """This browser's id from its `sid` cookie; a missing, forged or made-up one gets a new id."""
        sid = request.environ.get("shop.sid") or self.valid_sid(request)
        if sid is None:
            nonce = secrets.token_urlsafe(18)
            sid = f"{nonce}.{self.sign('sid', nonce)}"
            self.set_cookie(response, "sid", sid, max_age=MONTH)
        request.environ["shop.sid"] = sid
        return sid

    def valid_sid(self, request):
        """The browser's sid if this shop signed it, else None."""
        nonce, _, mac = cookies(request).get(self.prefix + "sid", "").partition(".")
        signed = nonce and hmac.compare_digest(mac.encode(), self.sign("sid", nonce).encode())
        return f"{nonce}.{mac}" if signed else None

    def token(self, request, response):
        """The CSRF token for this browser's forms."""
        return self.sign("csrf", self.browser_id(request, response))

    def client_address(self, request):
        """The client's address: the peer's, or, when the peer is TRUSTED_PROXY, the one that proxy appended to
        X-Forwarded-For (what came before it, anyone can write)."""
        peer = request.environ.get("REMOTE_ADDR") or "-"
        forwarded = request.environ.get("HTTP_X_FORWARDED_FOR", "").rpartition(",")[2].strip()
        return forwarded if self.proxy and peer == self.proxy and forwarded else peer

    def client(self, request):
        """The client as the address limits count it (an IPv6 address by its /64), signed: the ledger keeps no address."""
        return self.sign("client", counted(self.client_address(request)))

    def elsewhere(self, request):
        """The same page at the shop's own address when it was asked for under another name of this machine."""
        raw = request.environ.get("bottle.raw_path", "")  # the path's bytes as sent (latin-1), before bottle's decoding
        if (request.method in ("GET", "HEAD") and request.environ.get("HTTP_HOST", "").lower() in self.aliases
                and raw.startswith("/")):  # never `@evil.example/` or `*` after the origin
            path = quote(raw.encode("latin-1"), safe="/:@!$&'()*+,;=~")
            query = quote(request.environ.get("QUERY_STRING", "").encode("latin-1"), safe="/?:@!$&'()*+,;=~%")
            return self.origin + path + ("?" + query if query else "")
        return None

    def check(self, request):
        """Refuse (403) a state-changing request from another site, or without this browser's token."""
        # Browsers say where a request comes from: https://developer.mozilla.org/docs/Web/HTTP/Headers/Sec-Fetch-Site
        site, origin = request.environ.get("HTTP_SEC_FETCH_SITE"), request.environ.get("HTTP_ORIGIN")
        if site and site not in ("same-origin", "none"):
            raise ShopError(403, FORBIDDEN, detail="Sec-Fetch-Site not same-origin")
        if origin and origin != "null" and origin != self.origin:
            raise ShopError(403, ELSEWHERE.format(self.origin), detail="foreign Origin")
        if self.prefix + "sid" not in cookies(request):  # blocked, or expired since the page was loaded
            raise ShopError(403, NO_COOKIE, detail="no sid cookie")
        sid, sent = self.valid_sid(request), request.forms.get("csrf_token") or ""
        if sid is None or not hmac.compare_digest(self.sign("csrf", sid).encode(), sent.encode("utf-8", "replace")):
            raise ShopError(403, FORBIDDEN, detail="missing or wrong csrf token or sid")

    def set_cookie(self, response, name, value, **options):
        """Every cookie of this shop: HttpOnly, SameSite=Lax, and Secure with the __Host- prefix on https."""
        response.set_cookie(self.prefix + name, value, path="/", httponly=True, samesite="lax", secure=self.secure,
                            **options)

    def delete_cookie(self, response, name):
        self.set_cookie(response, name, "", max_age=-1, expires=0)  # as bottle's delete_cookie, with our attributes

    def headers(self, response, path):
        """The security headers every response carries, and no caching unless the route allowed it."""
        for name, value in self.security_headers.items():
            response.set_header(name, value)
        if admin_page(path):
            response.set_header("Content-Security-Policy", self.admin_csp)
        response.headers.setdefault("Cache-Control", "no-store")


def admin_page(path):
    """Whether a path is /admin or one of its pages (not /administrator)."""
    return path == "/admin" or path.startswith("/admin/")


def counted(address):
    """The address the limits count: for IPv6 its /64, one subscriber's network (each of its 2**64 addresses
    theirs to use, so counting each alone would allow as many guesses); for an IPv4-mapped one its IPv4 address;
    else the address itself. A port some proxies add ("203.0.113.7:51234", "[2001:db8::1]:443") is no part of it."""
    host = address
    if address.startswith("["):
        host = address[1:].partition("]")[0]
    elif address.count(":") == 1:  # an IPv6 address has two or more
        host = address.partition(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # "-" (no peer address)
        return address
    if ip.version == 6:
        return str(ip.ipv4_mapped or ipaddress.ip_network((ip, 64), strict=False))
    return host
