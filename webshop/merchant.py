"""The command line: `python shop.py` serves; `check`, `settings`, `migrate`; the merchant's order commands."""

import argparse
import contextlib
import difflib
import json
import logging
import logging.handlers
import os
import queue
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

from . import mail
from .catalog import CatalogError, CatalogStore, first_problems, load_catalog, money
from .fulfilment import CSV_ROWS, Orders, write_csv
from .ledger import MAX_MAIL_ATTEMPTS, STATUSES, Ledger, reach
from .payments import call, expiry, make_client
from .reconcile import reconcile
from .security import LOOPBACK
from .settings import ROOT, SETTINGS, ConfigError, ShopError, load_config

log = logging.getLogger("shop")
JSON_FIELDS = ("id status session_id payment_intent currency amount_subtotal amount_shipping amount_tax amount_total "
               "amount_refunded customer_email dispute_status created updated fulfilled_at items amount_discount "
               "promotion_code terms_accepted tax_ids restocked").split()


def bounded(low, high, unit=""):
    """An argparse type: a whole number from low to high (exit 2 with a message otherwise)."""
    def check(text):
        text = text.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 20 and low <= int(text) <= high):  # not "٣", "1e3"
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}{unit}, got {text!r}")
        return int(text)
    return check


def duration(text):
    """'24h', '7d', '90m', '3600s' (or plain hours) as seconds, at most 400 days."""
    text = (text or "").strip()
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:])
    number = text[:-1] if unit else text
    if not (number.isascii() and number.isdigit() and len(number) <= 8) or int(number) * (unit or 3600) > 400 * 86400:
        raise argparse.ArgumentTypeError(f"expected a duration up to 400d, like 24h, 7d or 90m, got {text!r}")
    return int(number) * (unit or 3600)


def parser():
    p = argparse.ArgumentParser(prog="shop.py", description="A web shop on Stripe Checkout.")
    sub = p.add_subparsers(dest="command")
    for q, default in ((p, None), (sub.add_parser("serve", help="serve the shop with waitress (the default)"),
                                   argparse.SUPPRESS)):  # so that `--port 8080 serve` keeps the port given
        q.add_argument("--host", default=default, help="listen address (HOST)")
        q.add_argument("--port", type=bounded(1, 65535), default=default, help="listen port (PORT)")
    sub.add_parser("check", help="validate catalog.json and the settings; exit 1 on a problem, 2 on bad settings, "
                   "3 when only Stripe did not answer")
    sub.add_parser("settings", help="print every setting with its value (secrets masked) and help")
    sub.add_parser("migrate", help="bring the database's schema up to date (serving does it too)")
    q = sub.add_parser("fulfilments", help="print the hand-off records as JSON lines, oldest first")
    q.add_argument("--json", action="store_true", help="JSON lines (the only format)")
    q.add_argument("--after", type=bounded(0, 2**62), default=0, help="only records after this id")
    q.add_argument("--follow", action="store_true", help="keep printing new records as they come")
    q = sub.add_parser("orders", help="list recent orders")
    q.add_argument("--status", choices=STATUSES, help="only orders with this status")
    q.add_argument("--limit", type=bounded(1, 100000), help="how many (default 50; with --csv, all, as /admin's)")
    form = q.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    form.add_argument("--csv", action="store_true", help="print CSV with a header row (spreadsheet-safe)")
    sub.add_parser("mail", help="send the emails waiting to go out now, back-off or not")
    sub.add_parser("outbox", help="list the emails not sent yet, with their attempts")
    q = sub.add_parser("order", help="show one order in full, with its history")
    q.add_argument("id")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = sub.add_parser("refund", help="refund a paid order through Stripe (what is left, or --amount)")
    q.add_argument("id")
    q.add_argument("--amount", type=bounded(1, 10**12, " in minor units (cents: 1250 for 12.50)"),
                   help="amount in minor units (cents), e.g. 500 for $5.00")
    q.add_argument("--restock", action="store_true", help="give the order's copies back to the stock")
    q.add_argument("--again", action="store_true", help="refund the same amount once more (without it, the same "
                   "command within 23 hours replays the first refund)")
    sub.add_parser("stock", help="list stock, copies held by open checkouts and sold, per product")
    q = sub.add_parser("reconcile", help="repair orders whose webhooks never arrived, from Stripe's sessions")
    q.add_argument("--since", type=duration, default=24 * 3600, help="how far back: 24h (default), 7d, 90m")
    q.add_argument("--quiet", action="store_true", help="print only repairs and warnings (cron mails any output)")
    sub.add_parser("expire", help="expire an order's open checkout so it can no longer be paid").add_argument("id")
    return p


def main(argv):
    """Run one command; returns the exit code."""
    from dotenv import load_dotenv
    try:
        load_dotenv(ROOT / ".env")
    except ValueError:  # not UTF-8, or a NUL byte in it: python-dotenv's own words come as a traceback
        return _fail(".env: cannot be read: it must be UTF-8 text with no NUL bytes", 2)
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # payments.call logs each Stripe call; the SDK's INFO lines would add two, naming api.stripe.com even offline
    logging.getLogger("stripe").setLevel(logging.WARNING)
    command = args.command or "serve"
    try:
        config = load_config({k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None})
    except ConfigError as e:
        return _fail("\n".join(f"configuration: {line}" for line in e.message.splitlines()), 2)
    if command in ("serve", "check", "settings"):
        return {"serve": serve, "check": check, "settings": show_settings}[command](config) or 0
    try:  # the shop's name signs the emails a command causes (reconcile); a broken catalog stops no command
        name = load_catalog(config.catalog, ROOT / "public").shop_name
    except CatalogError:
        name = None
    try:  # opening the ledger migrates it: all `migrate` does. The name is looked up when an email is written.
        ctx = Orders(config, shop_name=lambda: name or "Test shop")
    except Exception as e:  # noqa: BLE001 — an unreachable database, say: one line, no traceback
        return _fail(f"cannot open the shop's data: {cannot_open(config, e)}", 2)
    name = name or ctx.ledger.checkpoint("shop name")  # the catalog's last good one, as the shop kept it
    run = {"fulfilments": fulfilments, "orders": orders, "order": order, "refund": refund, "stock": stock,
           "reconcile": reconcile, "expire": expire, "mail": send_mail, "outbox": outbox, "migrate": lambda *_: 0}
    try:
        return run[command](ctx, args) or 0
    except ShopError as e:
        if e.code == "key_refused":  # running it again cannot help
            return _fail(f"Stripe refused STRIPE_SECRET_KEY ({e.detail}). Set a key Stripe accepts (Dashboard → "
                         "Developers → API keys), then run the command again.", 2)
        if e.code == "still_open":  # Stripe said no, and why: it may say yes later
            return _fail(f"{e.detail} Run it again in a minute.", 3)
        if e.status == 503 and e.detail == "RateLimitError":  # Stripe answered: not now
            return _fail("Stripe answered 429 (too many requests, or the object was busy), so the command stopped "
                         "there. Run it again in a minute.", 3)
        if e.status == 503:  # a request that lost its answer may still have been carried out at Stripe
            return _fail(f"Stripe did not answer ({e.detail or 'no answer'}), so the outcome is unknown. Run the same "
                         "command again in a minute: Stripe replays a request it already carried out (idempotency "
                         "key) instead of doing it twice.", 3)
        # 404 and 409: an unknown order, or one that cannot be refunded or expired (the message says why)
        return _fail(e.message if e.status in (404, 409) else f"Stripe refused: {e.detail or e.message}", 1)
    except CatalogError as e:  # `stock` reads the catalog: a broken one is named as `check` names it
        return _fail("\n".join(first_problems(e.problems)), 1)
    except (BrokenPipeError, KeyboardInterrupt):  # `orders | head` stopped reading, or Ctrl-C on --follow
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 — a full disk, say, is no bug: one line, as for Stripe's outages
        if not Ledger.unavailable(e):
            raise
        why = getattr(e, "sqlite_errorname", None) or getattr(e, "sqlstate", None) or type(e).__name__
        return _fail(f"The shop's database could not be used ({why}), so the command stopped there. Run it again "
                     "once it can (disk space, DATABASE_URL).", 3)
    finally:
        ctx.close()


def cannot_open(config, e):
    """Why the shop could not start or open its data (settings, DATA_DIR, the database, the stand-in), in one line
    that never shows DATABASE_URL (the catalog's: its first problems, a line each)."""
    if isinstance(e, CatalogError):
        return "\n".join(first_problems(e.problems))
    if isinstance(e, ValueError) and str(e).startswith("STANDIN_"):  # a stand-in setting, in its own words
        return str(e)
    if isinstance(e, OSError):  # the folder, or the SQLite file in it
        return f"DATA_DIR {config.data_dir}: {e.strerror or type(e).__name__}"
    if isinstance(e, ShopError):  # settings, or a DATABASE_URL that cannot connect, in libpq's words
        return e.message
    return f"the database could not be opened ({type(e).__name__}); check DATABASE_URL or DATA_DIR"


def _fail(message, code):
    """Print why a command failed on stderr; returns its exit code."""
    print(message, file=sys.stderr)
    return code


def show_settings(config):
    for s, value in zip(SETTINGS, config.public().values()):
        print(f"{s.env:22} = {value!r:24} (default {s.default!r}) {s.help}")


def check(config):
    """Print every problem with the catalog and settings; 0 when there are none, 3 when Stripe's answer is the only
    one (run it again)."""
    unanswered = False
    try:
        catalog, found = load_catalog(config.catalog, ROOT / "public"), []
    except CatalogError as e:
        catalog, found = None, list(e.problems)
    if config.mode != "offline" and not config.stripe_webhook_secret:
        found.append("STRIPE_WEBHOOK_SECRET: not set, so POST /webhook refuses every event (set it to whsec_...)")
    if not (config.database_url and config.smtp_url) or config.mode == "offline":  # SQLite, .eml files, the stand-in
        try:  # made if missing, as serving would, and written to
            os.makedirs(config.data_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=config.data_dir).close()
        except OSError as e:
            found.append(f"DATA_DIR: {config.data_dir}: {e.strerror or type(e).__name__}")
    if config.database_url:  # libpq reads an option's value (sslmode=bogus) only when it connects
        try:
            reach(config.database_url)
        except ConfigError as e:
            found.append(e.message)
    if config.mode != "offline":  # one read, which makes nothing: does Stripe answer, and take the key?
        client, _ = make_client(config, None)
        try:
            call("GET /v1/checkout/sessions", client.v1.checkout.sessions.list, {"limit": 1})
        except ShopError as e:
            if e.code == "key_refused":
                found.append(f"STRIPE_SECRET_KEY: Stripe refused it ({e.detail})")
            else:  # no answer, rate limited, or Stripe's own error: alone, the exit code says "run it again"
                unanswered = not found and e.status == 503  # a refusal (a 400) is no "run it again"
                found.append(f"Stripe: no answer ({e.detail}): check the network, or STRIPE_API_BASE if set"
                             if e.detail == "APIConnectionError" else f"Stripe: {e.detail or e.message}")
    print("\n".join(found) or f"ok: {config.catalog.name} is valid; mode {config.mode}; base URL {config.base_url}")
    for warning in env_warnings():
        print(f"warning: {warning}")
    for promo in catalog.promotions if catalog else ():  # kept, but ended
        if promo["expires"] and expiry(promo) < time.time():
            print(f"warning: promotion {promo['code']} ended on {promo['expires']} (at 23:59:59 UTC): not offered")
    for p in catalog.products if catalog else ():  # Checkout shows no SVG: the product would have no picture there
        if p.checkout_image.endswith(".svg"):
            print(f"warning: product {p.id}: Stripe's Checkout shows no SVG: put a PNG of the same name beside "
                  f"public/{p.image}, then save {config.catalog.name} again")
    if config.mode == "offline" and urlsplit(config.base_url).hostname not in LOOPBACK:  # keys may come at deploy
        print(f"warning: without STRIPE_SECRET_KEY the shop at {config.base_url} is offline: anyone reaching it pays "
              "with test cards, and orders are handed off uncharged")
    return (3 if unanswered else 1) if found else 0


def env_warnings():
    """What in .env the shop ignores: a line that is no setting (a typo leaves the setting at its default)."""
    from dotenv import dotenv_values
    known = [s.env for s in SETTINGS]
    for name, value in dotenv_values(ROOT / ".env").items():
        if value is None or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):  # a value pasted on a line of its own?
            yield ".env: a line that is no NAME=value is ignored (not shown: it may hold a secret)"
        elif name not in known and not name.startswith("STANDIN_"):
            near = difflib.get_close_matches(name, known, 1)
            yield f".env: {name} is not a setting of the shop" + (f" (did you mean {near[0]}?)" if near else "")


def serve(config):
    """Serve with waitress on HOST:PORT until Ctrl-C or SIGTERM."""
    import waitress
    from shop import make_app, start_background
    try:
        app = make_app(config)
    except CatalogError as e:
        fix = "The shop cannot start until the catalog is fixed (`python shop.py check`)."
        return _fail("\n".join([*first_problems(e.problems), fix]), 2)
    except Exception as e:  # noqa: BLE001 — the database is unreachable, say: one line, never the URL
        return _fail(f"cannot start: {cannot_open(config, e)}", 2)
    try:
        server = waitress.create_server(
            app, host=config.host, port=config.port, threads=config.threads, ident="shop",
            connection_limit=config.connection_limit, channel_timeout=config.channel_timeout,
            cleanup_interval=1,  # a silent connection closed within a second of CHANNEL_TIMEOUT, not up to 30 s after
            asyncore_use_poll=True,  # select() cannot watch more than 1,024 connections
            # The shop reads X-Forwarded-For itself, from TRUSTED_PROXY only, as under gunicorn (waitress's own reading
            # makes "::ffff:203.0.113.7" the address "::ffff"); it reads no other forwarding header.
            clear_untrusted_proxy_headers=False, max_request_body_size=1 << 20, max_request_header_size=64 << 10)
    except (OSError, ValueError) as e:  # ValueError: a HOST that is no address or name this machine can resolve
        why = getattr(e, "strerror", None) or "no such address"
        return _fail(f"cannot listen on {config.host}:{config.port}: {why}", 2)
    shop = app.config["shop"]
    stop_writing = _write_logs_in_a_thread(logging.getLogger())
    log.info("serving %s at %s (%s mode, %d threads)", shop.catalog().shop_name, config.base_url, config.mode,
             config.threads)
    for warning in env_warnings():
        log.warning(warning)
    def stop_once(signum, frame):
        """Stop as on Ctrl-C (KeyboardInterrupt); a second Ctrl-C or SIGTERM must not cut the stop short."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_once)
    stop_background = start_background(shop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()  # (waitress has let the requests under way finish, up to 5 s): no more connections, so
        # offline the stand-in's webhook sender is refused at once instead of waiting for an answer
        stop_background()  # before the ledger is closed
        shop.orders.close()
        log.info("stopped")
        stop_writing()


def _write_logs_in_a_thread(logger, most=10000):
    """One thread writes the logger's lines: a slow stdout never holds a request up, and 128 threads never queue for
    the stream's lock (https://docs.python.org/3/howto/logging-cookbook.html#dealing-with-handlers-that-block). A log
    reader that stops reading stops that thread: past `most` lines waiting, lines are dropped (and counted, in a
    line written once those waiting are written), not kept in memory.
    Returns the stop, which waits for the lines queued, or 5 s if they cannot be written: then the process ends at
    once, as its exit would wait on the stuck write for ever (logging flushes every handler at exit)."""
    lines, handlers, dropped = queue.Queue(most), logger.handlers, [0]

    class Queued(logging.handlers.QueueHandler):
        def enqueue(self, record):
            try:
                lines.put_nowait(record)
            except queue.Full:
                dropped[0] += 1  # said once the reader reads again (a count threads share: about right is enough)

    def handle(record):
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def write():
        while True:
            record = lines.get()
            if record is not None:
                handle(record)
            if dropped[0] and (record is None or lines.empty()):  # where the gap is: after the lines that waited
                count, dropped[0] = dropped[0], 0
                handle(logging.LogRecord("shop", logging.WARNING, __file__, 0,
                                         "%d log line(s) dropped: the log's reader stopped reading", (count,), None))
            if record is None:  # the stop's mark
                return
    writer = threading.Thread(target=write, name="log writer", daemon=True)
    writer.start()
    logger.handlers = [Queued(lines)]

    def stop():
        deadline = time.monotonic() + 5
        with contextlib.suppress(queue.Full):
            lines.put(None, timeout=5)
        writer.join(max(0, deadline - time.monotonic()))
        if writer.is_alive():  # everything else is stopped and closed; the unwritten lines are lost
            os._exit(0)
    return stop


def shown(text):
    """Customer text as a terminal shows it safely: control characters and escapes written out."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text or "—"))


def fulfilments(ctx, args):
    """Hand-off records as JSON lines ({"id": N, ...record}); --follow waits for more."""
    after = args.after
    while True:
        records = ctx.ledger.fulfilments(after)
        for fid, record in records:
            print(json.dumps({"id": fid, **record}, sort_keys=True), flush=True)
            after = fid
        if len(records) < 1000 and not args.follow:  # fulfilments() gives 1,000 at most at a time
            return 0
        time.sleep(0 if len(records) == 1000 else 1)


def orders(ctx, args):
    rows = ctx.ledger.list(status=args.status, limit=args.limit or (CSV_ROWS if args.csv else 50))
    if args.csv:
        write_csv(sys.stdout, rows)
    elif args.json:
        print(json.dumps([{k: o[k] for k in JSON_FIELDS} for o in rows], indent=2))
    else:
        print(f"{'ORDER':<28} {'CREATED':<17} {'STATUS':<18} {'TOTAL':>12}  {'EMAIL':<28} FULFILLED" if rows
              else "No orders" + (f" with status {args.status}." if args.status else " yet."))
        for o in rows:
            total = money(o["amount_total"] if o["amount_total"] is not None else o["amount_subtotal"], o["currency"])
            print(f"{o['id']:<28} {_short(o['created']):<17} {o['status']:<18} {total:>12}  "
                  f"{shown(o['customer_email'])[:28]:<28} {_short(o['fulfilled_at']) or '—'}")


def order(ctx, args):
    o = _order(ctx, args.id)
    history, record = ctx.ledger.history(o["id"]), ctx.ledger.handoff_record(o["id"])  # record: once paid
    if args.json:
        print(json.dumps({**{k: o[k] for k in JSON_FIELDS}, "history": history, "handoff": record}, indent=2))
        return
    cur = o["currency"]
    print(f"Order {o['id']} — {o['status']}")
    for label, key in (("Created", "created"), ("Updated", "updated"), ("Email", "customer_email"),
                       ("Payment reference", "payment_intent"), ("Checkout session", "session_id"),
                       ("Fulfilled", "fulfilled_at"), ("Dispute", "dispute_status")):
        print(f"  {label + ':':<19} {shown(o[key])}")
    if record:  # where to, for the carrier, as /admin shows it
        for label, value in (("Ship to", ", ".join(mail.ship_to(record))), ("Phone", record.get("customer_phone")),
                             ("Delivery", record.get("shipping_method"))):
            print(f"  {label + ':':<19} {shown(value)}")
    print("Items")
    for i in o["items"]:
        print(f"  {i['quantity']:>3} × {shown(i['name'])[:40]:<40} {money(i['unit_amount'], cur):>12} "
              f"{money(i['unit_amount'] * i['quantity'], cur):>12}")
    discount = "Discount" + (f" ({shown(o['promotion_code'])})" if o["promotion_code"] else "")
    for label, key in (("Subtotal", "amount_subtotal"), (discount, "amount_discount"), ("Shipping", "amount_shipping"),
                       (mail.tax_label(o), "amount_tax"), ("Total", "amount_total"), ("Refunded", "amount_refunded")):
        print(f"  {label[:58]:<58} {('−' if key == 'amount_discount' and o[key] else '') + money(o[key], cur):>12}")
    print("History")
    for h in history:
        print(f"  {h['at']}  {h['status']:<18} {shown(h['source'])}" + (f" — {shown(h['note'])}" if h["note"] else ""))


def refund(ctx, args):
    o = _order(ctx, args.id)
    free = o["status"] == "paid" and o["amount_total"] == 0  # a no-cost order (a 100% code): nothing to refund
    if (o["status"] == "refunded" or free) and args.restock and args.amount is None:  # the copies alone
        restocked = ctx.ledger.restock(o["id"], "cli refund")
        print(f"Order {o['id']} {'cost nothing' if free else 'is refunded in full already'}; its copies are "
              f"{'back in stock now' if restocked else 'in stock already'}.")
        return
    o, result, replayed, restocked = ctx.refund(args.id, args.amount, args.restock, "cli refund", again=args.again)
    cur = o["currency"]
    print(f"Refund {result.id} of {money(result.amount, cur)} for order {o['id']}: {result.status}"
          + (" (already made earlier; Stripe replayed it)" if replayed else "") + ".")
    if restocked:
        print(f"Order {o['id']}: its copies are back in stock.")
    _deliver_now(ctx)
    after = ctx.ledger.get(o["id"])
    if (after["status"], after["amount_refunded"]) != (o["status"], o["amount_refunded"]):
        print(f"Order {o['id']} is now {after['status']} ({money(after['amount_refunded'], cur)} refunded).")
    elif replayed:  # its event may have come long ago: say what the ledger has
        print(f"Order {o['id']} is {after['status']} ({money(after['amount_refunded'], cur)} refunded so far).")
    else:
        print("The order changes when Stripe's charge.refunded event reaches the shop.")


def send_mail(ctx, args):
    sent, failed = mail.send_due(ctx, retry_now=True)
    print(f"Sent {sent} email(s)" + (f"; {failed} failed and will be retried (`python shop.py outbox`)." if failed
                                     else "."))
    return 1 if failed else 0


def outbox(ctx, args):
    rows = ctx.ledger.outbox(pending=True, limit=1000)
    for m in rows:
        next_try = "given up" if m["attempts"] >= MAX_MAIL_ATTEMPTS else f"next {_short(m['next_attempt'])}"
        print(f"{m['id']}  to {shown(m['recipient'])}  attempts {m['attempts']}, {next_try}"
              + (f": {shown(m['last_error'])}" if m["last_error"] else ""))
    print(f"{len(rows)} email(s) waiting." if rows else "No email is waiting to be sent.")


def stock(ctx, args):
    """Per stocked product: copies in all, held, sold, left; from the catalog the shop serves (a broken edit: the last
    good one, as the shop keeps it)."""
    catalog = CatalogStore(ctx.config.catalog, ROOT / "public", log, kept=ctx.ledger.kept_catalog).current()
    products = [p for p in catalog.products if p.stock is not None]
    levels = ctx.ledger.stock_levels(p.id for p in products)
    print(f"{'PRODUCT':<40} {'STOCK':>7} {'HELD':>7} {'SOLD':>7} {'LEFT':>7}" if products
          else "No product in the catalog has a stock (every one is unlimited).")
    for p in products:
        h, s = levels.get(p.id, (0, 0))
        print(f"{shown(p.id)[:40]:<40} {p.stock:>7} {h:>7} {s:>7} {max(0, p.stock - h - s):>7}")


def expire(ctx, args):
    o = _order(ctx, args.id)
    if o["status"] != "open" or not o["session_id"]:
        raise ShopError(409, f"Order {o['id']} is {o['status']}: only an order with an open checkout can be expired.")
    expired, refused, outcome = ctx.expire(o["session_id"], "cli expire")
    if not expired:  # not open at Stripe any more (paid, or expired already) though no event said so yet
        raise ShopError(409, f"Stripe refused to expire the checkout: {refused} "
                             f"Order {o['id']} is now {ctx.ledger.get(o['id'])['status']} ({outcome}).")
    print(f"Order {o['id']}: checkout {o['session_id']} expired" + (f" ({outcome})." if outcome != "expired" else "."))
    _deliver_now(ctx)


def _order(ctx, order_id):
    found = ctx.ledger.get(order_id)
    if found is None:
        raise ShopError(404, f"No order {shown(order_id)!r} (see `python shop.py orders`).")
    return found


def _deliver_now(ctx):
    """Offline: hand the stand-in's pending events to the running shop now, if it is up."""
    if ctx.standin is None or not ctx.standin.webhook_url:
        return
    parts = urlsplit(ctx.config.base_url)
    try:
        socket.create_connection((parts.hostname, parts.port or 80), timeout=0.5).close()
    except OSError:
        print(f"The shop at {ctx.config.base_url} is not running, or not there (are BASE_URL and PORT set as when it "
              "was served?); it receives the events once it answers there.")
        return
    if results := ctx.standin.deliver_pending():
        print(f"Delivered {sum(200 <= status < 300 for _, status in results)} of {len(results)} pending event(s) to "
              f"{ctx.standin.webhook_url}.")


def _short(iso):
    return iso[:16].replace("T", " ") if iso else ""
