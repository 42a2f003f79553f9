"""The baseline of figure 2: a bare WSGI app that answers every request with one recorded response, byte for byte,
under the waitress settings `python shop.py` uses (THREADS, CONNECTION_LIMIT, CHANNEL_TIMEOUT from the environment).

    python bench/bare.py --port 8001 --response response.json

response.json: {"status": "200 OK", "headers": [[name, value], ...], "body": "<latin-1 text>"}.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_app(recorded):
    status, headers = recorded["status"], [tuple(h) for h in recorded["headers"]]
    body = [recorded["body"].encode("latin-1")]

    def app(environ, start_response):
        start_response(status, headers)
        return body
    return app


def main(argv=None):
    import waitress

    from webshop.settings import load_config
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--response", required=True)
    args = p.parse_args(argv)
    config = load_config({"port": args.port})
    app = make_app(json.loads(Path(args.response).read_text()))
    # The same arguments as webshop.merchant.serve: only the app differs.
    server = waitress.create_server(
        app, host="127.0.0.1", port=args.port, threads=config.threads, ident="shop",
        connection_limit=config.connection_limit, channel_timeout=config.channel_timeout, asyncore_use_poll=True,
        clear_untrusted_proxy_headers=True, max_request_body_size=1 << 20, max_request_header_size=64 << 10)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
