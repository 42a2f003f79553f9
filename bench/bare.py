"""The baseline: a bare WSGI app that replays recorded responses byte for byte, under the shop's waitress settings.

    python bench/bare.py --port 8001 --responses responses.json [--workers N]

responses.json maps "GET /path?query" (plus " +cookie" when the request carries a Cookie header) to
{"status": "200 OK", "headers": [[name, value], ...], "body_b64": "..."}.
"""

import argparse
import base64
import dataclasses
import json
import os
import signal
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
    p.add_argument("--workers", type=int, default=1, help="processes on the one listening socket, as the shop's")
    args = p.parse_args(argv)
    from cli import setup_logging
    from servers import LIFETIME
    from settings import load_config
    from workers import Balance, current_cpu
    setup_logging()  # waitress's own log lines cost the same as under the shop
    with open(args.responses) as f:
        app = make_app(json.load(f))
    # The same socket setup and waitress settings as `python shop.py`, so only the app differs.
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    config = dataclasses.replace(load_config(), workers=args.workers)
    first = current_cpu()
    balance = Balance(args.workers)
    for slot in range(1, args.workers):  # forked after binding: the workers inherit the socket, as the shop's do
        if os.fork() == 0:
            signal.alarm(LIFETIME)  # fork() does not pass on the alarm servers.py set: a lost worker still ends
            serve(app, sock, config, balance.slot(slot), slot, first)
            os._exit(0)
    serve(app, sock, config, balance.slot(0), 0, first)
    return 0


def serve(app, sock, config, balance, slot, first):
    """One server process, placed on a CPU and sharing connections as the shop's worker in the same slot does."""
    from cli import create_server
    from workers import place
    place(config, slot, first)
    try:  # as the shop: one process has no one to share connections with
        create_server(app, sock, config, balance if config.workers > 1 else None).run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
