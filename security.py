"""What keeps shoppers safe: the browser cookie, CSRF tokens, and security headers on every response."""

import base64
import hmac
import os
import re
import secrets
from urllib.parse import urlsplit

from settings import ShopError

SID_COOKIE = "sid"
_SID = re.compile(r"[A-Za-z0-9_-]{32,64}")
FORBIDDEN = ("This form has expired or did not come from this shop, so nothing was changed. "
             "Please go back, reload the page and try again.")


def load_secret(data_dir):
    """The shop's signing secret, made once and kept in DATA_DIR (shared by all workers)."""
    path = data_dir / "secret_key"
    try:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value.encode()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    # O_EXCL: when two workers start at once, one writes and the other reads its value.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value.encode()


_SID_BYTES, _SIDS_PER_READ = 24, 64
TOKENS_KEPT = 4096  # CSRF tokens kept per Guard: about 1 MB at most
_fresh_sids = []  # made from one os.urandom read at a time; never shared with a forked child (below)


def new_sid(guard=None):
    """A new random browser id for the `sid` cookie (as secrets.token_urlsafe(24) makes it).

    guard: the Guard that will need the ids' CSRF tokens; it makes them for each batch of ids at once."""
    # os.urandom lets go of the interpreter lock for its system call; with waitress's threads busy, winning it
    # back cost more than a whole cached page (bench/run.py figure 1), so one call makes 64 ids.
    try:
        return _fresh_sids.pop()  # atomic: no two threads get the same id
    except IndexError:
        pass
    block = os.urandom(_SID_BYTES * _SIDS_PER_READ)
    made = [base64.urlsafe_b64encode(block[i:i + _SID_BYTES]).decode() for i in range(0, len(block), _SID_BYTES)]
    if guard is not None:
        for sid in made:
            guard.token_for(sid)
    sid = made.pop()
    _fresh_sids.extend(made)
    return sid


# A forked worker must not hand out the ids its parent (or a sibling) already holds.
os.register_at_fork(after_in_child=_fresh_sids.clear)


class Guard:
    """Per-app CSRF protection (a token tied to the `sid` cookie) and response headers."""

    def __init__(self, config, secret):
        self.secret = secret
        self._mac = hmac.new(secret, digestmod="sha256")
        self._tokens = {}  # browser id: CSRF token, for the browsers seen lately (TOKENS_KEPT at most)
        self.origin = _origin(config.base_url)
        self.secure = config.secure
        form_targets = ["'self'", "https://checkout.stripe.com"]
        if config.stripe_api_base:
            form_targets.append(_origin(config.stripe_api_base))
        # No inline script anywhere; forms may post to ourselves and (via 303) to Stripe Checkout.
        # https://docs.stripe.com/security/guide#content-security-policy
        self.csp = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                    f"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action {' '.join(form_targets)}")

    def browser_id(self, request, response):
        """This browser's random id from the `sid` cookie, set when missing or malformed."""
        sid = request.environ.get("shop.sid")
        if sid:
            return sid
        sid = request.get_cookie(SID_COOKIE) or ""
        if not _SID.fullmatch(sid):
            sid = new_sid(self)
            self.set_cookie(response, SID_COOKIE, sid, max_age=60 * 60 * 24 * 30)
        request.environ["shop.sid"] = sid
        return sid

    def token(self, request, response):
        """The CSRF token to put in this browser's forms."""
        return self.token_for(self.browser_id(request, response))

    def token_for(self, sid):
        """The CSRF token for a browser id."""
        token = self._tokens.get(sid)
        if token is None:
            # A copy of an HMAC already keyed: not hmac.digest(), whose one-shot OpenSSL call lets go of the
            # interpreter lock, and under load winning it back cost far more than the HMAC (figure 1). Kept:
            # in the server one HMAC cost about 5 µs of a page's 120 (OpenSSL's contexts are made anew each time).
            mac = self._mac.copy()
            mac.update(sid.encode())
            token = mac.hexdigest()[:40]
            if len(self._tokens) >= TOKENS_KEPT:
                self._tokens.clear()  # atomic; browsers still coming back get theirs made once more
            self._tokens[sid] = token
        return token

    def check(self, request):
        """Refuse (403) a state-changing request from another site or without this browser's token."""
        # Browsers say where a request comes from: https://developer.mozilla.org/docs/Web/HTTP/Headers/Sec-Fetch-Site
        site = _header(request, "Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            raise ShopError(403, FORBIDDEN, detail="Sec-Fetch-Site not same-origin")
        origin = _header(request, "Origin")
        if origin and origin != "null" and origin != self.origin:
            raise ShopError(403, FORBIDDEN, detail="foreign Origin")
        sid = request.get_cookie(SID_COOKIE) or ""
        sent = (request.forms.get("csrf_token") or "").strip()
        if not _SID.fullmatch(sid) or not sent:
            raise ShopError(403, FORBIDDEN, detail="missing csrf token or cookie")
        expected = self.token_for(sid)
        # compare_digest raises TypeError on non-ASCII str: compare bytes
        if not hmac.compare_digest(expected.encode(), sent.encode("utf-8", "surrogateescape")):
            raise ShopError(403, FORBIDDEN, detail="bad csrf token")

    def set_cookie(self, response, name, value, **options):
        """Set a cookie the way every cookie of this shop is set: HttpOnly, SameSite=Lax, Secure on https."""
        response.set_cookie(name, value, path="/", httponly=True, samesite="lax", secure=self.secure, **options)

    def delete_cookie(self, response, name):
        """Remove a cookie (with the same attributes it was set with)."""
        response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=self.secure)

    def headers(self, response):
        """Add the security headers every response carries."""
        response.set_header("Content-Security-Policy", self.csp)
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("X-Frame-Options", "DENY")
        response.set_header("Referrer-Policy", "strict-origin-when-cross-origin")
        response.set_header("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(self)")
        if self.secure:
            response.set_header("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        if "Cache-Control" not in response.headers:
            response.set_header("Cache-Control", "no-store")


def _header(request, name):
    """A request header exactly as the server passed it: bottle's get_header raises on bytes that are not UTF-8."""
    return request.environ.get("HTTP_" + name.upper().replace("-", "_"))


def _origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
