"""Hot reload: edits to catalog.json go live without a restart, and a bad edit never takes the shop down."""
import copy
import json
import logging
import os
import threading
import types

import pytest

from webshop import catalog
from webshop.catalog import CatalogError, CatalogStore

BOOK = {"id": "dune", "name": "Dune", "description": "Sand.", "price": 1299, "image": "img/dune.svg"}
VALID = {
    "shop": {"name": "Test Books", "currency": "usd"},
    "products": [BOOK, dict(BOOK, id="emma", name="Emma")],
    "shipping": {"countries": ["US"], "options": [
        {"id": "standard", "name": "Standard", "amount": 500, "min_days": 3, "max_days": 5}]},
}


class Shop:
    """A temp catalog.json whose edits always get a new mtime (no same-second ties)."""

    def __init__(self, tmp_path):
        self.path, self.public = tmp_path / "catalog.json", tmp_path / "public"
        (self.public / "img").mkdir(parents=True)
        (self.public / "img" / "dune.svg").write_text("<svg/>")
        self.tick = 1_700_000_000 * 10**9
        self.write(VALID)

    def write(self, data=None, text=None):
        self.path.write_text(text if text is not None else json.dumps(data))
        self.tick += 5 * 10**9
        os.utime(self.path, ns=(self.tick, self.tick))

    def priced(self, price):
        data = copy.deepcopy(VALID)
        for product in data["products"]:
            product["price"] = price
        return data


@pytest.fixture
def shop(tmp_path):
    return Shop(tmp_path)


@pytest.fixture
def logged():
    return []


@pytest.fixture
def store(shop, logged):
    return CatalogStore(shop.path, shop.public, logged.append)


def test_unchanged_file_is_not_read_again(store, monkeypatch):
    first = store.current()
    assert store.reads == 1

    def no_reading(path):
        raise AssertionError("read an unchanged file")
    monkeypatch.setattr(catalog, "_read", no_reading)
    for _ in range(100):
        assert store.current() is first
    assert store.reads == 1 and store.error is None


def test_valid_edit_is_picked_up(shop, store, logged):
    assert store.current().product("dune").price == 1299
    shop.write(shop.priced(1500))
    cat = store.current()
    assert cat.product("dune").price == 1500 and cat.product("emma").price == 1500
    assert store.error is None and store.reads == 2
    assert logged == ["catalog.json: reloaded, 2 products"]


def test_same_mtime_but_new_size_is_picked_up(shop, store):
    tick = os.stat(shop.path).st_mtime_ns
    shop.path.write_text(json.dumps(shop.priced(99)))  # a shorter file, same mtime forced back
    os.utime(shop.path, ns=(tick, tick))
    assert store.current().product("dune").price == 99


def test_a_file_swapped_in_with_the_same_size_and_mtime_is_picked_up(shop, store, tmp_path):
    """`cp -p`, rsync -a or a release's symlink can bring an edit whose size and mtime match the old file's."""
    tick = os.stat(shop.path).st_mtime_ns
    new = tmp_path / "new.json"
    new.write_text(json.dumps(shop.priced(1399)))  # 1299 -> 1399: the same size
    assert new.stat().st_size == shop.path.stat().st_size
    os.utime(new, ns=(tick, tick))
    os.replace(new, shop.path)
    assert store.current().product("dune").price == 1399


def test_readers_go_on_with_the_catalog_they_have_while_an_edit_is_being_checked(shop, store, monkeypatch):
    """A large or absurd edit takes seconds to check: only the thread checking it waits for that."""
    checking, done, check = threading.Event(), threading.Event(), catalog.catalog_rules.check
    monkeypatch.setattr(catalog.catalog_rules, "check", lambda *a: checking.set() or done.wait(30) and check(*a))
    shop.write(shop.priced(1399))
    loader = threading.Thread(target=store.current)
    loader.start()
    assert checking.wait(10)
    reader = threading.Thread(target=lambda: seen.append(store.current().product("dune").price))
    seen = []
    reader.start()
    reader.join(10)
    forced = threading.Thread(target=lambda: seen.append(store.current(force=True).product("dune").price))
    forced.start()  # /healthz and /admin: the file as it is now, so they wait for the check
    try:
        assert seen == [1299]  # the catalog it had, at once
    finally:
        done.set()
        loader.join(30)
        forced.join(30)
    assert seen == [1299, 1399] and store.current().product("dune").price == 1399


def test_did_you_mean_is_worked_out_for_the_first_problems_only(shop):
    """difflib for each of a million unknown fields took a minute; only the first are ever shown."""
    shop.write({**VALID, **{f"produc{i}": 0 for i in range(300)}})
    found = catalog.problems(shop.path, shop.public)
    assert len(found) == 300 and '(did you mean "products"?)' in found[0] and "did you mean" not in found[-1]


@pytest.mark.parametrize("what", ["fifo", "endless", "directory", "huge"])
def test_a_catalog_path_that_is_no_regular_file_or_too_big_is_refused_without_hanging(shop, store, logged, what):
    """A FIFO would block the reload (and every request behind it) forever; /dev/zero would never end."""
    shop.path.unlink()
    if what == "fifo":
        os.mkfifo(shop.path)
    elif what == "endless":
        shop.path.symlink_to("/dev/zero")
    elif what == "directory":
        shop.path.mkdir()
    else:
        with open(shop.path, "wb") as f:
            f.truncate(catalog.MAX_BYTES + 1)
    reader = threading.Thread(target=store.current, daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "the reload hangs"
    assert store.current().product("dune").price == 1299  # the last good catalog
    why = (f"is larger than {catalog.MAX_BYTES // 2**20} MB" if what == "huge" else
           "is not a regular file (a FIFO, a device or a folder?)")
    assert store.error.startswith(f"catalog.json: the last edit was not loaded (1 problem, first: {why})")
    open_files = len(os.listdir("/proc/self/fd"))
    for _ in range(5):  # each look at it reads it again (its change time moves): no file is left open
        os.utime(shop.path, follow_symlinks=False)
        store.current()
        catalog.problems(shop.path, shop.public)
    assert len(os.listdir("/proc/self/fd")) == open_files


def test_invalid_edit_keeps_last_good_reports_once_then_fix_clears(shop, store, logged):
    good = store.current()
    bad = shop.priced(12.5)
    bad["products"][0]["prise"] = 3
    shop.write(bad)

    assert store.current() is good
    assert store.error == (
        "catalog.json: the last edit was not loaded (3 problems, first: products[0].price: must be a positive "
        "integer in minor units, got 12.5 (product dune)); still serving the previous version")
    assert logged == ["\n  ".join([
        store.error,
        "catalog.json: products[0].price: must be a positive integer in minor units, got 12.5 (product dune)",
        'catalog.json: products[0]: unknown field "prise" (did you mean "price"?) (product dune)',
        "catalog.json: products[1].price: must be a positive integer in minor units, got 12.5 (product emma)",
    ])]
    for _ in range(10):
        assert store.current() is good
    assert len(logged) == 1  # logged once, though looked at again each time (its fix may be an image, not an edit)

    shop.write(text="{ not json")  # another bad version is reported too
    assert store.current() is good
    assert store.error.startswith("catalog.json: the last edit was not loaded (1 problem, first: line 1, column 3:")
    assert len(logged) == 2

    shop.write(shop.priced(1700))
    assert store.current().product("dune").price == 1700
    assert store.error is None
    assert logged[-1] == "catalog.json: reloaded, 2 products (earlier problems fixed)"


def test_an_edit_waiting_for_its_image_loads_once_the_image_is_put_in_place(shop, store, logged, monkeypatch):
    """The problem names a file: putting it there is the fix, with catalog.json as it is. The edit is read again
    every RETRY_BROKEN seconds, not at each look (a large one takes long to check)."""
    clock = [1000.0]
    monkeypatch.setattr(catalog, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    data = copy.deepcopy(VALID)
    data["products"][1]["image"] = "img/emma.png"
    shop.write(data)
    store.current()
    assert "no such file" in store.error and len(logged) == 1
    reads = store.reads
    (shop.public / "img" / "emma.png").write_bytes(b"\x89PNG")
    for _ in range(10):
        assert store.current().product("emma") is not None and store.error and store.reads == reads
    clock[0] += catalog.RETRY_BROKEN
    assert store.current().product("emma").image == "img/emma.png" and store.error is None
    assert logged[-1] == "catalog.json: reloaded, 2 products (earlier problems fixed)"
    reads = store.reads
    for _ in range(10):  # and, loaded, not read again while unchanged
        store.current()
    assert store.reads == reads


def test_a_huge_broken_edit_logs_its_first_problems_and_how_many_more(shop, store, logged):
    bad = copy.deepcopy(VALID)
    bad["products"] = [dict(BOOK, id=f"book-{i}", price=-1) for i in range(500)]
    shop.write(bad)
    store.current()
    (line,) = logged
    assert store.error.startswith("catalog.json: the last edit was not loaded (500 problems, first: products[0]")
    assert line.count("must be a positive integer") == 1 + catalog.SHOWN  # the summary's first, and the list
    assert line.endswith(f"... and {500 - catalog.SHOWN} more (python shop.py check lists them all)")
    assert len(store.found) == catalog.SHOWN + 1


def test_a_symlink_loop_or_a_dangling_link_is_a_problem_not_a_crash(tmp_path):
    from webshop.settings import load_config
    loop, dangling = tmp_path / "loop.json", tmp_path / "dangling.json"
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "secret-place" / "catalog.json")
    for link, why in ((loop, "Too many levels of symbolic links"), (dangling, "No such file or directory")):
        config = load_config({"catalog": str(link)})
        assert catalog.problems(config.catalog, tmp_path) == [f"{link.name}: cannot read the file: {why}"]


def test_edit_landing_between_stat_and_read_is_reported_once(shop, store, logged, monkeypatch):
    good, real_read = store.current(), catalog._read

    def read_after_another_edit(path):
        shop.write(text="{}")  # the merchant saves again after the shop saw the first change
        monkeypatch.setattr(catalog, "_read", real_read)
        return real_read(path)
    shop.write(text="[]")
    monkeypatch.setattr(catalog, "_read", read_after_another_edit)
    for _ in range(3):
        assert store.current() is good
    assert len(logged) == 1 and "shop: required field is missing" in logged[0]


def test_deleted_file_keeps_last_good_until_it_returns(shop, store, logged):
    good = store.current()
    shop.path.unlink()
    assert store.current() is good
    assert store.error.startswith("catalog.json: the last edit was not loaded (1 problem, first: cannot read the "
                                  "file: No such file or directory)")
    store.current()
    assert len(logged) == 1
    shop.write(shop.priced(800))
    assert store.current().product("dune").price == 800 and store.error is None


def test_first_load_failure_raises(shop, logged):
    shop.write(text="[]")
    with pytest.raises(CatalogError) as info:
        CatalogStore(shop.path, shop.public, logged.append)
    assert info.value.problems == ["catalog.json: top level: must be a JSON object {...}, got []"]
    with pytest.raises(CatalogError):
        CatalogStore(shop.path.parent / "missing.json", shop.public, logged.append)


def test_a_logger_gets_levels(shop, caplog):
    logger = logging.getLogger("test.catalog")
    store = CatalogStore(shop.path, shop.public, logger)
    with caplog.at_level(logging.INFO, logger="test.catalog"):
        shop.write(text="{}")
        store.current()
        shop.write(VALID)
        store.current()
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.INFO]
    assert "shop.name" not in caplog.records[0].getMessage()  # the whole "shop" object is missing
    assert "catalog.json: shop: required field is missing" in caplog.records[0].getMessage()


def test_problems_checks_the_file_as_it_is_now(shop, store):
    assert catalog.problems(shop.path, shop.public) == []
    shop.write(text="{}")
    assert catalog.problems(shop.path, shop.public) == [
        "catalog.json: shop: required field is missing",
        "catalog.json: products: required field is missing",
        "catalog.json: shipping: required field is missing",
    ]


def test_readers_never_see_a_half_built_catalog(shop, store):
    """Readers racing a writer always get one whole version: every product has the same price."""
    seen, failures, stop, saw_last = set(), [], threading.Event(), threading.Event()

    def read():
        while not stop.is_set():
            cat = store.current()
            prices = {p.price for p in cat.products}
            if len(prices) != 1 or len(cat.products) != 2:
                failures.append(cat)
            seen.add(got := prices.pop())
            if got == 159:
                saw_last.set()

    readers = [threading.Thread(target=read) for _ in range(6)]
    for t in readers:
        t.start()
    try:
        for price in range(100, 160):
            if price % 10 == 5:
                shop.write(text='{"shop": ')  # half-written file: readers keep the last good version
            else:
                shop.write(shop.priced(price))
            store.current()
        saw_last.wait(10)  # a reader may not have looked again since the last write
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not failures
    assert seen <= {1299} | set(range(100, 160)) and 159 in seen
    assert store.current().product("dune").price == 159 and store.error is None
