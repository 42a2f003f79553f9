"""Browser ids and CSRF tokens: ids are random and signed by the shop, tokens are the HMAC of the id, and neither
can be made up without the shop's secret."""

import base64
import hashlib
import hmac
import io
import os
import re

import pytest
from bottle import BaseRequest, BaseResponse

from webshop.security import Guard, cookies
from webshop.settings import ShopError, load_config

SIGNED = re.compile(r"([A-Za-z0-9_-]{24})\.([A-Za-z0-9_-]{24})")


def guard(tmp_path, secret=None, base_url="http://shop.test"):
    config = load_config({"data_dir": str(tmp_path), "base_url": base_url}, environ={})
    return Guard(config, secret or os.urandom(32))


def request(cookie="", **environ):
    return BaseRequest({"HTTP_COOKIE": cookie, "REQUEST_METHOD": "POST", **environ})


def set_cookies(response):
    return [value for name, value in response.headerlist if name == "Set-Cookie"]


def new_id(g):
    """A browser's first visit: the id it is given, and the Set-Cookie header that gives it."""
    response = BaseResponse()
    sid = g.browser_id(request(), response)
    (header,) = set_cookies(response)
    return sid, header


def mac(secret, text):
    return base64.urlsafe_b64encode(hmac.new(secret, text.encode(), hashlib.sha256).digest()[:18]).decode()


def test_browser_ids_are_distinct_signed_and_set_once(tmp_path):
    g = guard(tmp_path)
    made = [new_id(g) for _ in range(1000)]
    sids = [sid for sid, _ in made]
    assert len(set(sids)) == len(sids)
    for sid, header in made:
        nonce, signature = SIGNED.fullmatch(sid).groups()
        assert signature == mac(g.secret, f"sid:{nonce}")
        assert header.startswith(f"sid={sid};")
    # Sent back, an id is this browser's: no new one, the same id.
    response = BaseResponse()
    assert g.browser_id(request(f"sid={sids[0]}"), response) == sids[0] and not set_cookies(response)


def test_an_id_is_made_once_per_request(tmp_path):
    g = guard(tmp_path)
    req, response = request(), BaseResponse()
    first = g.browser_id(req, response)
    assert g.browser_id(req, response) == first and g.token(req, response) == g.token(req, response)
    assert len(set_cookies(response)) == 1


def test_csrf_token_is_the_hmac_of_the_browser_id(tmp_path):
    secret = os.urandom(32)
    g = guard(tmp_path, secret)
    sid, _ = new_id(g)
    token = g.token(request(f"sid={sid}"), BaseResponse())
    assert token == mac(secret, f"csrf:{sid}") and token != sid.split(".")[1]
    other, _ = new_id(g)
    assert g.token(request(f"sid={other}"), BaseResponse()) != token


def check(g, sid, token, **environ):
    body = f"csrf_token={token}".encode()
    g.check(request(f"sid={sid}", CONTENT_TYPE="application/x-www-form-urlencoded", CONTENT_LENGTH=str(len(body)),
                    **{"wsgi.input": io.BytesIO(body)}, **environ))


def test_check_takes_only_this_browsers_token_from_this_origin(tmp_path):
    g = guard(tmp_path)
    sid, _ = new_id(g)
    other, _ = new_id(g)
    token = g.token(request(f"sid={sid}"), BaseResponse())
    check(g, sid, token)
    check(g, sid, token, HTTP_ORIGIN="http://shop.test", HTTP_SEC_FETCH_SITE="same-origin")
    for args, environ in (((other, token), {}), ((sid, token[:-1]), {}), ((sid, ""), {}),
                          ((sid.split(".")[0], mac(g.secret, "csrf:" + sid.split(".")[0])), {}),
                          ((sid, token), {"HTTP_ORIGIN": "https://evil.example"}),
                          ((sid, token), {"HTTP_SEC_FETCH_SITE": "cross-site"})):
        with pytest.raises(ShopError) as refused:
            check(g, *args, **environ)
        assert refused.value.status == 403


def test_a_second_shop_with_another_secret_takes_none_of_the_first_ones_ids(tmp_path):
    first, second = guard(tmp_path), guard(tmp_path)
    sid, _ = new_id(first)
    assert first.valid_sid(request(f"sid={sid}")) == sid
    assert second.valid_sid(request(f"sid={sid}")) is None
    response = BaseResponse()
    assert second.browser_id(request(f"sid={sid}"), response) != sid and set_cookies(response)


def test_on_https_the_id_lives_in_a_host_cookie(tmp_path):
    g = guard(tmp_path, base_url="https://shop.example")
    sid, header = new_id(g)
    assert header.startswith(f"__Host-sid={sid};") and "Secure" in header and "Path=/" in header
    assert g.valid_sid(request(f"__Host-sid={sid}")) == sid and g.valid_sid(request(f"sid={sid}")) is None


@pytest.mark.parametrize("header, expected", [
    ("a=1; b=2", {"a": "1", "b": "2"}), ("theme=dark mode; a=1", {"theme": "dark mode", "a": "1"}),
    ('prefs={"lang":"en"}; a=1', {"prefs": '{"lang":"en"}', "a": "1"}), ("=x; a=1", {"a": "1"}),
    ("flag; a=1", {"a": "1"}), ('a="quoted"', {"a": "quoted"}), ("a=1; a=2", {"a": "1"}), ("", {}),
    ("a=x=y", {"a": "x=y"}), (" a=1 ;b=2;", {"a": "1", "b": "2"})])
def test_cookies_are_read_leniently(header, expected):
    assert cookies(request(header)) == expected
