"""Run the stand-in on its own: `python -m standin --port 12111 --data-dir DIR --public-url URL` (API + pay page)."""
import argparse
import logging
import sys

import bottle

from .core import MAX_LATENCY_MS, StandIn, parse_latency
from .forms import MAX_BODY

HEADERS = (("Content-Security-Policy", "default-src 'self'; img-src 'self' data: https: http:; object-src 'none'; "
                                       "base-uri 'none'; frame-ancestors 'none'"),
           ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "same-origin"))


def make_server_app(standin):
    """One WSGI app: /v1/* to the API, everything else (pay page and its stylesheet) to a small Bottle app."""
    pages = bottle.Bottle()
    standin.install_pay_page(pages)

    @pages.hook("after_request")
    def headers():  # in the shop, the shop's own headers; alone, these (product images may be anywhere)
        for name, value in HEADERS:
            bottle.response.set_header(name, value)

    @pages.get("/")
    def index():
        bottle.response.content_type = "text/plain; charset=utf-8"
        return "Offline Stripe stand-in (test mode). API under /v1, payment pages under /offline-checkout/.\n"

    def app(environ, start_response):
        if not environ.get("PATH_INFO", "").startswith("/v1/"):
            return pages(environ, start_response)
        result = standin.wsgi_api(environ, start_response)
        if environ.get("standin.drop") == "reset":
            # A fault asked for a dropped connection: waitress closes the socket without sending anything.
            from waitress.channel import ClientDisconnected
            raise ClientDisconnected("fault injection: connection reset")
        return result
    return app


def latency(text):
    """--latency-ms: refused by argparse with the reason."""
    try:
        return parse_latency(text, "the latency")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None):
    """Parse arguments and serve with waitress until interrupted."""
    ap = argparse.ArgumentParser(prog="python -m standin", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=12111)
    ap.add_argument("--data-dir", default="data/standin", help="where standin.sqlite3 lives")
    ap.add_argument("--public-url", default=None, help="base URL browsers use to reach this server")
    ap.add_argument("--webhook-url", default=None, help="POST signed events here, e.g. http://127.0.0.1:8000/webhook")
    ap.add_argument("--webhook-secret", default=None, help="signing secret (default: generated in the data dir)")
    ap.add_argument("--events", default=None,
                    help="comma-separated event types the webhook URL is subscribed to (default: every event)")
    ap.add_argument("--async-delay", type=float, default=5.0, help="seconds before delayed test payments settle")
    ap.add_argument("--latency-ms", type=latency, default=None, metavar="N",
                    help=f"milliseconds every API request waits before it is answered, 0 to {MAX_LATENCY_MS} "
                         "(default: $STANDIN_LATENCY_MS, else 0)")
    ap.add_argument("--threads", type=int, default=64,
                    help="requests answered at once (default 64); with --latency-ms each holds one for its wait")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    try:
        s = StandIn(args.data_dir, public_url=public_url, webhook_url=args.webhook_url,
                    webhook_secret=args.webhook_secret, async_delay=args.async_delay,
                    enabled_events=args.events.split(",") if args.events else None, latency_ms=args.latency_ms)
    except ValueError as e:  # STANDIN_LATENCY_MS or STANDIN_FAULTS: a usage error, not a traceback
        ap.error(str(e))
    s.start_webhook_sender()
    import waitress
    slow = f", {s.latency_ms} ms latency" if s.latency_ms else ""
    print(f"stand-in serving http://{args.host}:{args.port} (data in {s.store.path}{slow})", file=sys.stderr, flush=True)
    try:
        # The stripe SDK keeps a connection open per shop thread (128 each): waitress's default limit of 100
        # would shut shoppers out of the pay page.
        waitress.serve(make_server_app(s), host=args.host, port=args.port, threads=args.threads,
                       ident="standin", max_request_body_size=2 * MAX_BODY, connection_limit=1000)
    finally:
        s.close()


if __name__ == "__main__":
    main()
