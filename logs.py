"""The shop's log: one plain line per event on stderr, written in small batches so requests never wait on it."""

import collections
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
        # Lines, or (make_line, args) to format at write time. A deque: appends need no lock, and the writer
        # takes lines off the front, so a line appended while a batch is written waits for the next one.
        self.pending = collections.deque()
        self._flusher_fork = None  # the value of _forks when this process's flusher thread started

    def emit(self, record):
        try:
            line = self.format(record) + self.terminator
        except Exception:  # logging's contract: a bad record must not break the caller
            self.handleError(record)
            return
        self.pending.append(line)  # deque.append is atomic: no lock on the request's path
        if record.levelno >= logging.WARNING or len(self.pending) >= self.MAX_LINES:
            self.flush()
        elif self._flusher_fork != _forks[0]:
            self._start_flusher()

    def write_later(self, make_line, *args):
        """Queue a line that make_line(*args) formats when the batch is written, off the request's thread."""
        self.pending.append((make_line, args))
        if len(self.pending) >= self.MAX_LINES:
            self.flush()
        elif self._flusher_fork != _forks[0]:
            self._start_flusher()

    def flush(self):
        """Write every pending line now."""
        with self.lock:
            pending = self.pending
            lines = [pending.popleft() for _ in range(len(pending))]
            if lines:
                self.stream.write("".join(line if type(line) is str else self._made(line) for line in lines))
            self.stream.flush()

    def _made(self, later):
        make_line, args = later
        try:
            return make_line(*args)
        except Exception:  # a line that cannot be made is reported, the batch is still written
            self.handleError(logging.makeLogRecord({"msg": "unformattable line %r", "args": (args,)}))
            return ""

    def _start_flusher(self):
        with self.lock:
            if self._flusher_fork == _forks[0]:
                return
            threading.Thread(target=self._run, name="log-flusher", daemon=True).start()
            self._flusher_fork = _forks[0]  # a forked worker (a new count) starts its own

    def _run(self):
        while True:
            time.sleep(self.FLUSH_SECONDS)
            if self.pending:
                try:
                    self.flush()
                except Exception:  # e.g. stderr closed: keep running, logging reports it its own way
                    self.handleError(logging.makeLogRecord({"msg": "log batch not written"}))


_forks = [0]  # forks so far in this process's line: a flusher thread does not survive fork()
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


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
    # Under load waitress warns "Task queue depth is N" for every request that waits for a thread: hundreds of
    # lines a second that say one thing. One a second, with the count of the others, says it as well.
    queue = logging.getLogger("waitress.queue")
    if not any(isinstance(f, OncePerInterval) for f in queue.filters):
        queue.addFilter(OncePerInterval())


class OncePerInterval(logging.Filter):
    """Lets one record through per `seconds`; the next one says how many were held back meanwhile."""

    def __init__(self, seconds=1.0):
        super().__init__()
        self.seconds, self.next, self.held = seconds, 0.0, 0

    def filter(self, record):
        now = time.monotonic()
        if now < self.next:
            self.held += 1  # approximate under threads, as a count of log lines may be
            return False
        self.next = now + self.seconds
        if self.held:
            record.msg, record.args = f"{record.getMessage()} ({self.held} more in the last {self.seconds:g} s)", ()
            self.held = 0
        return True


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
            if (found is not None or type(handler) is not BatchedStream or handler.filters
                    or handler.terminator != "\n" or not _plain(handler.formatter)):
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


class AccessLog:
    """WSGI middleware: one line per request with method, path, status, duration and request id.

    When the line would only go to the shop's own BatchedStream (as `python shop.py` sets up logging), the
    request only queues its values and the writer thread formats the line: building a logging record per
    request was a fifth of the interpreter's time on GET / under load (bench/run.py figure 1). The line is the
    same either way (tests/test_logs.py)."""

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
                seconds, status = time.monotonic() - start, seen.get("status", "-")
                method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
                handler = _sole_plain_handler(access_log, logging.INFO)
                if handler is not None:
                    handler.write_later(_access_line, time.time(), method, path, status, seconds, rid)
                else:
                    access_log.info("%s", _access_message(method, path, status, seconds, rid))


def _access_message(method, path, status, seconds, rid):
    return f"{method} {_printable(path)} status={status} duration_ms={seconds * 1000:.1f} request_id={rid}"


def _printable(path):
    """The path as it goes into the line: at most 200 characters, anything unusual escaped, so one line per request."""
    if len(path) > 200 or not (path.isascii() and path.isprintable()) or "\\" in path:
        return path[:200].encode("unicode_escape").decode()
    return path  # the usual path, unchanged by the escape: skipping it is a third of the line's cost


_stamp = (None, "")  # (second, that second as logging's asctime shows it)


def _access_line(now, method, path, status, seconds, rid):
    """The access line as FORMAT would show its logging record (logging's default asctime, made once a second)."""
    global _stamp
    second = int(now)
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
    # one f-string, not three calls: the writer makes one line per request (bench/run.py figure 1b)
    return (f"{_stamp[1]},{int((now - second) * 1000):03d} INFO shop.access {method} {_printable(path)} "
            f"status={status} duration_ms={seconds * 1000:.1f} request_id={rid}\n")
