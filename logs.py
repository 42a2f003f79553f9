"""The shop's log: one plain line per event on stderr, written in small batches so requests never wait on it."""

import logging
import os
import random
import sys
import threading
import time

access_log = logging.getLogger("shop.access")
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class BatchedStream(logging.StreamHandler):
    """A stream handler that writes lines in batches: at most FLUSH_SECONDS late, at once for warnings.

    Each write() to stderr is a system call that hands the interpreter lock to another thread; under load
    one per request was the largest cost of GET / after the page itself (bench/run.py, figure 1b)."""

    FLUSH_SECONDS = 0.2
    MAX_LINES = 256

    def __init__(self, stream=None):
        super().__init__(stream or sys.stderr)
        self.pending = []
        self._flusher = None

    def emit(self, record):
        try:
            line = self.format(record) + self.terminator
        except Exception:  # logging's contract: a bad record must not break the caller
            self.handleError(record)
            return
        self.pending.append(line)  # list.append is atomic: no lock on the request's path
        if record.levelno >= logging.WARNING or len(self.pending) >= self.MAX_LINES:
            self.flush()
        elif self._flusher is None or not self._flusher.is_alive() or self._flusher.pid != os.getpid():
            self._start_flusher()

    def write_line(self, line):
        """Queue one line already formatted as FORMAT would (the access log's way around building a record)."""
        self.pending.append(line)
        if len(self.pending) >= self.MAX_LINES:
            self.flush()
        elif self._flusher is None or not self._flusher.is_alive() or self._flusher.pid != os.getpid():
            self._start_flusher()

    def flush(self):
        """Write every pending line now."""
        with self.lock:
            lines, self.pending = self.pending, []
            if lines:
                self.stream.write("".join(lines))
            self.stream.flush()

    def _start_flusher(self):
        with self.lock:
            if self._flusher is not None and self._flusher.is_alive() and self._flusher.pid == os.getpid():
                return
            thread = threading.Thread(target=self._run, name="log-flusher", daemon=True)
            thread.pid = os.getpid()  # a forked worker starts its own
            self._flusher = thread
            thread.start()

    def _run(self):
        while True:
            time.sleep(self.FLUSH_SECONDS)
            if self.pending:
                self.flush()


def setup_logging():
    """One plain line per event on stderr (batched; flushed at exit and at once for warnings)."""
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=[BatchedStream()])
    # The format shows no thread, process or source line: don't collect them for every record, as the logging
    # HOWTO's "Optimization" section suggests (https://docs.python.org/3/howto/logging.html#optimization).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    # payments.call logs each Stripe call once (endpoint, status, duration, Request-Id); the SDK's own INFO
    # lines would add two more per call, naming api.stripe.com even when the stand-in answered.
    logging.getLogger("stripe").setLevel(logging.WARNING)


def request_id(environ):
    """This request's id (made on first use): the access log line, the X-Request-Id header and logs share it."""
    rid = environ.get("shop.request_id")
    if rid is None:
        # Unique, not secret: the random module's generator (reseeded in each forked worker) makes it without a
        # system call, which under load cost a trip for the interpreter lock (bench/run.py figure 1).
        rid = environ["shop.request_id"] = f"{random.getrandbits(64):016x}"
    return rid


def _sole_plain_handler(logger, level):
    """The one BatchedStream, formatting with FORMAT, that a `level` line of `logger` reaches; None otherwise.

    Anything else set up (a second handler, a filter, another format, pytest's log capture) returns None,
    and the line goes through logging as usual."""
    found = None
    while logger is not None:
        if logger.filters:
            return None
        for handler in logger.handlers:
            if handler.level > level:
                continue
            if found is not None or type(handler) is not BatchedStream or handler.filters or not _plain(handler.formatter):
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    return found


def _plain(formatter):
    """True for the formatter setup_logging gives: FORMAT with logging's default time format."""
    return (type(formatter) is logging.Formatter and formatter._fmt == FORMAT and formatter.datefmt is None
            and formatter.converter is time.localtime
            and formatter.default_msec_format == logging.Formatter.default_msec_format)


_stamp = (None, "")


def _asctime(now):
    """`now` as logging's default asctime shows it ("2026-11-22 02:24:37,123"); the seconds part made once a second."""
    global _stamp
    second = int(now)
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
    return f"{_stamp[1]},{int((now - second) * 1000):03d}"


class AccessLog:
    """WSGI middleware: one line per request with method, path, status, duration and request id.

    When the line would only go to the shop's own BatchedStream (as `python shop.py` sets up logging), it is
    formatted here and queued directly: building a logging record per request was a fifth of the interpreter's
    time on GET / under load (bench/run.py figure 1). The line is the same either way (tests/test_logs.py)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        start = time.monotonic()
        rid = request_id(environ)
        seen = {}

        def recording_start(status, headers, exc_info=None):
            seen["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, recording_start)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                path = environ.get("PATH_INFO", "")[:200].encode("unicode_escape").decode()
                message = (f"{environ.get('REQUEST_METHOD')} {path} status={seen.get('status', '-')} "
                           f"duration_ms={(time.monotonic() - start) * 1000:.1f} request_id={rid}")
                handler = _sole_plain_handler(access_log, logging.INFO)
                if handler is not None:
                    handler.write_line(f"{_asctime(time.time())} INFO shop.access {message}{handler.terminator}")
                else:
                    access_log.info("%s", message)
