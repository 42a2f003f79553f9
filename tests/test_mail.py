"""Order emails through a real SMTP server on loopback (aiosmtpd): one notice and one confirmation per paid order
however often it is confirmed, one per failed payment and per refund, retries when the server is down, refuses or
drops the connection, .eml files offline, and a serving process killed mid-send (SQLite and PostgreSQL)."""

import asyncio
import email
import email.policy
import logging
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from shop import start_background
from standin import ASYNC_FAIL, StandIn
from tests.conftest import (DISPUTED, INQUIRY, buy, edit_catalog, free_port, handoff, order, paid, pay_form, pending,
                            start, wait_for, wire)
from webshop import mail, merchant
from webshop.catalog import format_money
from webshop.ledger import Ledger
from webshop.reconcile import reconcile
from webshop.settings import load_config

MERCHANT = "owner@example.com"


class MailServer:
    """A real SMTP server on 127.0.0.1 that keeps what it accepted; `mode` makes it accept, refuse a recipient
    (550), refuse the message (421), drop the connection mid-session, stall before answering DATA, or accept
    after 0.6 s (slow)."""

    def __init__(self, **options):
        self.accepted, self.mode, self.stalled = [], "accept", threading.Event()
        self.port, self.options = free_port(), options
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self.url = f"smtp://127.0.0.1:{self.port}"

    def restart(self):
        """Up again on the same port (a stopped controller cannot start twice)."""
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **self.options)
        self.controller.start()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "refuse":
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "busy":
            return "421 4.3.2 Service not available, closing channel"
        if self.mode == "drop":
            server.transport.close()  # gone mid-session, before any answer to the message
            return "250 never heard"
        if self.mode == "stall":
            self.stalled.set()
            await asyncio.sleep(60)  # the client dies meanwhile; never accepted
            return "451 4.4.2 Too late"
        if self.mode == "slow":  # accepted after a while (within the shop's 1 s timeout), as a busy server would
            self.stalled.set()
            await asyncio.sleep(0.6)
        self.accepted.append((envelope.rcpt_tos, email.message_from_bytes(envelope.original_content,
                                                                         policy=email.policy.default)))
        return "250 2.0.0 Accepted"

    def ids(self):
        return [m["Message-ID"].strip("<>") for _, m in self.accepted]

    def kinds(self):
        return sorted(i.split("@")[0].split(".")[1] for i in self.ids())  # <order id>.<kind>.<amount>@<domain>


class ScriptedServer:
    """A bare SMTP server on 127.0.0.1 for what aiosmtpd does not do: answer EHLO a line at a time, `drip` seconds
    apart (each within the shop's timeout, the whole longer than its lease), RCPT with `rcpt`, or QUIT with `quit`
    after accepting the message. Keeps the messages it accepted."""

    def __init__(self, drip=0.0, lines=1, rcpt=b"250 OK", quit=b"221 Bye"):
        self.drip, self.lines, self.rcpt, self.quit, self.accepted = drip, lines, rcpt, quit, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"smtp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 scripted\r\n")
            for line in lines:
                command = line[:4].upper()
                if command == b"EHLO":
                    for _ in range(self.lines - 1):
                        time.sleep(self.drip)
                        conn.sendall(b"250-scripted\r\n")
                    conn.sendall(b"250 8BITMIME\r\n")
                elif command == b"DATA":
                    conn.sendall(b"354 Go ahead\r\n")
                    body = b"".join(iter(lambda: (next(lines, b".\r\n")), b".\r\n"))
                    self.accepted.append(email.message_from_bytes(body, policy=email.policy.default))
                    conn.sendall(b"250 Accepted\r\n")
                elif command == b"QUIT":
                    conn.sendall(self.quit + b"\r\n")
                    return
                elif command == b"RCPT":
                    conn.sendall(self.rcpt + b"\r\n")
                else:
                    conn.sendall(b"250 OK\r\n")

    def close(self):
        self.sock.close()


@pytest.fixture
def smtp():
    server = MailServer()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def shop(make_shopper, smtp):
    return wire(make_shopper(smtp_url=smtp.url + "?timeout=5", merchant_email=MERCHANT))


def outbox(shop):
    return shop.shop.orders.ledger.outbox()


def send(shop, now=None):
    return mail.send_due(shop.shop.orders, now=now)


def refund_failing(shop, o, amount):
    """A refund of a paid order, recorded by its event, that the shopper's bank then sends back: the Refund."""
    refund = shop.shop.orders.stripe.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": amount})
    shop.standin.deliver_pending()
    shop.standin.fail_refund(refund.id)
    return refund


def text_and_html(message):
    return (message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content())


def test_a_paid_order_sends_one_notice_and_one_confirmation_however_often_it_is_confirmed(shop, smtp):
    sid = buy(shop)
    shop.get(f"/success?session_id={sid}")  # the confirmation page comes first and fulfils
    shop.get(f"/success?session_id={sid}")
    for _ in range(3):  # then the webhook, each event more than once
        shop.standin.deliver_pending(duplicate=True)
    for row in shop.standin.webhook_log():
        shop.standin.redeliver(row["event_id"])
    assert shop.shop.orders.sync(sid, source="reconcile")[1] == "already fulfilled"
    assert send(shop) == (2, 0) and send(shop) == (0, 0)
    o = order(shop, sid)
    assert smtp.kinds() == ["confirmation", "order_notice"]
    (notice,) = [m for to, m in smtp.accepted if to == [MERCHANT]]
    (confirmation,) = [m for to, m in smtp.accepted if to == [o["customer_email"]]]
    assert o["id"] in notice["Subject"] and notice["From"].addresses[0].addr_spec == "shop@shop.test"
    for message in (notice, confirmation):
        text, html = text_and_html(message)
        for part in (text, html):
            assert o["id"] in part and "Jenny Rosen" in part and "1 Test Street" in part and "Testville" in part
            for key in ("amount_subtotal", "amount_shipping", "amount_tax", "amount_total"):
                assert f"${o[key] // 100}.{o[key] % 100:02d}" in part
            assert o["items"][0]["name"] in part and o["payment_intent"] in part
    assert all(m["sent_at"] and m["attempts"] == 1 for m in outbox(shop))


def test_the_discount_is_in_the_order_summary(smtp, catalog_copy, make_shopper):
    with edit_catalog(catalog_copy) as data:
        data["promotions"] = [{"code": "SPRING10", "percent_off": 10}]
    shop = wire(make_shopper(catalog=str(catalog_copy), smtp_url=smtp.url, merchant_email=MERCHANT))
    to_stripe = shop.checkout(product_id=data["products"][0]["id"], quantity="1")
    assert pay_form(shop, to_stripe.location, promotion_code="SPRING10").status_int == 303
    shop.standin.deliver_pending()
    send(shop)
    o = order(shop, shop.session_id(to_stripe))
    assert o["amount_discount"] > 0
    for _, message in smtp.accepted:
        text, html = text_and_html(message)
        off = f"−${o['amount_discount'] // 100}.{o['amount_discount'] % 100:02d}"
        label = f"Discount ({o['promotion_code']})" if o["promotion_code"] else "Discount"
        assert label in text and off in text and off in html


def test_the_shipping_chosen_is_named_in_the_order_summary(shop, smtp):
    express = shop.shop.catalog().shipping_options[1].name
    to_stripe = shop.checkout(product_id=shop.shop.catalog().products[0].id)
    assert pay_form(shop, to_stripe.location, shipping_option="1").status_int == 303
    shop.standin.deliver_pending()
    send(shop)
    assert len(smtp.accepted) == 2  # the merchant's notice and the shopper's confirmation
    for _, message in smtp.accepted:
        assert all(f"Delivery: {express}" in part for part in text_and_html(message))


def test_tax_in_the_prices_is_shown_as_included(smtp, catalog_copy, make_shopper):
    with edit_catalog(catalog_copy) as data:
        data["tax"] = {"mode": "automatic", "behavior": "inclusive"}
    shop = wire(make_shopper(catalog=str(catalog_copy), smtp_url=smtp.url, merchant_email=MERCHANT))
    sid = buy(shop)
    shop.standin.deliver_pending()
    send(shop)
    o = order(shop, sid)
    assert o["amount_tax"] > 0 and len(smtp.accepted) == 2
    for _, message in smtp.accepted:
        for part in text_and_html(message):
            assert "Tax (included)" in part


def test_a_shop_renamed_in_the_catalog_signs_its_next_emails_with_the_new_name_without_a_restart(
        smtp, catalog_copy, make_shopper):
    shop = wire(make_shopper(catalog=str(catalog_copy), smtp_url=smtp.url, merchant_email=MERCHANT))
    before = paid(shop)
    with edit_catalog(catalog_copy) as data:
        old = data["shop"]["name"]
        data["shop"]["name"] = "Renamed Books"
    assert "Renamed Books" in shop.get("/").text
    after = paid(shop)
    assert send(shop) == (4, 0)
    signed = {(m["Subject"], m["From"].addresses[0].display_name) for _, m in smtp.accepted}
    assert (f"Your order {before['id']} at {old}", old) in signed
    assert (f"Your order {after['id']} at Renamed Books", "Renamed Books") in signed
    assert sum(name == "Renamed Books" for _, name in signed) == 2  # the second order's notice and confirmation


def test_a_failed_delayed_payment_sends_one_notice_to_the_shopper(shop, smtp):
    sid = buy(shop, card=ASYNC_FAIL)
    shop.standin.deliver_pending()
    shop.standin.settle_async(sid)
    shop.standin.deliver_pending(duplicate=True)
    shop.get(f"/success?session_id={sid}")
    assert order(shop, sid)["status"] == "payment_failed"
    assert send(shop) == (1, 0)
    ((to, message),) = smtp.accepted
    assert to == [order(shop, sid)["customer_email"]] and "did not go through" in message["Subject"]
    assert "nothing was charged" in text_and_html(message)[0]


def test_each_refund_sends_one_notice_however_often_its_event_comes(shop, smtp):
    sid = buy(shop)
    shop.standin.deliver_pending()
    o = order(shop, sid)
    refunds = shop.shop.orders.stripe.v1.refunds
    refunds.create({"payment_intent": o["payment_intent"], "amount": 500})
    shop.standin.deliver_pending(duplicate=True)
    for charge in pending(shop, "charge.refunded"):
        shop.standin.redeliver(charge["id"])
    refunds.create({"payment_intent": o["payment_intent"]})  # the rest
    shop.standin.deliver_pending(duplicate=True)
    ledger = shop.shop.orders.ledger
    assert not ledger.apply_refund(o["id"], 500, o["amount_total"], "reconcile")  # a late, smaller total: nothing
    send(shop)
    refunds_sent = sorted((m["kind"], m["amount"]) for m in outbox(shop) if m["kind"] == "refund")
    assert refunds_sent == [("refund", 500), ("refund", o["amount_total"])]
    assert smtp.kinds().count("refund") == 2
    texts = [text_and_html(m)[0] for _, m in smtp.accepted if "Refund" in m["Subject"]]
    assert any("We refunded $5.00" in t for t in texts)


@pytest.mark.parametrize("reverse", [False, True])
def test_each_failed_refund_tells_the_merchant_once_however_often_its_event_comes(shop, smtp, reverse):
    """The bank sent a refund back (a closed card): the shopper was told it was refunded, so the merchant must act.
    Its refund.failed event may also come before the refund's own charge.refunded (which then changes nothing)."""
    o = paid(shop)
    refunds = shop.shop.orders.stripe.v1.refunds
    first = refunds.create({"payment_intent": o["payment_intent"], "amount": 500})
    if not reverse:
        shop.standin.deliver_pending()
    shop.standin.fail_refund(first.id)
    shop.standin.deliver_pending(duplicate=True, reverse=reverse)
    send(shop)
    (notice,) = [m for to, m in smtp.accepted if to == [MERCHANT] and "failed" in m["Subject"]]
    assert notice["Subject"] == f"A refund of order {o['id']} failed"
    text = text_and_html(notice)[0]
    assert f"$5.00 of the refunds of order {o['id']} did not reach the shopper" in text
    assert f"$0.00 refunded of {format_money(o['amount_total'], 'usd')}" in text
    second = refunds.create({"payment_intent": o["payment_intent"], "amount": 300})  # refunded again, failed again
    shop.standin.deliver_pending()
    shop.standin.fail_refund(second.id)
    shop.standin.deliver_pending(duplicate=True)
    reconcile(shop.shop.orders, SimpleNamespace(since=3600, quiet=True))  # nothing more to lower: no third notice
    send(shop)
    assert smtp.kinds().count("refund_failed") == 2  # and the shopper heard of each refund that arrived first
    assert smtp.kinds().count("refund") == (1 if reverse else 2)
    assert all(to == [MERCHANT] for to, m in smtp.accepted if "failed" in m["Subject"])


def test_a_second_refund_failing_before_its_events_arrive_is_told_with_its_own_amount(shop, smtp):
    o = paid(shop)
    refund_failing(shop, o, 500)
    shop.standin.deliver_pending()
    second = shop.shop.orders.stripe.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": 300})
    shop.standin.fail_refund(second.id)  # before its charge.refunded is delivered, which reads the list then
    shop.standin.deliver_pending(duplicate=True)
    send(shop)
    told = [" ".join(text_and_html(m)[0].split()) for to, m in smtp.accepted if "failed" in m["Subject"]]
    assert len(told) == 2 and "$5.00 of the refunds" in told[0] and "$3.00 of the refunds" in told[1]


def test_reconcile_tells_what_a_failed_refund_did_not_give_back_though_another_since_did(shop, smtp):
    """$5 refunded and failed, $3 refunded since, both events lost: what reconcile finds is $3 given back, $5 not."""
    o = paid(shop)
    refund_failing(shop, o, 500)
    shop.shop.orders.stripe.v1.refunds.create({"payment_intent": o["payment_intent"], "amount": 300})
    late = [e["id"] for e in shop.standin.pending_events()]
    assert late and shop.standin.drop_pending_events()
    reconcile(shop.shop.orders, SimpleNamespace(since=3600, quiet=True))
    for event_id in late:
        shop.standin.redeliver(event_id)
    send(shop)
    (told,) = [" ".join(text_and_html(m)[0].split()) for to, m in smtp.accepted if "failed" in m["Subject"]]
    assert "$5.00 of the refunds" in told and "now shows $3.00 refunded" in told
    assert order(shop, o["session_id"])["amount_refunded"] == 300


def test_a_refund_failed_event_delivered_again_at_once_tells_the_merchant_once(shop, smtp):
    """Stripe resends an event whose first delivery is still being answered (slow): both get past "seen before"."""
    o = paid(shop)
    refund_failing(shop, o, 500)
    (failed,) = pending(shop, "refund.failed")
    shop.standin.drop_pending_events()
    copies = [threading.Thread(target=shop.standin.redeliver, args=(failed["id"],)) for _ in range(4)]
    for t in copies:
        t.start()
    for t in copies:
        t.join()
    send(shop)
    assert smtp.kinds().count("refund_failed") == 1
    assert shop.shop.orders.ledger.get(o["id"])["refund_failures"] == 1


def test_a_dispute_tells_the_merchant_once_with_the_date_to_answer_by(shop, smtp):
    """The bank takes the money back unless the merchant answers in time: days, not weeks."""
    session_id = buy(shop, card=DISPUTED)
    (opened,) = pending(shop, "charge.dispute.created")
    shop.standin.deliver_pending()
    o = order(shop, session_id)
    shop.standin.redeliver(opened["id"])
    reconcile(shop.shop.orders, SimpleNamespace(since=3600, quiet=True))
    send(shop)
    (notice,) = [m for to, m in smtp.accepted if m["Subject"] == f"Order {o['id']} is disputed"]
    dispute = opened["data"]["object"]
    due = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(dispute["evidence_details"]["due_by"]))
    text = " ".join(text_and_html(notice)[0].split())
    assert f"disputes the payment of order {o['id']} ({format_money(o['amount_total'], 'usd')}): " \
           f"{dispute['reason'].replace('_', ' ')}." in text and f"Answer it in the Stripe Dashboard by {due}" in text
    assert notice["To"] == MERCHANT and smtp.kinds().count("dispute") == 1


def test_an_inquiry_tells_the_merchant_a_refund_settles_it(shop, smtp):
    o = paid(shop, card=INQUIRY)
    send(shop)
    (notice,) = [m for to, m in smtp.accepted if m["Subject"] == f"Order {o['id']} is disputed"]
    text = " ".join(text_and_html(notice)[0].split())
    assert "It is an inquiry, not yet a chargeback: answer it in the Stripe Dashboard by" in text
    assert f"or refund the order (/admin, or `python shop.py refund {o['id']}`); unanswered, it may become a " \
        "chargeback." in text and "the bank gives the money back" not in text


@pytest.mark.parametrize("card, status", [(DISPUTED, "lost"), (DISPUTED, "under_review"),
                                          (INQUIRY, "warning_under_review")])
def test_a_dispute_first_heard_of_once_answered_or_closed_is_told_without_asking_for_an_answer(
        shop, smtp, card, status):
    session_id = buy(shop, card=card)
    assert shop.standin.drop_pending_events()  # charge.dispute.created lost (with the payment's own events)
    (dispute,) = shop.shop.orders.stripe.v1.disputes.list({"limit": 1}).data
    if status == "lost":
        shop.standin.close_dispute(dispute.id, won=False)
    else:  # the merchant sent evidence from the Dashboard
        with shop.standin.store.tx(write=True) as tx:
            tx.put({**tx.get(dispute.id), "status": status})
    shop.standin.deliver_pending()
    reconcile(shop.shop.orders, SimpleNamespace(since=3600, quiet=True))
    send(shop)
    o = order(shop, session_id)
    assert (o["status"], o["dispute_status"]) == ("disputed", status) and smtp.kinds().count("dispute") == 1
    (notice,) = [m for to, m in smtp.accepted if m["Subject"] == f"Order {o['id']} is disputed"]
    text = " ".join(text_and_html(notice)[0].split())
    assert f"It is {status.replace('_', ' ')} already" in text and "Answer it" not in text
    assert ("An inquiry: the order can still be refunded." in text) == (card == INQUIRY)


def test_a_failed_refund_found_by_reconcile_is_not_told_again_when_its_event_comes_late(shop, smtp):
    """`reconcile` lowers the order and tells the merchant; the refund.failed event, delayed, is the same failure."""
    o = paid(shop)
    refund_failing(shop, o, 500)
    late = pending(shop, "refund.failed")
    assert late and shop.standin.drop_pending_events()
    reconcile(shop.shop.orders, SimpleNamespace(since=3600, quiet=True))
    for event in late:
        shop.standin.redeliver(event["id"])
    send(shop)
    assert smtp.kinds().count("refund_failed") == 1
    assert order(shop, o["session_id"])["amount_refunded"] == 0


def test_a_message_the_server_accepted_is_sent_once_whatever_it_answers_to_quit(make_shopper):
    """smtplib raises for a QUIT answered other than 221: the accepted message was sent again, up to 25 times."""
    server = ScriptedServer(quit=b"421 4.3.2 Closing")
    shop = wire(make_shopper(smtp_url=server.url + "?timeout=5", merchant_email=MERCHANT))
    paid(shop)
    assert send(shop) == (2, 0) and send(shop, now=time.time() + 10 ** 6) == (0, 0)
    assert sorted(m["To"] for m in server.accepted) == ["jenny.rosen@example.com", MERCHANT]
    server.close()


def test_a_send_that_outlasts_its_lease_is_not_sent_again_by_another_sender_meanwhile(make_shopper):
    """A server answering each line just within the timeout: the send takes longer than its lease (10 timeouts), and
    a second sender (another worker or instance) took the message and sent it too."""
    server = ScriptedServer(drip=0.15, lines=24)  # 3.5 s of EHLO, each line 0.15 s apart: within the 0.25 s timeout
    shop = wire(make_shopper(smtp_url=server.url + "?timeout=0.25"))
    paid(shop)  # one email: the shopper's confirmation
    first = threading.Thread(target=send, args=(shop,))
    first.start()
    claimed = wait_for(lambda: outbox(shop)[0]["lease_until"], "the first sender's claim")
    time.sleep(max(0.0, datetime.fromisoformat(claimed).timestamp() - time.time()) + 0.3)  # the claim's lease is over
    assert first.is_alive()  # and its send still under way
    assert send(shop) == (0, 0)  # a second sender finds nothing to send
    first.join(30)
    assert len(server.accepted) == 1 and outbox(shop)[0]["sent_at"]
    server.close()


def test_the_next_attempt_is_counted_from_the_failure_not_from_the_claim(make_shopper):
    """A slow server that then refuses: counted from the claim, the back-off of a send slower than it was spent
    already, and the message was tried again at once."""
    server = ScriptedServer(drip=0.2, lines=6, rcpt=b"451 4.3.0 Try later")  # a second of EHLO, then a refusal
    shop = wire(make_shopper(smtp_url=server.url + "?timeout=5"))
    paid(shop)
    claimed = time.time()
    assert send(shop) == (0, 1)
    (row,) = outbox(shop)
    assert datetime.fromisoformat(row["next_attempt"]).timestamp() >= claimed + 60 + 1.0
    server.close()


def test_a_database_away_is_logged_once_by_the_sender_not_every_second(make_shopper, caplog):
    """The sender's thread tries every second: a traceback each time (each pool timeout on PostgreSQL) drowned the
    log while the database was away."""
    shop = make_shopper()
    ledger, calls = shop.shop.orders.ledger, []
    claim = ledger.claim_mail

    def away(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 3:
            raise sqlite3.OperationalError("unable to open database file")
        return claim(*args, **kwargs)
    ledger.claim_mail = away
    caplog.set_level(logging.INFO, logger="shop")
    stop = start_background(shop.shop)
    try:
        wait_for(lambda: "sending emails works again" in caplog.text, "the sender back at work")
    finally:
        stop()
    assert caplog.text.count("sending emails failed: OperationalError") == 1 and len(calls) >= 4


def test_hostile_names_and_emails_are_escaped_in_the_html_part(make_shopper, smtp, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["name"] = '<img src=x onerror=alert(1)> & "Co"'
    shop = wire(make_shopper(catalog=str(catalog_copy), smtp_url=smtp.url, merchant_email=MERCHANT))
    sid = shop.session_id(shop.checkout(product_id=data["products"][0]["id"], quantity="1"))
    shop.standin.pay(sid, name="<script>alert(2)</script>", email="<b>x</b>&y@evil.example")
    shop.standin.deliver_pending()
    assert send(shop) == (1, 0)  # not a plain address: the merchant hears of the order, the "shopper" gets nothing
    ((to, message),) = smtp.accepted
    text, html = text_and_html(message)
    assert to == [MERCHANT] and "<script>" in text  # plain text is plain
    assert "<script>" not in html and "<img" not in html and "<b>x" not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;Co&quot;" in html
    assert "&lt;b&gt;x&lt;/b&gt;&amp;y@evil.example" in html


@pytest.mark.parametrize("mode", ["refuse", "busy", "drop", "down"])
def test_a_server_that_refuses_drops_or_is_down_is_retried_with_back_off(shop, smtp, mode):
    if mode == "down":
        smtp.controller.stop()
    smtp.mode = mode
    sid = buy(shop)
    shop.standin.deliver_pending()
    assert send(shop) == (0, 2)
    first = {m["kind"]: m for m in outbox(shop)}
    assert all(m["sent_at"] is None and m["attempts"] == 1 and m["lease_until"] is None and m["last_error"]
               for m in first.values())
    assert send(shop) == (0, 0)  # waiting out the back-off
    assert send(shop, now=time.time() + 61) == (0, 2)  # second try after a minute, third after two more
    assert all(m["attempts"] == 2 and m["next_attempt"] > first[m["kind"]]["next_attempt"] for m in outbox(shop))
    if mode == "down":
        smtp.restart()
    smtp.mode = "accept"
    assert send(shop, now=time.time() + 200) == (2, 0)
    assert smtp.kinds() == ["confirmation", "order_notice"] and len(set(smtp.ids())) == 2
    assert all(m["sent_at"] and m["last_error"] is None for m in outbox(shop))
    assert order(shop, sid)["status"] == "paid"


def test_an_email_is_dated_when_it_was_written_not_when_a_retry_sends_it(shop):
    buy(shop)
    shop.standin.deliver_pending()
    [row] = shop.shop.orders.ledger.rows("SELECT * FROM outbox WHERE kind = ?", "confirmation")
    row = dict(row, created="2026-01-02T03:04:05.000000Z")  # written long before this send
    message = email.message_from_string(mail.mime(shop.shop.config, row), policy=email.policy.default)
    assert message["Date"].datetime.isoformat() == "2026-01-02T03:04:05+00:00"


@pytest.fixture
def waiting(shop, smtp, data_dir, database_url, monkeypatch):
    """A paid order's two emails stored while the mail server is busy; `shop.py` commands point at this shop."""
    for name, value in (("DATA_DIR", str(data_dir)), ("DATABASE_URL", database_url), ("SMTP_URL", smtp.url),
                        ("MERCHANT_EMAIL", MERCHANT), ("BASE_URL", "http://shop.test")):
        monkeypatch.setenv(name, value)
    smtp.mode = "busy"
    buy(shop)
    shop.standin.deliver_pending()
    return shop


def test_shop_py_mail_sends_now_whatever_the_back_off_and_outbox_lists_what_waits(waiting, smtp, capsys):
    send(waiting)
    capsys.readouterr()
    assert merchant.main(["outbox"]) == 0
    out = capsys.readouterr().out
    assert "2 email(s) waiting." in out and "order_notice" in out and "SMTPDataError 421" in out
    smtp.mode = "accept"
    assert merchant.main(["mail"]) == 0
    assert "Sent 2 email(s)." in capsys.readouterr().out
    assert merchant.main(["outbox"]) == 0 and "No email is waiting" in capsys.readouterr().out


def test_an_email_that_used_up_its_attempts_is_reported_and_sent_by_shop_py_mail(waiting, smtp, capsys, caplog):
    with waiting.shop.orders.ledger.db.tx() as c:  # 24 failed attempts already, days of back-off ago
        c.execute("UPDATE outbox SET attempts = ?", (mail.MAX_MAIL_ATTEMPTS - 1,))
    assert send(waiting) == (0, 2)
    given_up = [r for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 2 and all(r.levelname == "ERROR" for r in given_up)
    assert send(waiting, now=time.time() + 10 ** 8) == (0, 0)  # no sender tries it again by itself
    capsys.readouterr()
    assert merchant.main(["outbox"]) == 0
    out = capsys.readouterr().out
    assert out.count("attempts 25, given up") == 2 and "2 email(s) waiting." in out
    smtp.mode = "accept"
    assert merchant.main(["mail"]) == 0 and "Sent 2 email(s)." in capsys.readouterr().out
    assert smtp.kinds() == ["confirmation", "order_notice"]


def test_two_senders_racing_send_each_message_once(shop, smtp, make_shopper):
    other = make_shopper(smtp_url=smtp.url, merchant_email=MERCHANT)  # a second instance on the same ledger
    for _ in range(3):
        buy(shop)
    shop.standin.deliver_pending()
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(send(s))) for s in (shop, other, shop, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(sent for sent, _ in results) == 6 and len(smtp.ids()) == 6 and len(set(smtp.ids())) == 6


def test_a_send_cut_off_before_it_was_marked_goes_again_after_its_lease(shop, smtp, monkeypatch):
    buy(shop)
    shop.standin.deliver_pending()
    ledger = shop.shop.orders.ledger
    row = ledger.claim_mail(time.time(), 50)  # a sender took it, then died
    assert mail.send_due(shop.shop.orders) == (1, 0)  # the other one; the leased one waits
    assert mail.send_due(shop.shop.orders, now=time.time() + 51) == (1, 0)
    assert row["id"] in smtp.ids() and len(smtp.ids()) == 2
    assert {m["id"]: m["attempts"] for m in outbox(shop)}[row["id"]] == 2


def test_offline_each_message_is_written_once_as_an_eml_file(make_shopper, data_dir, monkeypatch):
    shop = wire(make_shopper(merchant_email=MERCHANT))
    sid = buy(shop)
    shop.standin.deliver_pending()
    ledger, orders = shop.shop.orders.ledger, shop.shop.orders
    marked = ledger.mail_sent
    monkeypatch.setattr(ledger, "mail_sent", lambda mail_id: (_ for _ in ()).throw(OSError("power cut")))
    with pytest.raises(OSError):  # the file is written, the mark is not: the crash between the two
        mail.send_due(orders)
    monkeypatch.setattr(ledger, "mail_sent", marked)
    assert mail.send_due(orders, now=time.time() + 10 * mail.timeout(orders.config) + 1) == (2, 0)
    files = sorted((data_dir / "outbox").iterdir())
    o = order(shop, sid)
    assert [f.name for f in files] == [f"{o['id']}.{kind}.0@shop.test.eml" for kind in ("confirmation", "order_notice")]
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == o["customer_email"] and o["id"] in message.get_body(("plain",)).get_content()
    assert f"Thank you for your order {o['id']}" in files[0].read_text()  # readable as it is, in any text viewer
    assert mail.send_due(orders, now=time.time() + 3600) == (0, 0) and len(list((data_dir / "outbox").iterdir())) == 2


def test_control_characters_typed_on_stripes_page_reach_neither_the_handoff_nor_emails(make_shopper, data_dir):
    shop = wire(make_shopper(merchant_email=MERCHANT))
    session_id = start(shop)
    shop.standin.pay(session_id, name="\x00\u202eJenny\u2028Rosen", address={
        "line1": "1 Test\x1b[2J Street", "line2": None, "city": "Berlin", "postal_code": "10115", "state": None,
        "country": "DE"})
    shop.standin.deliver_pending()
    [line] = handoff(shop)
    assert line["shipping_name"] == "\ufffd\ufffdJenny\ufffdRosen"
    assert line["shipping_address"]["line1"] == "1 Test\ufffd[2J Street"
    assert mail.send_due(shop.shop.orders) == (2, 0)
    for path in (data_dir / "outbox").iterdir():  # the shopper's confirmation and the merchant's notice
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = message.get_body(("plain",)).get_content()
        assert "Jenny\ufffdRosen" in text and not re.search("[\x00\x1b\u202e]", text)
        assert ("Phone: +1 555 010 0000" in text) == (message["To"] == MERCHANT)  # for the carrier: the merchant's


def test_smtp_with_starttls_sends_the_password_and_the_mail_only_inside_tls(make_shopper, tmp_path, monkeypatch):
    """The usual mail server (port 587): STARTTLS with a certificate the machine trusts, then AUTH, then the mail."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted as a real CA-signed certificate would be
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    logins = []

    def authenticate(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password, session.ssl is not None))
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"shop", b"s3cret"))
    # require_starttls: no MAIL before TLS; auth_require_tls: no AUTH before it either
    server = MailServer(tls_context=tls, require_starttls=True, authenticator=authenticate, auth_require_tls=True)
    server.controller.start()
    try:
        shop = wire(make_shopper(smtp_url=f"smtp://shop:s3cret@localhost:{server.port}?timeout=5",
                                 merchant_email=MERCHANT))
        buy(shop)
        shop.standin.deliver_pending()
        assert send(shop) == (2, 0)
    finally:
        server.controller.stop()
    assert server.kinds() == ["confirmation", "order_notice"]
    assert logins and all(login == (b"shop", b"s3cret", True) for login in logins)


def test_the_smtp_password_is_never_shown_in_settings_logs_or_errors(make_shopper, caplog, capsys):
    server = MailServer(authenticator=lambda *a: AuthResult(success=False, handled=False), auth_require_tls=False)
    server.controller.start()
    try:
        url = f"smtp://shop:pa55-w0rd-xyz@127.0.0.1:{server.controller.port}"
        shop = wire(make_shopper(smtp_url=url, merchant_email=MERCHANT))
        buy(shop)
        shop.standin.deliver_pending()
        assert send(shop) == (0, 2)
        assert [m["last_error"] for m in outbox(shop)] == ["SMTPAuthenticationError 535"] * 2
    finally:
        server.controller.stop()
    config = load_config({"smtp_url": url})
    merchant.show_settings(config)
    shown = capsys.readouterr().out
    assert "SMTP_URL" in shown and "pa55-w0rd-xyz" not in shown and "pa55-w0rd-xyz" not in caplog.text
    with pytest.raises(Exception) as refused:
        load_config({"smtp_url": "smtp://shop:pa55-w0rd-xyz@host:99999"})
    assert "SMTP_URL" in str(refused.value) and "pa55-w0rd-xyz" not in str(refused.value)


# -- a real serving process killed mid-send ----------------------------------------------------------------------

def served_and_paid(spawn, tmp_path, smtp):
    """(process, its env): `python shop.py` with the mail server, and an order paid on it offline; returns once
    its mail thread has reached DATA of the first email."""
    port, data = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    env = {"DATA_DIR": str(data), "BASE_URL": base, "PORT": str(port), "SMTP_URL": smtp.url + "?timeout=1",
           "MERCHANT_EMAIL": MERCHANT, "STRIPE_SECRET_KEY": "", "STRIPE_API_BASE": "", "STRIPE_WEBHOOK_SECRET": ""}
    shop = spawn([sys.executable, "shop.py"], port, env=env)
    stripe = StandIn(data, public_url=base, webhook_url=base + "/webhook")
    answer = urllib.request.urlopen(base + "/")
    cookie = answer.headers["Set-Cookie"].split(";")[0]
    token = answer.read().decode().split('name="csrf_token" value="')[1].split('"')[0]
    request = urllib.request.Request(base + "/checkout", f"csrf_token={token}&product_id=walden&quantity=1".encode(),
                                     {"Cookie": cookie})

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    try:
        urllib.request.build_opener(Stay).open(request)
    except urllib.error.HTTPError as e:
        session_id = e.headers["Location"].rsplit("/", 1)[-1]
    stripe.pay(session_id)  # the serving process's own sender delivers the webhook; its mail thread sends
    assert smtp.stalled.wait(30), "the shop never reached DATA"
    return shop, env


@pytest.mark.slow
def test_a_server_killed_mid_send_sends_each_message_once_after_a_restart(spawn, tmp_path, smtp):
    """SIGKILL while the mail server holds the first message at DATA (never accepted); after a restart the other
    message goes at once and the held one when its lease ends: each id accepted once."""
    smtp.mode = "stall"
    shop, env = served_and_paid(spawn, tmp_path, smtp)
    shop.send_signal(signal.SIGKILL)
    shop.wait()
    smtp.mode = "accept"
    spawn([sys.executable, "shop.py"], int(env["PORT"]), env=env)
    wait_for(lambda: len(smtp.accepted) >= 2, "both emails accepted after the restart", timeout=60)
    book = Ledger(load_config({"data_dir": env["DATA_DIR"]}))
    try:  # once marked sent, no sender takes a message again: what was accepted by then is all there will be
        wait_for(lambda: not book.outbox(pending=True), "both emails marked sent", timeout=60)
    finally:
        book.close()
    assert smtp.kinds() == ["confirmation", "order_notice"] and len(set(smtp.ids())) == 2


@pytest.mark.slow
def test_a_server_stopped_mid_send_marks_that_email_sent_before_it_exits(spawn, tmp_path, smtp):
    """SIGTERM while the mail server takes its time over the first message: the shop waits for its answer and
    marks it sent, so that no restart sends it again; the other message waits for the next start."""
    smtp.mode = "slow"
    shop, env = served_and_paid(spawn, tmp_path, smtp)
    shop.send_signal(signal.SIGTERM)
    assert shop.wait(30) == 0
    log = (tmp_path / "process-0.log").read_text()
    assert log.rstrip().endswith("stopped") and "Traceback" not in log and "sending emails failed" not in log
    book = Ledger(load_config({"data_dir": env["DATA_DIR"]}))
    try:
        pending = {m["id"] for m in book.outbox(pending=True)}
    finally:
        book.close()
    assert len(smtp.accepted) == 1 and len(pending) == 1 and smtp.ids()[0] not in pending
