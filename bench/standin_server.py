"""`python -m standin`, unchanged, with two things the bench needs from a Stripe that the standalone server lacks.

    python bench/standin_server.py --port P --data-dir D --public-url URL --latency-ms 400 [any python -m standin flag]

1. A thread per connection, with HTTP/1.1 keep-alive (the standard library's wsgiref and socketserver), instead
   of waitress. The stripe SDK keeps one keep-alive connection per app thread, so a shop with 128 request threads
   holds 128 open; waitress caps them at 100 and its loop visits every open one each time it wakes, which made
   the stand-in spend 4 ms of CPU per call (0.6 ms of its own work) on the two cores the apps under test share.
   Stripe's servers cost the shop nothing, so here Stripe's cost should not grow with the connections held.
2. GET /_bench/calls: the stand-in's own `calls` counter ({"POST /v1/checkout/sessions": n, ...}), read over HTTP.
"""

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from socketserver import ThreadingMixIn  # noqa: E402
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer  # noqa: E402

import waitress  # noqa: E402

import standin.__main__ as standin_main  # noqa: E402


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


class KeepAlive(WSGIRequestHandler):
    """wsgiref's handler, answering every request of a keep-alive connection (wsgiref's own answers one)."""
    protocol_version = "HTTP/1.1"

    def handle(self):
        self.close_connection = False
        while not self.close_connection:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or not self.parse_request():
                return
            handler = ServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True)
            handler.request_handler, handler.http_version = self, "1.1"
            handler.run(self.server.get_app())

    def log_message(self, *args):
        pass


class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 1024


def serve_threaded(app, host, port, **_):
    """Serve until interrupted; takes waitress.serve's arguments and ignores the ones for waitress."""
    server = Threaded((host, port), KeepAlive)
    server.set_app(app)
    server.serve_forever()


def main(argv=None):
    standin_main.make_server_app = with_counter(standin_main.make_server_app)
    serve = waitress.serve
    waitress.serve = serve_threaded
    try:
        standin_main.main(argv)
    finally:
        waitress.serve = serve


if __name__ == "__main__":
    main()
