"""The log writer: every line arrives, in order, batched; warnings and shutdown flush at once."""

import io
import logging
import time

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
