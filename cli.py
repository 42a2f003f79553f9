"""The command line: `python shop.py` serves; `check` validates; merchant commands manage orders."""

import argparse
import gc
import signal
import logging
import os
import socket
import sys
import warnings

from dotenv import load_dotenv

from logs import AccessLog, setup_logging
from settings import ROOT, SETTINGS, ConfigError, load_config

log = logging.getLogger("shop")


def parser():
    p = argparse.ArgumentParser(prog="shop.py", description="A web shop on Stripe Checkout.")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the shop (the default)")
    for q in (p, serve):
        q.add_argument("--host", help="listen address (HOST)")
        q.add_argument("--port", type=int, help="listen port (PORT)")
        q.add_argument("--workers", type=int, help="server processes sharing one socket (WORKERS)")
    sub.add_parser("check", help="validate catalog.json and the configuration; exit 1 on any problem")
    sub.add_parser("settings", help="print the configuration table")
    try:
        import merchant  # the merchant's order commands
        merchant.add_commands(sub)
    except ImportError:
        pass
    return p


def main(argv):
    """Run one command; returns the exit code."""
    load_dotenv(ROOT / ".env")
    setup_logging()
    args = parser().parse_args(argv)
    command = args.command or "serve"
    if command == "settings":
        for s in SETTINGS:
            print(f"{s.env:22} default {s.default!r:16} {s.help}")
        return 0
    overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k, None)) is not None}
    try:
        config = load_config(overrides)
    except ConfigError as e:
        print(f"configuration: {e.message}", file=sys.stderr)
        return 2
    if command == "check":
        return check(config)
    if command == "serve":
        return serve(config)
    try:
        return args.run(config, args)
    except BrokenPipeError:  # `orders | head` stopped reading: end quietly, as the Python docs advise
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe (the flush at exit must not fail again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def check(config):
    """Print every problem with the catalog and configuration; 0 when there are none."""
    from catalog import problems
    from shop import PUBLIC
    found = list(problems(config.catalog, PUBLIC))
    if config.mode != "offline" and not config.stripe_webhook_secret:
        found.append("STRIPE_WEBHOOK_SECRET: not set, so POST /webhook refuses every event "
                     "(set it to the endpoint's signing secret, whsec_...)")
    for p in found:
        print(p)
    if found:
        print(f"{len(found)} problem(s) found.", file=sys.stderr)
        return 1
    print(f"ok: {config.catalog.name} is valid; mode {config.mode}; base URL {config.base_url}")
    return 0


def serve(config):
    """Serve with waitress on HOST:PORT until Ctrl-C; with WORKERS > 1, that many processes."""
    from catalog import CatalogError
    from shop import make_app
    try:
        app = make_app(config)
    except CatalogError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print("The shop cannot start until the catalog is fixed (see `python shop.py check`).", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as e:
        print(f"cannot listen on {config.host}:{config.port}: {e.strerror}", file=sys.stderr)
        return 2
    sock.listen(1024)
    mode = {"offline": "offline test mode (built-in Stripe stand-in)", "test": "Stripe test mode",
            "live": "Stripe LIVE mode"}[config.mode]
    log.info("serving %s at %s (%s, %d worker(s))", app.config["shop"].catalog().shop_name, config.base_url,
             mode, config.workers)
    if config.workers <= 1:
        # SIGTERM (systemd, a container's stop, kill) stops as cleanly as Ctrl-C: the webhook sender ends
        # and pending log lines are written.
        from workers import stop_on_signal
        signal.signal(signal.SIGTERM, stop_on_signal)
        return _run(app, sock, config)
    app.config["shop"].close()  # SQLite connections must not cross fork(): each worker opens its own
    from workers import Prefork
    return Prefork(config, sock).run()


# A response of up to this many bytes is sent by waitress's main loop in one send() once its request is done.
# Waitress's default (send_bytes=1) has the request thread send each write at once: the headers and the page
# in two send() calls, each a trip for the interpreter lock with the other threads. Under load that was a third
# of GET /'s throughput (bench/run.py figures 1 and 3). Larger responses still go out as they are written.
SEND_BUFFER = 64 * 1024


def waitress_options(config):
    """The waitress settings of every server process (bench/bare.py serves its baseline with the same)."""
    options = dict(threads=config.threads, ident="shop", _quiet=True, clear_untrusted_proxy_headers=True,
                   max_request_body_size=1024 * 1024, max_request_header_size=64 * 1024)
    from waitress.adjustments import Adjustments
    if hasattr(Adjustments, "send_bytes"):  # deprecated in waitress 2 but honoured; a release without it still serves
        warnings.filterwarnings("ignore", "send_bytes will be removed", DeprecationWarning, "waitress.adjustments")
        options["send_bytes"] = SEND_BUFFER
    return options


def create_server(app, sock, config, balance=None):
    """A waitress server for `app` on the listening socket, with the shop's settings; with `balance`, it shares
    connections with the other workers (workers.Balance). The bench's bare baseline is made here too."""
    import waitress
    options = waitress_options(config)
    options.pop("_quiet")  # serve()'s switch; create_server prints nothing anyway
    server = waitress.create_server(app, sockets=[sock], **options)
    if balance is not None:
        balance.attach(server)
    return server


def _run(app, sock, config, balance=None, slot=0, first_cpu=None):
    from workers import place
    shop = app.config["shop"]
    cpu = place(config, slot, first_cpu)
    if cpu is not None:
        log.info("server process %d runs on CPU %d (PIN_CPUS=off lets the kernel move it)", os.getpid(), cpu)
    if shop.standin is not None:
        shop.standin.start_webhook_sender()
    # Everything made at start-up (the stripe SDK alone is tens of thousands of objects) lives as long as the
    # process: take it out of the garbage collector's full passes. https://docs.python.org/3/library/gc.html#gc.freeze
    gc.freeze()
    try:
        create_server(AccessLog(app), sock, config, balance).run()
    except KeyboardInterrupt:
        pass
    finally:
        if shop.standin is not None:
            shop.standin.stop_webhook_sender()
        log.info("stopped")
    return 0
