"""The load generator: asyncio protocols speaking raw HTTP/1.1 over loopback, one event loop, no threads.

Every simulated client is a coroutine in a closed loop (send, wait for the whole answer, send the next). A run is
bounded twice: it stops starting work at its deadline, and after `limit` operations; whatever is still in flight
then gets `grace` seconds before it is cancelled and counted as an error. The generator's own CPU time is read
with getrusage, so the table can say what the load cost the machine (the servers share its 2 cores).
"""

import asyncio
import resource
import time

TIMEOUT = 30.0  # seconds one request may take before it counts as an error


class HTTPError(Exception):
    """The connection broke or the answer could not be parsed."""


class _Proto(asyncio.Protocol):
    """One HTTP/1.1 connection: collects bytes until a whole response is in, then wakes the waiter."""

    def __init__(self):
        self.buf = bytearray()
        self.waiter = None
        self.transport = None
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self._check()

    def eof_received(self):
        self.eof = True
        if self.waiter is not None and not self.waiter.done():
            self._check()
        return False

    def connection_lost(self, exc):
        self.eof = True
        if self.waiter is not None and not self.waiter.done():
            self._check()

    def _check(self):
        """Resolve the waiter when the buffer holds one whole response (or the peer closed)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if self.eof:
                self.waiter.set_exception(HTTPError("connection closed before the response"))
            return
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            version, status = head[0].split(" ", 2)[:2]
            status = int(status)
        except ValueError:
            self.waiter.set_exception(HTTPError(f"bad status line {head[0]!r}"))
            return
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        start = end + 4
        if "content-length" in headers:
            length = int(headers["content-length"][0])
            if len(self.buf) - start < length:
                if self.eof:
                    self.waiter.set_exception(HTTPError("connection closed mid-body"))
                return
            body = bytes(self.buf[start:start + length])
            del self.buf[:start + length]
        elif "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
            body, used = _dechunk(self.buf, start)
            if body is None:
                if self.eof:
                    self.waiter.set_exception(HTTPError("connection closed mid-body"))
                return
            del self.buf[:used]
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
            del self.buf[:start]
        else:  # no length: the body runs to the end of the connection
            if not self.eof:
                return
            body = bytes(self.buf[start:])
            del self.buf[:]
        keep = version == "HTTP/1.1" and "close" not in ",".join(headers.get("connection", [])).lower()
        self.waiter.set_result((status, headers, body, keep))


def _dechunk(buf, pos):
    """(body, bytes used) of a whole chunked body starting at pos, or (None, 0) while it is incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return (bytes(out), end + 4) if end >= 0 else (None, 0)
        if len(buf) < eol + 2 + size + 2:
            return None, 0
        out += buf[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


class Connection:
    """A keep-alive HTTP/1.1 connection to host:port that reconnects when the server closed it."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port
        self.proto = None

    async def request(self, method, path, headers=None, body=b"", timeout=TIMEOUT):
        """(status, {lowercase name: [values]}, body bytes) of one request."""
        loop = asyncio.get_running_loop()
        if self.proto is None or self.proto.eof or self.proto.transport.is_closing():
            _, self.proto = await asyncio.wait_for(
                loop.create_connection(_Proto, self.host, self.port), timeout)
        proto = self.proto
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        proto.waiter = loop.create_future()
        proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if proto.buf or proto.eof:
            proto._check()
        try:
            status, rheaders, rbody, keep = await asyncio.wait_for(proto.waiter, timeout)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, rheaders, rbody

    def close(self):
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None


def cookie_of(headers, name):
    """The value a Set-Cookie header gives `name`, or None."""
    for value in headers.get("set-cookie", []):
        pair = value.split(";", 1)[0]
        if pair.split("=", 1)[0].strip() == name:
            return pair.split("=", 1)[1]
    return None


class Result:
    """What one run measured: operations, errors, latencies of the timed request, wall time, generator CPU."""

    def __init__(self, clients, seconds=None):
        self.clients, self.seconds = clients, seconds
        self.start = time.monotonic()
        self.latencies = []
        self.errors = 0
        self.error_kinds = {}
        self.elapsed = 0.0
        self.cpu = 0.0
        self.extra = {}

    def ok(self, seconds):
        self.latencies.append(seconds)

    def error(self, kind):
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    @property
    def count(self):
        return len(self.latencies)

    @property
    def rate(self):
        """Operations a second: all that completed, over the time from the start to the last answer. With N
        closed-loop clients at X/s and latency R, a run of T seconds completes about X·T + N (those in flight at
        the deadline finish) in T + R seconds, which is X; counting only answers before the deadline would give
        about X·(T − R)/T, unfair to the slower server."""
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, p):
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def cpu_ms_per_op(self):
        done = self.count + self.errors
        return 1000 * self.cpu / done if done else float("nan")

    def __repr__(self):
        return (f"<{self.clients} clients: {self.count} ok, {self.errors} errors {self.error_kinds}, "
                f"{self.rate:.1f}/s, p50 {self.pct(50) * 1000:.0f} ms, p99 {self.pct(99) * 1000:.0f} ms, "
                f"generator {self.cpu_ms_per_op:.2f} CPU ms/op>")


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(operation, clients, seconds, limit=None, grace=15.0, on_tick=None):
    """Run `operation(client_index, result)` in `clients` closed loops for `seconds` or `limit` operations.

    `operation` does one unit of work (one shopper, one event) and records it with result.ok(latency) or
    result.error(kind); it returns False when it has no more work (e.g. a pool of sessions ran out)."""
    result = Result(clients, seconds)
    budget = [limit if limit is not None else float("inf")]
    start = result.start
    deadline = start + seconds

    async def loop(i):
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            try:
                more = await operation(i, result)
            except (OSError, HTTPError, asyncio.TimeoutError) as e:
                result.error(type(e).__name__)
                more = True
            if more is False:
                return

    cpu0 = cpu_seconds()
    tasks = [asyncio.ensure_future(loop(i)) for i in range(clients)]
    ticker = None
    if on_tick is not None:
        async def tick():
            while True:
                on_tick()
                await asyncio.sleep(0.25)
        ticker = asyncio.ensure_future(tick())
    done, pending = await asyncio.wait(tasks, timeout=seconds + grace)
    for task in pending:
        task.cancel()
        result.error("cancelled at the end of the run")
    if pending:
        await asyncio.wait(pending)
    if ticker is not None:
        ticker.cancel()
    result.elapsed = time.monotonic() - start
    result.cpu = cpu_seconds() - cpu0
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    return result


def run_threads(port, path, clients, seconds, headers=None):
    """The other way to make load, for comparison: a thread per client, each with a keep-alive http.client
    connection. Returns a Result like run() (GET path answered 200 counts as ok)."""
    import http.client
    import threading

    result = Result(clients)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        times, errors = [], 0
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                conn.request("GET", path, headers=headers or {})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    times.append(time.monotonic() - start)
                else:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
        conn.close()
        with lock:
            result.latencies.extend(times)
            for _ in range(errors):
                result.error("GET failed")

    cpu0, start = cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + TIMEOUT)
    result.elapsed = time.monotonic() - start
    result.cpu = cpu_seconds() - cpu0
    return result
