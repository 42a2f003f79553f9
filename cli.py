"""The command line: `python shop.py` serves; `check` validates; merchant commands manage orders."""

import argparse
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import threading
import time

from dotenv import load_dotenv

from settings import ROOT, SETTINGS, ConfigError, load_config

log = logging.getLogger("shop")
access_log = logging.getLogger("shop.access")


def setup_logging():
    """One plain line per event on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    # payments.call logs each Stripe call once (endpoint, status, duration, Request-Id); the SDK's own INFO
    # lines would add two more per call, naming api.stripe.com even when the stand-in answered.
    logging.getLogger("stripe").setLevel(logging.WARNING)


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
    return args.run(config, args)


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


class AccessLog:
    """WSGI middleware: one line per request with method, path, status, duration and request id."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        start = time.monotonic()
        request_id = environ.get("shop.request_id") or environ.setdefault("shop.request_id", os.urandom(8).hex())
        seen = {}

        def recording_start(status, headers, exc_info=None):
            seen["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, recording_start)
        finally:
            access_log.info("%s %s status=%s duration_ms=%.1f request_id=%s", environ.get("REQUEST_METHOD"),
                            environ.get("PATH_INFO", "")[:200].encode("unicode_escape").decode(),
                            seen.get("status", "-"), (time.monotonic() - start) * 1000, request_id)


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
        return _run(app, sock, config)
    _release(app)  # SQLite connections must not cross fork(): each worker opens its own
    return Prefork(config, sock).run()


def waitress_options(config):
    """The waitress settings of every server process (bench/bare.py serves its baseline with the same)."""
    return dict(threads=config.threads, ident="shop", _quiet=True, clear_untrusted_proxy_headers=True,
                max_request_body_size=1024 * 1024, max_request_header_size=64 * 1024)


def _run(app, sock, config, balance=None):
    import waitress
    shop = app.config["shop"]
    if shop.standin is not None:
        shop.standin.start_webhook_sender()
    try:
        options = waitress_options(config)
        options.pop("_quiet")  # serve()'s switch; create_server prints nothing anyway
        server = waitress.create_server(AccessLog(app), sockets=[sock], **options)
        if balance is not None:
            balance.attach(server)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if shop.standin is not None:
            shop.standin.stop_webhook_sender()
        log.info("stopped")
    return 0


def _release(app):
    shop = app.config["shop"]
    shop.ledger.close()
    if shop.standin is not None:
        shop.standin.close()


class Prefork:
    """WORKERS processes accepting on the one inherited listening socket; a worker that dies is replaced.

    The kernel hands each new connection to whichever worker accepts first, so an idle worker takes it.
    Each worker has its own app: its own catalog reload (a stat per request), SQLite connections and threads.
    """

    RESTARTS = 10  # more deaths than this within a minute means something is wrong: stop instead

    def __init__(self, config, sock):
        self.config, self.sock = config, sock
        self.parent = os.getpid()
        self.workers = {}  # pid: slot in self.balance
        self.balance = Balance(config.workers)
        self.deaths = []
        self.stopping = False

    def run(self):
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGALRM, self.kill)
        for slot in range(self.config.workers):
            self.spawn(slot)
        code = 0
        while self.workers:
            try:
                pid, status = os.wait()  # retried after a signal handler returns (PEP 475)
            except ChildProcessError:
                break
            if pid not in self.workers:
                continue
            slot = self.workers.pop(pid)
            if self.stopping:
                continue
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < 60] + [now]
            log.error("worker %d %s", pid, _describe(status))
            if len(self.deaths) > self.RESTARTS:
                log.error("workers keep dying: stopping")
                code = 1
                self.stop(None, None)
            else:
                self.spawn(slot)
        signal.alarm(0)
        log.info("stopped")
        return code

    def spawn(self, slot):
        self.balance.reset(slot)
        pid = os.fork()
        if pid:
            self.workers[pid] = slot
            return
        code = 1
        try:  # the worker: Ctrl-C or SIGTERM ends waitress's loop; it exits if the parent goes away
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, _interrupt)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            threading.Thread(target=_watch_parent, args=(self.parent,), daemon=True).start()
            from shop import make_app
            code = _run(make_app(self.config), self.sock, self.config, self.balance.slot(slot))
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def stop(self, signum, frame):
        """Ask every worker to finish; any still running after 10 s is killed."""
        self.stopping = True
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        signal.alarm(10)

    def kill(self, signum, frame):
        self.stopping = True
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Balance:
    """Keeps the workers' shares of open connections within one of each other.

    With one listening socket, the kernel gives each new connection to whichever worker accepts first, so a
    burst of them (a proxy's or a load generator's keep-alive pool) can land on one worker and stay there
    while the others idle. Each worker publishes its number of connections in shared memory once per turn
    of its event loop, and leaves the listening socket to the others while it has more than the least
    busy live one. A worker that has not published for 2 s (stuck or gone) does not count.
    """

    STALE = 2.0

    def __init__(self, workers):
        self.n = workers
        self.shared = mmap.mmap(-1, 16 * workers)  # per slot: connections (q), last update (d); kept by fork()

    def reset(self, slot):
        struct.pack_into("qd", self.shared, 16 * slot, 0, 0.0)

    def slot(self, slot):
        return _BalancedSlot(self, slot)


class _BalancedSlot:
    def __init__(self, balance, slot):
        self.balance, self.slot = balance, slot

    def attach(self, server):
        """Wrap the waitress server's readable(): asyncore asks it every turn whether to watch the socket."""
        shared, stale, entry = self.balance.shared, self.balance.STALE, struct.Struct("qd")
        mine_at = 16 * self.slot
        others_at = [16 * j for j in range(self.balance.n) if j != self.slot]
        readable = server.readable

        def balanced():
            accepting = readable()  # also waitress's own housekeeping: always called
            now = time.monotonic()
            mine = len(server._map)  # this worker's connections, plus its listening socket and trigger
            entry.pack_into(shared, mine_at, mine, now)
            if not accepting:
                return False
            for at in others_at:
                count, seen = entry.unpack_from(shared, at)
                if count < mine and now - seen < stale:
                    return False  # a live worker with fewer connections takes the next one
            return True

        server.readable = balanced


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _watch_parent(parent):
    """A worker never outlives the process that started it (it would keep the port answering)."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def _describe(status):
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}; starting another"
    return f"exited with code {os.waitstatus_to_exitcode(status)}; starting another"
