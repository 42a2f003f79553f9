"""Order emails: written when an order changes (stored by the ledger in that change's transaction), sent after it.

A sender claims one message at a time under a lease (no two threads or instances send it at once), marks it sent once
the server accepted it, and retries with back-off otherwise; if it dies in between, the lease expires and the message
is sent again: at least once is the best SMTP allows. Without SMTP_URL each is written once as DATA_DIR/outbox/<id>.eml.
"""

import contextlib
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import time
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate
from html import escape
from urllib.parse import parse_qs, unquote, urlsplit

from .catalog import format_money
from .ledger import INQUIRY_STATUSES, MAX_MAIL_ATTEMPTS
from .security import LOOPBACK
from .settings import EMAIL

UTF8 = Charset("utf-8")
UTF8.body_encoding = QP  # quoted-printable, not base64: a .eml in DATA_DIR/outbox/ reads as text

log = logging.getLogger("shop.mail")
MAX_BACKOFF = 6 * 3600


def ship_to(record):
    """A hand-off record's name and address as a label reads them: its lines that are not empty."""
    a = record["shipping_address"]
    return [x for x in (record["shipping_name"], a["line1"], a["line2"],
                        " ".join(x for x in (a["postal_code"], a["city"]) if x), a["state"], a["country"]) if x]


def mailable(address):
    """Whether the shop emails this address: a plain ASCII one (others may not survive a mail server's hops)."""
    return bool(EMAIL.fullmatch(address or ""))


def tax_label(order):
    """'Tax (included)' where the prices included the tax (it is not added to the total), else 'Tax'."""
    return "Tax (included)" if (order.get("charged") or {}).get("tax_included") else "Tax"


class Notices:
    """ledger.notify: the emails an order change causes, as {id, kind, amount, to, message}, signed by shop_name()."""

    def __init__(self, config, shop_name):
        self.config, self.shop_name = config, shop_name  # called each time: a renamed shop signs with its new name

    def __call__(self, what, order, **details):
        try:
            return list(self._compose(what, order, **details))
        except Exception:  # noqa: BLE001 — an email must never stop the payment or refund that causes it
            log.exception("no email composed for order %s (%s)", order["id"], what)
            return []

    def _compose(self, what, order, record=None, before=0, lost=0, reason=None, due_by=None, dispute_status=None):
        money, oid = (lambda amount: format_money(amount or 0, order["currency"])), order["id"]
        to = order["customer_email"] if mailable(order["customer_email"]) else None
        if to is None and order["customer_email"]:
            log.warning("order %s: the shopper's email is not a plain address; no email to the shopper", oid)
        if what == "paid":
            rows = [(f"{i['quantity']} × {i['name']}", money(i["unit_amount"] * i["quantity"]))
                    for i in record["items"]]
            rows += [("Subtotal", money(record["amount_subtotal"]))]
            if record["amount_discount"]:
                code = f" ({record['promotion_code']})" if record["promotion_code"] else ""
                rows.append((f"Discount{code}", "−" + money(record["amount_discount"])))
            rows += [("Shipping", money(record["amount_shipping"])), (tax_label(order), money(record["amount_tax"])),
                     ("Total", money(record["amount_total"]))]
            where = "\n".join(ship_to(record)) or "—"
            facts = [f"Ship to:\n{where}", f"Delivery: {record.get('shipping_method') or '—'}",  # older records: none
                     f"Email: {record['customer_email'] or '—'}\n"
                     f"Payment reference: {record['payment_intent'] or '—'}"]
            if self.config.merchant_email:  # the phone for the carrier (records from before it was kept have none)
                phone = f"Phone: {record.get('customer_phone') or '—'}"
                yield self._message(oid, "order_notice", 0, self.config.merchant_email,
                                    f"New order {oid}: {money(record['amount_total'])}",
                                    [f"Order {oid} is paid. Please ship it."] + facts + [phone], rows)
            if to:
                yield self._message(oid, "confirmation", 0, to, f"Your order {oid} at {self.shop_name()}",
                                    [f"Thank you for your order {oid}: your payment went through."] + facts, rows)
        elif what == "payment_failed" and to:
            yield self._message(oid, "payment_failed", 0, to, f"Your payment for order {oid} did not go through", [
                f"The payment for your order {oid} of {money(order['amount_total'])} did not go through, so "
                "nothing was charged and the order will not be shipped. You are welcome to order again."])
        elif what == "refund_failed" and self.config.merchant_email:  # one per failure (the count is its amount)
            yield self._message(oid, "refund_failed", order["refund_failures"], self.config.merchant_email,
                                f"A refund of order {oid} failed", [
                f"{money(lost)} of the refunds of order {oid} did not reach the shopper "
                f"(a closed card, say): Stripe put it back in your balance, and the order now shows "
                f"{money(order['amount_refunded'])} refunded of {money(order['amount_total'])}.",
                "Refund the shopper another way, or refund again from /admin."])
        elif what == "dispute" and self.config.merchant_email:  # https://docs.stripe.com/disputes/responding
            due = f" by {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(due_by))}" if due_by else ""
            todo = (f"Answer it in the Stripe Dashboard{due}, with the order's proof of delivery: unanswered, the bank "
                    "gives the money back to the shopper." if dispute_status == "needs_response" else
                    f"It is an inquiry, not yet a chargeback: answer it in the Stripe Dashboard{due}, with the order's "
                    f"proof of delivery, or refund the order (/admin, or `python shop.py refund {oid}`); unanswered, "
                    "it may become a chargeback." if dispute_status == "warning_needs_response" else
                    f"It is {(dispute_status or 'open').replace('_', ' ')} already: see it in the Stripe Dashboard."
                    + (" An inquiry: the order can still be refunded." if dispute_status in INQUIRY_STATUSES else ""))
            yield self._message(oid, "dispute", 0, self.config.merchant_email, f"Order {oid} is disputed", [
                f"The shopper's bank disputes the payment of order {oid} ({money(order['amount_total'])})"
                + (f": {reason.replace('_', ' ')}." if reason else "."), todo])
        elif what == "refund" and to:
            total = order["amount_refunded"]
            yield self._message(oid, "refund", total, to, f"Refund for your order {oid}", [
                f"We refunded {money(total - before)} of your order {oid} ({money(total)} of "
                f"{money(order['amount_total'])} refunded in all). It reaches your account in 5 to 10 days."])

    def _message(self, order_id, kind, amount, to, subject, paragraphs, rows=()):
        """What the email says, as JSON (made into MIME when sent); the id names order, kind and amount."""
        content = {"subject": subject, "from_name": self.shop_name(), "paragraphs": paragraphs, "rows": list(rows)}
        mail_id = f"{order_id}.{kind}.{amount}@{self.config.mail_from.rpartition('@')[2]}"
        return {"id": mail_id, "kind": kind, "amount": amount, "to": to, "message": json.dumps(content)}


def mime(config, row):
    """The stored email as MIME: plain text and a simple HTML alternative, every value escaped."""
    if not row["message"].startswith("{"):  # stored whole by an earlier version
        return row["message"]
    m = json.loads(row["message"])
    paragraphs, rows = m["paragraphs"], m["rows"]
    width = max([len(label) for label, _ in rows] + [10])
    table = "\n".join(f"{label:<{width}}  {value:>12}" for label, value in rows)
    text = "\n\n".join(paragraphs[:1] + ([table] if rows else []) + paragraphs[1:]) + "\n"
    cells = "".join(f"<tr><th align=left>{escape(label)}</th><td align=right>{escape(value)}</td></tr>"
                    for label, value in rows)
    paras = [f"<p>{escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs]
    html = (f"<!doctype html><html><body><h1>{escape(m['from_name'])}</h1>{paras[0]}"
            + (f"<table>{cells}</table>" if rows else "") + "".join(paras[1:]) + "</body></html>")
    # compat32's MIME classes: a third of EmailMessage's cost, the same message on the wire
    msg = MIMEMultipart("alternative", _subparts=[MIMEText(text, "plain", UTF8), MIMEText(html, "html", UTF8)])
    msg["Subject"], msg["To"] = Header(m["subject"], None if m["subject"].isascii() else "utf-8"), row["recipient"]
    msg["From"] = formataddr((m["from_name"], config.mail_from), "utf-8")
    # Date: when the order changed and the email was written, however late a retry sends it (RFC 5322 3.6.1)
    created = datetime.fromisoformat(row["created"]).timestamp()
    msg["Date"], msg["Message-ID"] = formatdate(created, usegmt=True), f"<{row['id']}>"
    return msg.as_string()


def timeout(config):
    """Seconds per SMTP step: SMTP_URL's ?timeout=N, else 30."""
    return float(parse_qs(urlsplit(config.smtp_url).query).get("timeout", ["30"])[0])  # checked by settings.py


def send_due(orders, now=None, retry_now=False, stop=None):
    """Send each due message once (retry_now: also those in back-off or given up) until `stop` is set; returns
    (sent, failed)."""
    config, ledger, fixed = orders.config, orders.ledger, now
    lease = 10 * timeout(config)
    sent, failed, tried = 0, 0, set()
    while not (stop and stop.is_set()):  # one claim at a time, its lease counted from now
        now = time.time() if fixed is None else fixed
        row = ledger.claim_mail(now, lease, due=now + 10 ** 9 if retry_now else None, skip=tried, given_up=retry_now)
        if row is None:
            break
        tried.add(row["id"])
        try:
            with _held(ledger, row["id"], lease) if config.smtp_url else contextlib.nullcontext():  # a file: quick
                deliver(config, row)
        except Exception as e:  # noqa: BLE001 — down, refused, dropped, or a bad answer: all are retried
            error = " ".join(str(x) for x in (type(e).__name__, getattr(e, "smtp_code", ""),
                                              getattr(e, "strerror", "") or "") if x)[:200]
            retry = (time.time() if fixed is None else now) + min(MAX_BACKOFF, 60 * 2 ** (row["attempts"] - 1))
            ledger.mail_failed(row["id"], error, retry)
            if row["attempts"] >= MAX_MAIL_ATTEMPTS:  # said loudly once: no sender tries it again by itself
                log.error("email %s given up after %d attempts: %s; `python shop.py mail` sends it once the mail "
                          "server is fixed", row["id"], row["attempts"], error)
            else:
                log.warning("email %s not sent (attempt %d): %s; next try at %s", row["id"], row["attempts"], error,
                            time.strftime("%H:%M:%S", time.gmtime(retry)))
            failed += 1
        else:
            ledger.mail_sent(row["id"])
            log.info("email %s sent to the %s", row["id"], "mail server" if config.smtp_url else "outbox folder")
            sent += 1
    return sent, failed


@contextlib.contextmanager
def _held(ledger, mail_id, lease):
    """The message's lease renewed while the block sends it: a server answering each step just within the timeout
    may take longer than the lease, and another sender would then send it too. A sender that dies renews nothing."""
    done = threading.Event()

    def renew():
        while not done.wait(lease / 3):
            try:
                ledger.hold_mail(mail_id, time.time() + lease)
            except Exception as e:  # noqa: BLE001 — the database is away: the lease may run out, as if this died
                log.warning("could not renew the lease of email %s: %s", mail_id, type(e).__name__)
    threading.Thread(target=renew, name="mail lease", daemon=True).start()
    try:
        yield
    finally:
        done.set()  # (a renewal after this changes nothing: the message is marked sent or failed, lease cleared)


def deliver(config, row):
    """Hand one stored message to the mail server, or write it as <id>.eml (atomically: whole or not at all)."""
    if not config.smtp_url:
        folder = config.data_dir / "outbox"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._@-]", "_", row["id"]) + ".eml"
        temporary = folder / f".{name}.{os.getpid()}.{threading.get_ident()}"
        with open(temporary, "w", encoding="ascii") as f:
            f.write(mime(config, row))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, folder / name)  # the same id twice: still one file
        return
    url, seconds = urlsplit(config.smtp_url), timeout(config)
    secure = url.scheme == "smtps"
    with (smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=seconds, context=ssl.create_default_context())
          if secure else smtplib.SMTP(url.hostname, url.port or 587, timeout=seconds)) as server:
        server.ehlo()
        if not secure and server.has_extn("starttls"):
            server.starttls(context=ssl.create_default_context())  # login and sendmail say EHLO again themselves
            secure = True
        if url.username:
            if not secure and url.hostname not in LOOPBACK:
                raise smtplib.SMTPException("no TLS offered: the password is not sent in the clear")
            server.login(unquote(url.username), unquote(url.password or ""))
        server.sendmail(config.mail_from, [row["recipient"]], mime(config, row))
        with contextlib.suppress(smtplib.SMTPException, OSError):  # accepted: no answer to QUIT can take that back
            server.quit()
