"""The baseline: a bare WSGI app that replays recorded responses byte for byte, under the shop's waitress settings.

    python bench/bare.py --port 8001 --responses responses.json

responses.json maps "GET /path?query" (plus " +cookie" when the request carries a Cookie header) to
{"status": "200 OK", "headers": [[name, value], ...], "body_b64": "..."}.
"""

import argparse
import base64
import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_app(responses):
    """A WSGI app with nothing in it but a dict lookup."""
    table = {}
    for key, r in responses.items():
        table[key] = (r["status"], [tuple(h) for h in r["headers"]], [base64.b64decode(r["body_b64"])])
    missing = ("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")], [b""])

    def app(environ, start_response):
        key = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
        if environ.get("QUERY_STRING"):
            key += "?" + environ["QUERY_STRING"]
        if "HTTP_COOKIE" in environ:
            key += " +cookie"
        status, headers, body = table.get(key, missing)
        start_response(status, headers)
        return body
    return app


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--responses", required=True)
    args = p.parse_args(argv)
    import waitress
    from cli import setup_logging, waitress_options
    from settings import load_config
    setup_logging()  # waitress's own log lines cost the same as under the shop
    with open(args.responses) as f:
        app = make_app(json.load(f))
    # The same socket setup and waitress settings as `python shop.py`, so only the app differs.
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    config = load_config()
    from workers import place
    place(config)  # on one CPU, as `python shop.py` runs
    try:
        waitress.serve(app, sockets=[sock], **waitress_options(config))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
