"""The merchant's commands: list and inspect orders, refund, reconcile with Stripe, expire a checkout."""

import argparse
import json
import re
import socket
import sys
from urllib.parse import urlsplit

import payments
from backend import Backend
from catalog import format_money
from ledger import REFUNDABLE, STATUSES
from reconcile import reconcile
from settings import ShopError

JSON_FIELDS = ("id", "status", "session_id", "payment_intent", "currency", "amount_subtotal", "amount_shipping",
               "amount_tax", "amount_total", "amount_refunded", "customer_email", "dispute_status", "created",
               "updated", "fulfilled_at", "items")


class Refused(Exception):
    """A command the merchant asked for that cannot be done; the message says why (exit 1)."""


class Context(Backend):
    """The ledger, Stripe client and fulfilment of the shop on this DATA_DIR, without the web app (or its catalog)."""

    def order(self, order_id):
        """The order, or Refused naming the unknown id."""
        order = self.ledger.get(order_id)
        if order is None:
            raise Refused(f"No order {order_id!r} (see `python shop.py orders`).")
        return order



def duration(text):
    """'24h', '7d', '90m', '3600s' (or plain hours) as seconds."""
    m = re.fullmatch(r"\s*([0-9]{1,6})\s*([smhd]?)\s*", text or "")
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 24h, 7d or 90m, got {text!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}[m.group(2)]


def add_commands(sub):
    """Add orders, order, refund, reconcile and expire to the `shop.py` argument parser."""
    p = sub.add_parser("orders", help="list recent orders")
    p.add_argument("--status", choices=STATUSES, help="only orders with this status")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.set_defaults(run=_command(orders))
    p = sub.add_parser("order", help="show one order in full, with its event history")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_command(order))
    p = sub.add_parser("refund", help="refund a paid order through Stripe (all of what is left, or --amount)")
    p.add_argument("id")
    p.add_argument("--amount", type=int, help="amount in minor units (cents), e.g. 500 for $5.00")
    p.set_defaults(run=_command(refund))
    p = sub.add_parser("reconcile", help="repair orders whose webhooks never arrived, from Stripe's sessions")
    p.add_argument("--since", type=duration, default=24 * 3600, help="how far back: 24h (default), 7d, 90m")
    p.set_defaults(run=_command(reconcile))
    p = sub.add_parser("expire", help="expire an order's open checkout so it can no longer be paid")
    p.add_argument("id")
    p.set_defaults(run=_command(expire))


def _command(fn):
    def run(config, args):
        ctx = Context(config)
        try:
            return fn(ctx, args) or 0
        except Refused as e:
            print(e, file=sys.stderr)
            return 1
        except ShopError as e:
            if e.status == 503:
                # A request that timed out or lost its answer may still have been carried out at Stripe.
                print(f"Stripe did not answer ({e.detail or 'no answer'}), so the outcome is unknown. Run the "
                      "same command again in a minute: Stripe replays a request it already carried out "
                      "(idempotency key) instead of doing it twice.", file=sys.stderr)
                return 3
            print(f"Stripe refused: {e.detail or e.message}", file=sys.stderr)
            return 1
        finally:
            ctx.close()
    return run


def money(amount, currency):
    return "—" if amount is None else format_money(amount, currency)


def orders(ctx, args):
    """Recent orders as a table, or JSON."""
    rows = ctx.ledger.list(status=args.status, limit=max(1, args.limit))
    if args.json:
        print(json.dumps([{k: o[k] for k in JSON_FIELDS} for o in rows], indent=2))
        return 0
    if not rows:
        print("No orders" + (f" with status {args.status}." if args.status else " yet."))
        return 0
    print(f"{'ORDER':<22} {'CREATED':<17} {'STATUS':<18} {'TOTAL':>12}  {'EMAIL':<28} FULFILLED")
    for o in rows:
        total = money(o["amount_total"] if o["amount_total"] is not None else o["amount_subtotal"], o["currency"])
        print(f"{o['id']:<22} {_short(o['created']):<17} {o['status']:<18} {total:>12}  "
              f"{(o['customer_email'] or '—')[:28]:<28} {_short(o['fulfilled_at']) or '—'}")
    return 0


def order(ctx, args):
    """One order in full, with its history."""
    o = ctx.order(args.id)
    history = ctx.ledger.history(o["id"])
    if args.json:
        print(json.dumps({**{k: o[k] for k in JSON_FIELDS}, "history": history}, indent=2))
        return 0
    cur = o["currency"]
    print(f"Order {o['id']} — {o['status']}")
    facts = [("Created", o["created"]), ("Updated", o["updated"]), ("Email", o["customer_email"]),
             ("Payment reference", o["payment_intent"]), ("Checkout session", o["session_id"]),
             ("Fulfilled", o["fulfilled_at"]), ("Dispute", o["dispute_status"])]
    for label, value in facts:
        print(f"  {label + ':':<19} {value or '—'}")
    print("Items")
    for i in o["items"]:
        print(f"  {i['quantity']:>3} × {i['name'][:40]:<40} {money(i['unit_amount'], cur):>12} "
              f"{money(i['unit_amount'] * i['quantity'], cur):>12}")
    for label, key in (("Subtotal", "amount_subtotal"), ("Shipping", "amount_shipping"), ("Tax", "amount_tax"),
                       ("Total", "amount_total"), ("Refunded", "amount_refunded")):
        print(f"  {label:<58} {money(o[key], cur):>12}")
    print("History")
    for h in history:
        print(f"  {h['at']}  {h['status']:<18} {h['source']}" + (f" — {h['note']}" if h["note"] else ""))
    return 0


def refund(ctx, args):
    """Refund through Stripe; the order changes when Stripe's charge.refunded event arrives."""
    o = ctx.order(args.id)
    cur = o["currency"]
    if o["status"] not in REFUNDABLE or not o["payment_intent"] or o["amount_total"] is None:
        hint = " (answer the dispute in the Stripe Dashboard instead)" if o["status"] == "disputed" else ""
        raise Refused(f"Order {o['id']} is {o['status']}: only paid orders can be refunded{hint}.")
    left = o["amount_total"] - o["amount_refunded"]
    amount = left if args.amount is None else args.amount
    if amount <= 0 or amount > left:
        raise Refused(f"Cannot refund {money(amount, cur)} on order {o['id']}: {money(left, cur)} of "
                      f"{money(o['amount_total'], cur)} is left to refund (amounts are in minor units).")
    # The key pins this exact refund: re-running the command after a timeout cannot refund twice.
    # https://docs.stripe.com/api/idempotent_requests
    key = f"refund-{o['id']}-{o['amount_refunded']}-{amount}"
    result = payments.call("POST /v1/refunds", ctx.stripe.v1.refunds.create,
                           {"payment_intent": o["payment_intent"], "amount": amount,
                            "metadata": {"order_id": o["id"]}}, {"idempotency_key": key})
    replayed = (getattr(result, "last_response", None) and
                (result.last_response.headers or {}).get("Idempotent-Replayed") == "true")
    print(f"Refund {result.id} of {money(result.amount, cur)} for order {o['id']}: {result.status}"
          + (" (already made earlier; Stripe replayed it)" if replayed else "") + ".")
    _deliver_now(ctx)
    after = ctx.ledger.get(o["id"])
    if (after["status"], after["amount_refunded"]) != (o["status"], o["amount_refunded"]):
        print(f"Order {o['id']} is now {after['status']} ({money(after['amount_refunded'], cur)} refunded).")
    else:
        print("The order changes when Stripe's charge.refunded event reaches the shop.")
    return 0


def expire(ctx, args):
    """Expire the order's open Checkout Session; the order becomes expired."""
    o = ctx.order(args.id)
    if o["status"] != "open" or not o["session_id"]:
        raise Refused(f"Order {o['id']} is {o['status']}: only an order with an open checkout can be expired.")
    try:
        session = payments.expire_session(ctx.stripe, o["session_id"])
    except ShopError as e:
        if e.status != 502:
            raise
        # Not open at Stripe any more (paid, or expired already) though no event said so yet: catch up.
        _, outcome = ctx.fulfilment.sync(o["session_id"], None, "cli expire")
        after = ctx.ledger.get(o["id"])
        raise Refused(f"Stripe refused to expire the checkout: {e.detail or e.message} "
                      f"Order {o['id']} is now {after['status']} ({outcome}).") from None
    _, outcome = ctx.fulfilment.sync(o["session_id"], session, "cli expire")
    print(f"Order {o['id']}: checkout {o['session_id']} expired ({outcome}).")
    _deliver_now(ctx)
    return 0


def _deliver_now(ctx):
    """Offline: hand the stand-in's pending events to the running shop now, if it is up."""
    if ctx.standin is None or not ctx.standin.webhook_url:
        return
    parts = urlsplit(ctx.config.base_url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=0.5).close()
    except OSError:
        print(f"The shop at {ctx.config.base_url} is not running; it receives the events when it starts.")
        return
    results = ctx.standin.deliver_pending()
    if results:
        ok = sum(1 for _, status in results if 200 <= status < 300)
        print(f"Delivered {ok} of {len(results)} pending event(s) to {ctx.standin.webhook_url}.")


def _short(iso):
    return iso[:16].replace("T", " ") if iso else ""
