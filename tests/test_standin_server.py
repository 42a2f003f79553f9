"""The standalone stand-in (`python -m standin`) over real loopback HTTP, driven by the official SDK."""
import urllib.error
import urllib.request

import pytest
import stripe

from tests.standin_helpers import start

@pytest.fixture
def server(tmp_path):
    proc, url = start(tmp_path)
    yield url
    proc.terminate()
    proc.wait(10)


PARAMS = {"mode": "payment", "success_url": "http://127.0.0.1:1/ok?session_id={CHECKOUT_SESSION_ID}",
          "line_items": [{"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 1500,
                                                        "product_data": {"name": "Walden"}}}]}


def test_sdk_over_loopback_and_pay_page(server):
    client = stripe.StripeClient("sk_test_loopback", base_addresses={"api": server})
    s = client.v1.checkout.sessions.create(PARAMS)
    assert s.url == f"{server}/offline-checkout/{s.id}"
    assert client.v1.checkout.sessions.retrieve(s.id, {"expand": ["line_items"]}).line_items.data[0].amount_total == 1500
    answer = urllib.request.urlopen(s.url, timeout=5)
    page = answer.read().decode()
    assert "Test mode" in page and "Walden" in page and 'name="card_number"' in page
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert (answer.headers["X-Frame-Options"], answer.headers["X-Content-Type-Options"]) == ("DENY", "nosniff")
    broken = urllib.request.Request(s.url, b"--x\r\nContent-Disposition: form-data\r\n", method="POST",
                                    headers={"Content-Type": "multipart/form-data; boundary=x"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(broken, timeout=5)
    text = refused.value.read().decode()
    assert refused.value.code == 400 and "The form could not be read." in text and "MultipartError" not in text
    assert 'href="/offline-checkout/static/standin.css"' in page
    css = urllib.request.urlopen(server + "/offline-checkout/static/standin.css", timeout=5)
    assert css.headers["Content-Type"].startswith("text/css") and b".sti" in css.read()
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.retrieve("cs_test_missing")
    assert exc.value.http_status == 404 and exc.value.request_id.startswith("req_")


def test_reset_fault_closes_the_socket_and_the_sdk_retry_is_idempotent(tmp_path):
    proc, url = start(tmp_path, faults="POST /v1/checkout/sessions=reset*1")
    try:
        client = stripe.StripeClient("sk_test_loopback", base_addresses={"api": url}, max_network_retries=2)
        s = client.v1.checkout.sessions.create(PARAMS)
        assert s.last_response.headers.get("idempotent-replayed") == "true"  # the first response was lost
        assert [x.id for x in client.v1.checkout.sessions.list().data] == [s.id]
        once = stripe.StripeClient("sk_test_loopback", base_addresses={"api": url}, max_network_retries=0)
        assert once.v1.checkout.sessions.list().data[0].id == s.id
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_keep_alive_connections_of_two_busy_shops_leave_room_for_a_shopper(server):
    """The stripe SDK keeps a connection open per request thread, so two shops of 128 threads hold 256: the pay page
    must still open (waitress's default limit is 100 connections)."""
    import socket
    from urllib.parse import urlsplit
    address = urlsplit(server).hostname, urlsplit(server).port
    held = [socket.create_connection(address, timeout=5) for _ in range(256)]
    try:
        assert b"Offline Stripe stand-in" in urllib.request.urlopen(server + "/", timeout=5).read()
    finally:
        for s in held:
            s.close()
