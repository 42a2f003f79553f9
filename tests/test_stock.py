"""Stock and free shipping from catalog.json: the last copy is sold once, pages say what is left, the cart holds
no more than there is, and a shipping option can be free over an amount."""

import subprocess
import sys
import threading
import time

import pytest
import webtest

from standin import PayError
from webshop import payments
from tests.conftest import ROOT, edit_catalog, pay, settled, slow_to_expire, wire


@pytest.fixture
def stocked(make_shopper, catalog_copy):
    """make(stock=N for walden, **catalog edits) -> a shopper on a catalog with that stock."""
    def make(walden=1, **top):
        with edit_catalog(catalog_copy) as data:
            for p in data["products"]:
                if p["id"] == "walden":
                    p["stock"] = walden
            data.update(top)
        return make_shopper(catalog=str(catalog_copy))
    return make


def stock_of_walden(catalog_copy, copies):
    """The merchant's edit of catalog.json: walden's stock is now `copies`."""
    with edit_catalog(catalog_copy) as data:
        next(p for p in data["products"] if p["id"] == "walden")["stock"] = copies


def card(page, product_id):
    """The home page's card of one product (found by its cover image)."""
    return next(c for c in page.text.split('<li class="card">') if f"/{product_id}." in c.split(">")[0])


def test_pages_say_only_n_left_then_sold_out_without_buttons(stocked):
    shopper = stocked(walden=2)
    assert "Only 2 left" in card(shopper.get("/"), "walden")
    assert "left" not in card(shopper.get("/"), "moby-dick")  # unlimited stock says nothing
    shopper.checkout(product_id="walden", quantity="2")  # an open checkout holds both copies
    sold_out = card(type(shopper)(shopper.app).get("/"), "walden")  # for every other browser
    assert "Sold out" in sold_out and "Buy now" not in sold_out and "Add to cart" not in sold_out
    assert "Sold out" not in card(shopper.get("/"), "walden")  # they are this shopper's, who can check out again


def test_copies_held_by_a_checkout_left_open_are_said_to_be_sold_out_for_now_not_for_good(stocked):
    shopper = stocked(walden=1)
    other = type(shopper)(shopper.app)
    other.add("walden")  # in the cart, not yet checked out
    held = shopper.session_id(shopper.checkout(product_id="walden"))  # "Buy now", then Back: the copy is held
    assert "Sold out for now" in card(other.get("/"), "walden")
    assert "Sorry, Walden is sold out for now, so it is not in your cart: the last copies are in other shoppers' " \
           "checkouts, and any they do not pay for come back within about half an hour." in other.get("/cart").html.text
    refused = other.post("/checkout", {"csrf_token": other.csrf(), "product_id": "walden"}, status=409)
    assert "Sorry, Walden is sold out for now" in refused.text
    back = other.get(other.checkout().location)  # the cart's Checkout: its one book held elsewhere
    assert "Sorry, Walden is sold out for now" in back.text and "nothing to check out" not in back.text
    shopper.standin.pay(held)
    wire(shopper).standin.deliver_pending()
    assert "Sold out for now" not in card(other.get("/"), "walden") and "Sold out" in card(other.get("/"), "walden")
    assert "Sorry, Walden is sold out, so it is not in your cart." in other.get("/cart").text  # for good


def test_a_copy_held_beyond_a_stock_lowered_below_the_sales_is_never_said_to_come_back(stocked, catalog_copy):
    shopper = stocked(walden=2)
    buyer, holder, other = (type(shopper)(shopper.app) for _ in range(3))
    buyer.standin.pay(buyer.session_id(buyer.checkout(product_id="walden")))
    wire(shopper).standin.deliver_pending()
    holder.checkout(product_id="walden")  # the other copy, held
    shopper.standin.faults.add("POST /v1/checkout/sessions/{id}/expire", "500", times=3)  # the closer cannot close it
    stock_of_walden(catalog_copy, 1)  # the merchant: only the copy sold was ever there
    shopper.edited()
    assert "Sold out" in card(other.get("/"), "walden") and "for now" not in card(other.get("/"), "walden")
    refused = other.post("/checkout", {"csrf_token": other.csrf(), "product_id": "walden"}, status=409)
    assert "Sorry, Walden is sold out." in refused.text


def test_the_last_copy_checked_out_by_two_shoppers_at_once_is_sold_once(stocked, make_shopper):
    first = stocked(walden=1)
    others = [make_shopper(catalog=first.shop.config.catalog) for _ in range(5)]
    tokens, gate, answers = [o.csrf() for o in others], threading.Barrier(len(others)), [None] * len(others)

    def click(i):
        browser = webtest.TestApp(others[i].app, extra_environ={"HTTP_HOST": "shop.test", "HTTP_COOKIE": "; ".join(
            f"{k}={v}" for k, v in others[i].cookies.items())})
        gate.wait()
        answers[i] = browser.post("/checkout", {"csrf_token": tokens[i], "product_id": "walden"}, expect_errors=True)
    threads = [threading.Thread(target=click, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.status_int for a in answers) == [303] + [409] * 4
    refused = [a for a in answers if a.status_int == 409]
    assert all("Walden is sold out" in a.text for a in refused)  # told before Stripe, never a payment to refund
    winner = next(a for a in answers if a.status_int == 303)
    assert "/offline-checkout/" in winner.location
    sessions = first.shop.orders.stripe.v1.checkout.sessions.list({"limit": 100})
    assert len(sessions.data) == 1  # the refused shoppers never reached Stripe


def test_a_session_holding_stock_expires_after_30_minutes_and_gives_the_copy_back(stocked):
    shopper = stocked(walden=1)
    session_id = shopper.session_id(shopper.checkout(product_id="walden"))
    session = shopper.standin.get(session_id)
    assert 30 * 60 <= session["expires_at"] - session["created"] <= 32 * 60  # Stripe's shortest lifetime
    unstocked = shopper.session_id(shopper.checkout(product_id="moby-dick"))
    assert shopper.standin.get(unstocked)["expires_at"] - shopper.standin.get(unstocked)["created"] == 24 * 3600
    shopper.shop.orders.sync(session_id, dict(shopper.standin.get(session_id), status="expired"), "test")
    assert "Only 1 left" in card(shopper.get("/"), "walden")


def test_lowering_a_stock_expires_the_newest_checkouts_that_hold_more_than_is_left(stocked, catalog_copy):
    """A merchant who finds fewer copies than the catalog said sells no more than there are."""
    first = stocked(walden=3)
    shoppers = [first] + [type(first)(first.app) for _ in range(2)]
    sessions = [s.session_id(s.checkout(product_id="walden")) for s in shoppers]  # oldest first
    stock_of_walden(catalog_copy, 1)
    # The edit is live (none left for others), and the page that loaded it waited for a few checkouts to close.
    assert "Only" not in card(type(first)(first.app).get("/"), "walden")
    assert [first.standin.get(s)["status"] for s in sessions] == ["open", "expired", "expired"]
    assert first.shop.orders.ledger.stock_levels(["walden"]) == {"walden": (1, 0)}
    with pytest.raises(PayError):
        first.standin.pay(sessions[2])
    first.standin.pay(sessions[0])  # the oldest checkout is paid, and sells the one copy
    assert "Thank you" in first.get(f"/success?session_id={sessions[0]}")
    assert first.shop.orders.ledger.stock_levels(["walden"]) == {"walden": (0, 1)}


def test_lowering_a_stock_counts_a_checkout_past_its_expiry_that_may_have_been_paid(stocked, catalog_copy):
    """Its payment in its last seconds may not have reached the shop yet: it keeps its copy, so the newer checkout
    is the one closed."""
    first = stocked(walden=2)
    second = type(first)(first.app)
    lapsed, newer = (s.session_id(s.checkout(product_id="walden")) for s in (first, second))
    with first.shop.orders.ledger.db.tx() as c:  # its 30 minutes are up; whether it was paid, the shop does not know
        c.execute("UPDATE orders SET session_expires_at = ? WHERE session_id = ?", (int(time.time()) - 60, lapsed))
    stock_of_walden(catalog_copy, 1)
    first.get("/")
    assert first.standin.get(newer)["status"] == "expired"


def test_lowering_a_stock_while_stripe_is_down_asks_stripe_once_not_once_per_checkout(stocked, catalog_copy, caplog):
    """The request that loads the edit waits for one unanswered call, not for one per checkout to close."""
    first = stocked(walden=4)
    shoppers = [first] + [type(first)(first.app) for _ in range(3)]
    sessions = [s.session_id(s.checkout(product_id="walden")) for s in shoppers]
    expire = "POST /v1/checkout/sessions/{id}/expire"
    first.standin.faults.add(expire, "500", times=100)
    stock_of_walden(catalog_copy, 0)
    first.edited()
    assert first.standin.calls[expire] == first.shop.config.stripe_max_retries + 1  # one call and the SDK's retries
    assert "and 3 more (stock lowered)" in caplog.text
    assert [first.standin.get(s)["status"] for s in sessions] == ["open"] * 4


def test_a_checkout_beyond_a_lowered_stock_is_not_offered_while_stripe_cannot_close_it(stocked, catalog_copy):
    first = stocked(walden=2)
    first.checkout(product_id="walden")
    newest = type(first)(first.app)
    newest.add("walden")
    newest.session_id(newest.checkout())
    assert "Continue your payment" in newest.get("/cart").text
    first.standin.faults.add("POST /v1/checkout/sessions/{id}/expire", "500", times=100)
    stock_of_walden(catalog_copy, 1)
    page = newest.edited("/cart")
    assert "Continue your payment" not in page.text and "Walden is sold out" in page.text


def test_the_request_that_loads_an_edit_does_not_wait_for_the_checkouts_it_closes(stocked, catalog_copy, monkeypatch):
    first = stocked(walden=2)
    sessions = [s.session_id(s.checkout(product_id="walden")) for s in (first, type(first)(first.app))]
    release, _, _ = slow_to_expire(first.shop, monkeypatch)
    stock_of_walden(catalog_copy, 0)
    assert "Sold out" in card(type(first)(first.app).get("/"), "walden")  # answered while Stripe is being asked
    assert [first.standin.get(s)["status"] for s in sessions] == ["open", "open"]
    release.set()
    settled(first.shop)
    assert [first.standin.get(s)["status"] for s in sessions] == ["expired", "expired"]


def test_a_checkout_being_closed_for_a_repriced_book_holds_no_copy_against_a_stock_lowered_with_it(
        stocked, catalog_copy, monkeypatch):
    """One edit reprices a book and lowers walden's stock: the repriced checkout gives its copy up, so the newest
    click, under way meanwhile, keeps the copy left."""
    first = stocked(walden=3)
    other = next(p for p in first.shop.catalog().products if p.id != "walden")
    first.add("walden")
    first.add(other.id)
    repriced = first.session_id(first.checkout())
    second = type(first)(first.app)
    kept = second.session_id(second.checkout(product_id="walden"))
    orders, create = first.shop.orders, payments.create_session
    release, _, _ = slow_to_expire(first.shop, monkeypatch)

    def edited_meanwhile(*args):
        with edit_catalog(catalog_copy) as data:
            for p in data["products"]:
                p["stock"] = 2 if p["id"] == "walden" else p.get("stock")
                p["price"] += 100 if p["id"] == other.id else 0
        first.shop.catalog()
        return create(*args)
    monkeypatch.setattr(payments, "create_session", edited_meanwhile)
    third = type(first)(first.app)
    assert "/offline-checkout/" in third.checkout(product_id="walden").location
    release.set()
    settled(first.shop)
    newest = [s.id for s in orders.stripe.v1.checkout.sessions.list({"limit": 10}).data if s.id not in (repriced, kept)]
    assert [first.standin.get(s)["status"] for s in (repriced, kept, *newest)] == ["expired", "open", "open"]


def test_a_checkout_under_way_when_the_stock_is_lowered_is_refused_if_the_copies_are_gone(
        stocked, catalog_copy, monkeypatch):
    """The edit lands while a click waits on Stripe: that click is the newest, so it is the one that goes."""
    first = stocked(walden=2)
    held = first.session_id(first.checkout(product_id="walden"))
    later = type(first)(first.app)
    create = payments.create_session

    def lowered_meanwhile(*args):
        stock_of_walden(catalog_copy, 1)
        first.shop.catalog()  # another request loads the edit while this click waits on Stripe
        return create(*args)
    monkeypatch.setattr(payments, "create_session", lowered_meanwhile)
    answer = later.checkout(product_id="walden")
    assert answer.status_int == 303 and answer.location.endswith("/cart")
    page = later.get(answer.location)
    assert "changed a price or the copies left while you were checking out" in page.text
    assert "Continue your payment" not in page.text
    assert first.standin.get(held)["status"] == "open"  # the first to check out keeps its copy
    made = [s.id for s in first.shop.orders.stripe.v1.checkout.sessions.list({"limit": 10}).data if s.id != held]
    assert [first.standin.get(s)["status"] for s in made] == ["expired"]
    assert first.shop.orders.ledger.stock_levels(["walden"]) == {"walden": (1, 0)}


def test_of_two_checkouts_under_way_when_the_stock_is_lowered_the_first_keeps_its_copy(
        stocked, catalog_copy, monkeypatch):
    """The newer click hears back from Stripe first; the older one still keeps the copy left."""
    first = stocked(walden=2)
    second = type(first)(first.app)
    create, answers = payments.create_session, []

    def in_turn(*args):
        if not answers:  # the first click waits on Stripe while the second checks out and the edit lands
            answers.append(None)
            answers.append(second.checkout(product_id="walden"))
        elif len(answers) == 1:  # the second click waits on Stripe while another request loads the edit
            stock_of_walden(catalog_copy, 1)
            first.shop.catalog()
        return create(*args)
    monkeypatch.setattr(payments, "create_session", in_turn)
    older = first.session_id(first.checkout(product_id="walden"))
    newer = second.session_id(answers[1])
    settled(first.shop)
    assert [first.standin.get(s)["status"] for s in (older, newer)] == ["open", "expired"]
    assert first.shop.orders.ledger.stock_levels(["walden"]) == {"walden": (1, 0)}


def test_a_checkout_paid_as_a_lowered_stock_closes_it_leaves_the_next_newest_to_go(stocked, catalog_copy, monkeypatch):
    """The newest was paid at Stripe before it could be expired (its event still on its way): the older one goes."""
    first = stocked(walden=2)
    second = type(first)(first.app)
    older = first.session_id(first.checkout(product_id="walden"))
    newer = second.session_id(second.checkout(product_id="walden"))
    orders, expire = first.shop.orders, first.shop.orders.expire

    def paid_first(session_id, source):
        if session_id == newer:
            first.standin.pay(newer)
        return expire(session_id, source)
    monkeypatch.setattr(orders, "expire", paid_first)
    stock_of_walden(catalog_copy, 1)
    first.edited()
    assert orders.ledger.by_session(newer)["status"] == "paid"
    assert first.standin.get(older)["status"] == "expired"
    assert orders.ledger.stock_levels(["walden"]) == {"walden": (0, 1)}


def test_a_session_past_its_expiry_keeps_its_copy_until_stripe_says_it_expired_unpaid(stocked):
    """Paid in its last seconds, its payment may reach the shop minutes later: selling the copy again at its expiry
    sold the last copy twice. Its expired event gives it back (or, if that never comes, an hour)."""
    shopper = stocked(walden=1)
    session_id = shopper.session_id(shopper.checkout(product_id="walden"))
    other = type(shopper)(shopper.app)
    assert "Sold out" in card(other.get("/"), "walden")

    def expired(seconds_ago):
        with shopper.shop.orders.ledger.db.tx() as c:
            c.execute("UPDATE orders SET session_expires_at = ? WHERE session_id = ?",
                      (int(time.time()) - seconds_ago, session_id))
    expired(1)  # its 30 minutes are up; whether it was paid, the shop does not know yet
    assert "Sold out" in card(other.get("/"), "walden")
    other.post("/checkout", {"csrf_token": other.csrf(), "product_id": "walden"}, status=409)
    expired(3601)  # no word from Stripe in an hour (reconcile, from cron, would have settled it)
    assert "Only 1 left" in card(other.get("/"), "walden")
    expired(1)
    wire(shopper)
    shopper.shop.orders.stripe.v1.checkout.sessions.expire(session_id)  # Stripe then sends checkout.session.expired
    shopper.standin.deliver_pending()
    assert "Only 1 left" in card(other.get("/"), "walden")
    assert other.checkout(product_id="walden").location.startswith(shopper.shop.config.base_url)


def test_the_cart_holds_no_more_than_is_left(stocked):
    shopper = stocked(walden=3)
    cart = shopper.add("walden", 5).follow()
    assert shopper.cart_cookie() == "walden:3" and "holds 3 of “Walden”: that is as many as you can buy" in cart.text
    shopper.add("walden", 1)
    assert shopper.cart_cookie() == "walden:3"
    shopper.checkout()  # holds all three
    other = type(shopper)(shopper.app)  # another browser
    refused = other.post("/cart", {"csrf_token": other.csrf(), "action": "add", "product_id": "walden"}, status=409)
    assert "sold out" in refused.text
    other.set_cookie("cart", "walden:1")
    assert "sold out" in other.get("/cart").text
    assert 'value="3"' in cart.text


def test_a_paid_order_keeps_its_copies_and_a_refund_restocks_only_when_asked(stocked, data_dir):
    shopper = stocked(walden=2)
    to_stripe = shopper.checkout(product_id="walden", quantity="2")
    pay(shopper, to_stripe)
    wire(shopper)
    shopper.standin.deliver_pending()
    order = shopper.shop.orders.ledger.by_session(shopper.session_id(to_stripe))
    assert order["status"] == "paid"
    assert "Sold out" in card(shopper.get("/"), "walden")

    def command(*args):
        env = {"DATA_DIR": str(data_dir), "CATALOG": str(shopper.shop.config.catalog), "PATH": "/usr/bin:/bin",
               "BASE_URL": "http://127.0.0.1:9", "DATABASE_URL": shopper.shop.config.database_url}
        return subprocess.run([sys.executable, "shop.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
    listing = command("stock")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].split() == ["walden", "2", "0", "2", "0"]
    assert command("refund", order["id"], "--amount", "100").returncode == 0
    assert "Sold out" in card(shopper.get("/"), "walden")  # a refund alone does not restock
    assert command("refund", order["id"], "--amount", "100", "--restock").returncode == 0
    assert "Only 2 left" in card(shopper.get("/"), "walden")
    with edit_catalog(shopper.shop.config.catalog) as data:  # a broken edit: the shop goes on with the last good one
        data["products"][0]["price"] = 12.5
    listing = command("stock")
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].split() == ["walden", "2", "0", "0", "2"]
    assert "the last edit was not loaded" in listing.stderr


def test_stock_values_are_checked_with_the_field_path(stocked, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["products"][0]["stock"] = "ten"
    check = subprocess.run([sys.executable, "shop.py", "check"], cwd=ROOT, capture_output=True, text=True,
                           env={"CATALOG": str(catalog_copy), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert check.returncode == 1
    assert 'catalog.json: products[0].stock: must be a whole number from 0 to 1000000, got "ten"' in check.stdout
    listing = subprocess.run([sys.executable, "shop.py", "stock"], cwd=ROOT, capture_output=True, text=True,
                             env={"CATALOG": str(catalog_copy), "DATA_DIR": str(catalog_copy.parent / "data"),
                                  "PATH": "/usr/bin:/bin"}, timeout=60)
    assert listing.returncode == 1 and "Traceback" not in listing.stderr
    assert 'catalog.json: products[0].stock: must be a whole number' in listing.stderr


def test_free_shipping_over_an_amount_is_offered_at_zero_and_shown_on_the_cart(make_shopper, catalog_copy):
    with edit_catalog(catalog_copy) as data:
        data["shipping"]["options"][0]["free_over"] = 3000
    shopper = make_shopper(catalog=str(catalog_copy))
    standard = data["shipping"]["options"][0]
    shopper.add("walden")  # under the amount
    assert f"Free {standard['name'].lower()} over $30.00." in shopper.get("/cart").text

    def rates(checkout):
        session = shopper.standin.get(shopper.session_id(checkout))
        return [shopper.standin.get(o["shipping_rate"])["fixed_amount"]["amount"] for o in session["shipping_options"]]
    assert rates(shopper.checkout())[0] == standard["amount"]
    shopper.add("moby-dick", 2)
    page = shopper.get("/cart").text
    assert "this order qualifies" in page and f"{standard['name']}: free, " in page  # as checkout will charge it
    assert rates(shopper.checkout())[0] == 0


def test_the_cart_lists_each_shipping_option_with_its_fee_and_delivery_time(make_shopper, catalog_copy):
    """A shopper weighs the shipping before going to pay: the fees are the catalog's flat rates."""
    with edit_catalog(catalog_copy) as data:
        data["shipping"]["options"][1].update(amount=0, min_days=1, max_days=1, name="Pick-up & go")
    shopper = make_shopper(catalog=str(catalog_copy))
    shopper.add("walden")
    standard = data["shipping"]["options"][0]
    said = (f"{standard['name']}: ${standard['amount'] // 100}.{standard['amount'] % 100:02d}, "
            f"{standard['min_days']}–{standard['max_days']} business days; Pick-up &amp; go: free, 1 business day.")
    assert said in shopper.get("/cart").text


def test_free_shipping_starts_at_the_amount_itself_as_the_cart_page_says(make_shopper, catalog_copy):
    shopper = make_shopper(catalog=str(catalog_copy))
    book = shopper.shop.catalog().products[0]
    with edit_catalog(catalog_copy) as data:
        data["shipping"]["options"][0]["free_over"] = 2 * book.price  # exactly what two copies come to
    shopper.add(book.id, 2)
    assert "this order qualifies" in shopper.get("/cart").text
    session = shopper.standin.get(shopper.session_id(shopper.checkout()))
    rate = shopper.standin.get(session["shipping_options"][0]["shipping_rate"])
    assert rate["fixed_amount"]["amount"] == 0 and session["amount_subtotal"] == 2 * book.price


def test_a_cart_with_more_than_is_left_checks_out_what_is_left_and_sold_out_is_the_shops_own_page(stocked,
                                                                                                  make_shopper):
    shopper = stocked(walden=3)
    shopper.add("walden", 3)
    other = make_shopper(catalog=shopper.shop.config.catalog)
    other.checkout(product_id="walden")  # takes one of the three while the first cart still says 3
    session = shopper.standin.get(shopper.session_id(shopper.checkout()))
    order = shopper.shop.orders.ledger.by_session(session["id"])
    assert [i["quantity"] for i in order["items"]] == [2]
    canceled = shopper.get(session["cancel_url"])  # Cancel on Stripe's page: the cart is not as the shopper left it
    assert "Your cart holds what was left of each book when you went to pay." in canceled.text
    assert "just as you left it" not in canceled.text and 'class="count">(2)<' in canceled.text
    third = make_shopper(catalog=shopper.shop.config.catalog)
    refused = third.post("/checkout", {"csrf_token": third.csrf(), "product_id": "walden"}, status=409)
    assert "<h1>Sorry</h1>" in refused.text and "Walden is sold out" in refused.text  # the shop's page
    assert refused.headers["Content-Security-Policy"]


def test_paying_a_session_left_with_back_then_checking_out_again_never_sells_a_copy_twice(stocked):
    shopper = stocked(walden=1)
    first = shopper.session_id(shopper.checkout(product_id="walden"))
    shopper.standin.pay(first)  # paid in another tab; its events have not arrived yet
    refused = shopper.post("/checkout", {"csrf_token": shopper.csrf(), "product_id": "walden"}, status=409)
    assert "Walden is sold out" in refused.text
    assert shopper.shop.orders.ledger.by_session(first)["status"] == "paid"  # learnt from Stripe on the way
    assert shopper.shop.orders.ledger.stock_levels(["walden"]) == {"walden": (0, 1)}
    assert [o["status"] for o in shopper.shop.orders.ledger.list()] == ["expired", "paid"]  # no copy held


def test_back_from_checkout_keeps_the_copies_the_shoppers_own_checkout_holds(stocked):
    shopper = stocked(walden=3)
    shopper.add("walden", 3)
    shopper.checkout()  # holds all three; then Back to the cart
    cart = shopper.get("/cart").text
    assert "sold out" not in cart and 'value="3"' in cart and shopper.cart_cookie() == "walden:3"
    assert "You have a checkout that is still open." in cart  # it is this cart, not another one
    home = shopper.get("/").html.find("h2", string="Walden").find_parent("li")
    assert "Sold out" not in home.text and home.find("input", {"name": "quantity"})["max"] == "3"  # its own copies
    shopper.set_cookie("cart", "walden:5")  # more than there are: the cart shows 3, but paying 3 would not empty it
    cart = shopper.get("/cart").text
    assert "Only 3 of Walden left: your cart holds that many." in cart and 'class="count">(3)<' in cart
    assert 'class="count">(3)<' in shopper.get("/").text  # every page's header counts the cart as held
    assert "still open for 3 × Walden, which is not your cart as it is now" in cart


def test_an_add_after_back_counts_the_copies_of_the_own_checkout_and_never_lowers_the_cart(stocked):
    shopper = stocked(walden=5)
    shopper.add("walden", 3)
    shopper.checkout()  # holds three of the five
    page = shopper.add("walden", 1).follow()
    assert shopper.cart_cookie() == "walden:4" and "Added “Walden” to your cart." in page.text
    page = shopper.add("walden", 5).follow()
    assert shopper.cart_cookie() == "walden:5" and "holds 5 of “Walden”: that is as many as you can buy" in page.text


def test_paying_a_cart_held_to_the_copies_left_empties_it(stocked):
    shopper = stocked(walden=3)
    shopper.add("walden", 2)
    shopper.add("moby-dick")
    shopper.set_quantity("walden", 5)  # more than is left: the cart page says it holds 3
    to_stripe = shopper.checkout()
    assert shopper.cart_cookie() == "walden:3.moby-dick:1"  # the cart is what is checked out
    confirmation = pay(shopper, to_stripe).location
    assert "Thank you" in shopper.get(confirmation).text and not shopper.cart_cookie()  # nothing to pay twice


@pytest.mark.parametrize("fields, status", [({"product_id": "moby-dick", "quantity": "0"}, 400),
                                            ({"product_id": "walden", "quantity": "4"}, 409),
                                            ({"product_id": "no-such-book"}, 400)])
def test_a_refused_checkout_leaves_the_open_one_payable(stocked, fields, status):
    shopper = stocked(walden=3)
    shopper.add("walden", 1)
    first = shopper.session_id(shopper.checkout())  # then Back, and a Buy now that is refused
    shopper.post("/checkout", {"csrf_token": shopper.csrf(), **fields}, status=status)
    assert shopper.standin.get(first)["status"] == "open" and "Continue your payment" in shopper.get("/cart").text
    shopper.set_cookie("cart", "")  # and an empty cart's Checkout: nothing to buy, nothing expired
    assert shopper.checkout().location.endswith("/cart?empty=1") and shopper.standin.get(first)["status"] == "open"
