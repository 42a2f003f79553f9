"""A `stripe.HTTPClient` that calls the stand-in's WSGI API in-process (no sockets)."""
import io
import sys
from urllib.parse import unquote, urlsplit

import stripe
from stripe import APIConnectionError


class Headers(dict):
    """Response headers with case-insensitive lookup, as the SDK expects (`stripe-should-retry`, `request-id`)."""

    def __init__(self, pairs):
        super().__init__((k.lower(), v) for k, v in pairs)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class InProcessClient(stripe.HTTPClient):
    """Dispatches SDK requests to a WSGI app; `timeout` (seconds) bounds injected delays like a socket timeout."""

    name = "standin-in-process"

    def __init__(self, app, timeout=80.0):
        super().__init__()
        self.app = app
        self.timeout = timeout

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        """Run one request through the WSGI app; returns (body, status, headers) like the SDK's own clients."""
        parts = urlsplit(url)
        body = post_data.encode() if isinstance(post_data, str) else (post_data or b"")
        environ = {
            "REQUEST_METHOD": method.upper(), "SCRIPT_NAME": "", "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query, "SERVER_NAME": parts.hostname or "standin", "SERVER_PORT": str(parts.port or 443),
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0), "wsgi.url_scheme": parts.scheme or "https", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "standin.timeout": self.timeout, "standin.in_process": True,
        }
        for key, value in (headers or {}).items():
            name = key.upper().replace("-", "_")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + name] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"], captured["headers"] = int(status.split()[0]), response_headers

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        drop = environ.get("standin.drop")
        if drop:
            err = APIConnectionError(
                "Unexpected error communicating with Stripe (offline stand-in: "
                + ("connection reset by peer" if drop == "reset" else f"read timed out after {self.timeout}s") + ")",
                should_retry=True)
            raise err
        return data.decode("utf-8"), captured["status"], Headers(captured["headers"])

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        raise NotImplementedError("the offline stand-in does not serve streaming endpoints")

    def close(self):
        pass
