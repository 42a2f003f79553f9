"""The log writer: every line arrives, in order, batched; warnings and shutdown flush at once."""

import io
import logging
import re
import time

import pytest

from logs import BatchedStream


def logger_with(stream):
    handler = BatchedStream(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"test.logs.{id(stream)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log, handler


def test_info_lines_are_batched_then_written_in_order():
    out = io.StringIO()
    log, handler = logger_with(out)
    for i in range(5):
        log.info("line %d", i)
    deadline = time.monotonic() + 5
    while out.getvalue().count("\n") < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.getvalue() == "".join(f"INFO line {i}\n" for i in range(5))


def test_a_warning_flushes_everything_before_it_at_once():
    out = io.StringIO()
    log, handler = logger_with(out)
    handler.FLUSH_SECONDS = 60  # the flusher would not come in time
    log.info("before")
    log.warning("trouble")
    assert out.getvalue() == "INFO before\nWARNING trouble\n"


def test_a_full_batch_is_written_without_waiting():
    out = io.StringIO()
    log, handler = logger_with(out)
    handler.FLUSH_SECONDS = 60
    for i in range(handler.MAX_LINES):
        log.info("n%d", i)
    assert out.getvalue().count("\n") == handler.MAX_LINES


def test_shutdown_flushes_what_is_pending():
    out = io.StringIO()
    log, handler = logger_with(out)
    handler.FLUSH_SECONDS = 60
    log.info("last words")
    handler.flush()  # what logging.shutdown() does at exit
    assert out.getvalue() == "INFO last words\n"


def _served_once(app_status="200 OK", path="/caf\u00e9"):
    from logs import AccessLog

    def app(environ, start_response):
        start_response(app_status, [("Content-Type", "text/plain")])
        return [b"ok"]
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
    AccessLog(app)(environ, lambda status, headers, exc_info=None: None)
    return environ["shop.request_id"]


def test_the_access_line_written_directly_is_the_line_logging_would_write(monkeypatch):
    """As `python shop.py` sets up logging, the access line skips logging's record but reads the same."""
    import logs
    direct, via_logging = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.INFO)
    plain = BatchedStream(direct)
    plain.setFormatter(logging.Formatter(logs.FORMAT))
    root.handlers = [plain]
    with monkeypatch.context() as m:
        m.setattr(logs.access_log, "info", lambda *a, **k: pytest.fail("went through logging"))
        rid = _served_once()
    assert direct.getvalue() == ""  # queued, not yet written
    plain.flush()
    # The same request through logging proper: a second handler makes the middleware use logging.
    also = BatchedStream(via_logging)
    also.setFormatter(logging.Formatter(logs.FORMAT))
    root.handlers = [plain, also]
    rid2 = _served_once()
    plain.flush(), also.flush()
    first, second = direct.getvalue().splitlines(), via_logging.getvalue().splitlines()
    assert len(first) == 2 and len(second) == 1
    shape = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO shop\.access GET /caf\\xe9 status=200 "
                       r"duration_ms=\d+\.\d request_id=([0-9a-f]{16})$")
    assert shape.match(first[0])[1] == rid
    assert shape.match(second[0])[1] == rid2 and first[1] == second[0]


def test_the_access_line_goes_through_logging_when_logging_is_set_up_otherwise(monkeypatch):
    """A filter, another format or level: the middleware leaves the line to logging, which honours them."""
    import logs
    out = io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.INFO)
    handler = BatchedStream(out)
    handler.setFormatter(logging.Formatter("%(name)s|%(message)s"))
    root.handlers = [handler]
    _served_once()
    handler.flush()
    assert out.getvalue().startswith("shop.access|GET /caf\\xe9 status=200 ")
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    handler.addFilter(lambda record: "/secret" not in record.getMessage())
    _served_once(path="/secret")
    handler.flush()
    assert "/secret" not in out.getvalue()
    monkeypatch.setattr(logs.access_log, "level", logging.WARNING)
    logs.access_log.manager._clear_cache()
    _served_once(path="/quiet")
    handler.flush()
    assert "/quiet" not in out.getvalue()
    logs.access_log.manager._clear_cache()


def test_a_line_that_cannot_be_made_does_not_lose_the_rest_of_its_batch(monkeypatch):
    out = io.StringIO()
    handler = BatchedStream(out)
    handler.FLUSH_SECONDS = 60
    monkeypatch.setattr(logging, "raiseExceptions", False)  # handleError stays quiet, as in production
    handler.write_later(lambda: "first\n")
    handler.write_later(lambda: 1 / 0)
    handler.write_later(lambda n: f"third {n}\n", 3)
    handler.flush()
    assert out.getvalue() == "first\nthird 3\n"


def test_no_line_is_lost_while_batches_are_written_from_another_thread():
    import threading
    out = io.StringIO()
    log, handler = logger_with(out)
    handler.FLUSH_SECONDS = 60
    stop = threading.Event()

    def flusher():
        while not stop.is_set():
            handler.flush()
    t = threading.Thread(target=flusher)
    t.start()
    try:
        for i in range(20000):
            log.info("n%d", i)
    finally:
        stop.set()
        t.join()
    handler.flush()
    assert out.getvalue().splitlines() == [f"INFO n{i}" for i in range(20000)]


def test_waitress_queue_warnings_come_once_a_second_with_a_count(monkeypatch, caplog):
    import logs
    queue = logging.getLogger("waitress.queue")
    monkeypatch.setattr(queue, "filters", [])  # the test's own filters, restored after
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    logs.setup_logging()
    logs.setup_logging()  # set up twice (a worker, a test): still one filter
    assert len(queue.filters) == 1
    with caplog.at_level(logging.WARNING, logger="waitress.queue"):
        for depth in range(1, 101):
            queue.warning("Task queue depth is %d", depth)
            clock[0] += 0.001
        clock[0] += 1
        queue.warning("Task queue depth is %d", 7)
    lines = [r.getMessage() for r in caplog.records if r.name == "waitress.queue"]
    assert lines == ["Task queue depth is 1", "Task queue depth is 7 (99 more in the last 1 s)"]
    other = logging.getLogger("waitress")
    with caplog.at_level(logging.WARNING, logger="waitress"):
        other.warning("something else")
        other.warning("something else")
    assert [r.getMessage() for r in caplog.records if r.name == "waitress"] == ["something else"] * 2


@pytest.mark.parametrize("path, shown", [
    ("/", "/"),
    ("/cart", "/cart"),
    ("/caf\u00e9", "/caf\\xe9"),
    ("/a\\b", "/a\\\\b"),
    ("/two\nlines", "/two\\nlines"),
    ("/tab\there", "/tab\\there"),
    ("/" + "x" * 300, "/" + "x" * 199),
    ("/" + "\u00e9" * 300, "/" + "\\xe9" * 199),
])
def test_the_access_line_shows_a_path_on_one_line_escaped_and_cut_at_200_characters(path, shown):
    import logs
    now = 1_700_000_000.25
    line = logs._access_line(now, "GET", path, "200", 0.0123, "00ff")
    assert line.endswith(f" INFO shop.access GET {shown} status=200 duration_ms=12.3 request_id=00ff\n")
    assert line.count("\n") == 1
    assert line.split(" INFO ", 1)[1] == "shop.access " + logs._access_message("GET", path, "200", 0.0123, "00ff") + "\n"
    expected = logging.Formatter(logs.FORMAT).formatTime(logging.makeLogRecord({"created": now, "msecs": 250.0}))
    assert line.startswith(expected + " INFO ")
