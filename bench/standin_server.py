"""`python -m standin`, unchanged, with two things the bench needs from a Stripe that the standalone server lacks.

    python bench/standin_server.py --port P --data-dir D --public-url URL --latency-ms 400 [any python -m standin flag]

1. No cap of 100 open connections. `python -m standin` serves with waitress's default connection_limit (100);
   the stripe SDK keeps one keep-alive connection per thread, so a shop with 128 request threads holds 128, the
   stand-in stops accepting at 100 and the extra calls wait for an idle connection to time out (120 s). Stripe has
   no such cap, so here the limit is 4,000 (and poll() instead of select(), which cannot watch more than 1,024).
2. GET /_bench/calls: the stand-in's own `calls` counter ({"POST /v1/checkout/sessions": n, ...}), read over HTTP.
"""

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import waitress  # noqa: E402

import standin.__main__ as standin_main  # noqa: E402

CONNECTION_LIMIT = 4000


def with_counter(make_server_app):
    """Wrap the stand-in's WSGI app so that GET /_bench/calls answers its call counter."""

    @functools.wraps(make_server_app)
    def make(standin):
        app = make_server_app(standin)

        def counted(environ, start_response):
            if environ.get("PATH_INFO") == "/_bench/calls":
                with standin._calls_lock:
                    body = json.dumps(dict(standin.calls)).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            return app(environ, start_response)
        return counted
    return make


def main(argv=None):
    standin_main.make_server_app = with_counter(standin_main.make_server_app)
    serve = waitress.serve
    waitress.serve = functools.partial(serve, connection_limit=CONNECTION_LIMIT, asyncore_use_poll=True)
    try:
        standin_main.main(argv)
    finally:
        waitress.serve = serve


if __name__ == "__main__":
    main()
