"""Load generation on loopback: wrk when it is installed, else a small asyncio client; both stop by themselves."""

import asyncio
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Result:
    """What one load run measured."""
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0            # socket errors, timeouts and unexpected statuses
    statuses: dict = field(default_factory=dict)
    client_cpu: float = 0.0    # CPU seconds the load generator itself used
    server_cpu: float = 0.0    # CPU seconds the server's processes used meanwhile
    busy_cores: float = 0.0    # how many cores the whole machine kept busy meanwhile

    @property
    def server_us_per_request(self):
        return self.server_cpu / self.requests * 1e6 if self.requests else 0.0

    @property
    def other_cores(self):
        """Cores busy with processes other than this server and the load generator (noise)."""
        return max(0.0, self.busy_cores - (self.server_cpu + self.client_cpu) / self.seconds) if self.seconds else 0.0

    @property
    def rps(self):
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def client_cores(self):
        """How much of a core the load generator took while it ran."""
        return self.client_cpu / self.seconds if self.seconds else 0.0


def find_wrk(install=True, say=print):
    """The wrk binary: found on PATH, or installed from Debian's `wrk` package when root; None otherwise."""
    path = shutil.which("wrk")
    if path or not install:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say("wrk is not installed and cannot be installed here (needs root and apt-get)")
        return None
    say("installing wrk (Debian package) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=240,
                           check=True)
        except (subprocess.SubprocessError, OSError):
            say(f"`{' '.join(cmd)}` failed")
            return None
    return shutil.which("wrk")


def _check_loopback(url):
    host = urlsplit(url).hostname
    if host not in LOOPBACK and not (host or "").startswith("127."):
        raise ValueError(f"load is only ever sent to loopback, not to {host!r}")


# --- wrk ---------------------------------------------------------------------------------------

_LUA = """
wrk.method = {method}
wrk.body = {body}
{headers}
"""


def _lua_str(s):
    """A Lua string literal (decimal escapes for anything unusual), or nil."""
    if s is None:
        return "nil"
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_=&.;:/,%+*()")
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in s.encode()) + '"'



def run_wrk(wrk, url, seconds, connections, method="GET", headers=None, body=None):
    """One wrk run (1 thread: the server needs the other core more than wrk does)."""
    _check_loopback(url)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "req.lua")
        lines = "\n".join(f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in (headers or {}).items())
        with open(script, "w") as f:
            f.write(_LUA.format(method=_lua_str(method), body=_lua_str(body), headers=lines))
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", "-s", script, url]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _parse_wrk(out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m[1]) * _UNITS[m[2]]


def _parse_wrk(out, cpu):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise RuntimeError("wrk printed no summary:\n" + out)
    requests, seconds = int(m[1]), _ms(m[2] + m[3]) / 1000
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx[1]) if non2xx else 0
    return Result(requests, seconds, _ms(pct["50"]), _ms(pct["99"]), errors, client_cpu=cpu)


# --- the Python fallback (and the webhook senders) ---------------------------------------------

def _request_bytes(method, path, host, headers, body):
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = body.encode() if isinstance(body, str) else (body or b"")
    if data or method == "POST":
        head.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m and int(m[1]):
        await reader.readexactly(int(m[1]))
    return status


async def _drive(url, connections, deadline, requests, max_requests, reconnect=False):
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    latencies, statuses, errors = [], {}, 0
    queue = iter(requests) if isinstance(requests, list) else None
    sent = 0

    async def one_connection():
        nonlocal errors, sent
        reader = writer = None
        while time.monotonic() < deadline and (max_requests is None or sent < max_requests):
            if queue is not None:
                data = next(queue, None)
                if data is None:
                    break
            else:
                data = requests
            sent += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                start = time.perf_counter()
                writer.write(data)
                status = await asyncio.wait_for(_read_response(reader), 10)
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
                if reconnect:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.monotonic()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return latencies, statuses, errors, time.monotonic() - start


def run_python(url, seconds, connections, method="GET", headers=None, body=None, bodies=None, max_requests=None,
               reconnect=False):
    """Keep-alive connections in one asyncio loop; `bodies` sends each of a list of (headers, body) once;
    `reconnect` opens a new connection for every request (as webhook senders may)."""
    if reconnect:
        headers = {**(headers or {}), "Connection": "close"}
    _check_loopback(url)
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    hostport = parts.netloc
    if bodies is not None:
        requests = [_request_bytes(method, path, hostport, {**(headers or {}), **h}, b) for h, b in bodies]
    else:
        requests = _request_bytes(method, path, hostport, headers, body)
    cpu0 = time.process_time()
    latencies, statuses, errors, took = asyncio.run(
        _drive(url, connections, time.monotonic() + seconds, requests, max_requests, reconnect))
    cpu = time.process_time() - cpu0
    latencies.sort()
    bad = sum(n for s, n in statuses.items() if s >= 400)

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
    return Result(len(latencies), took, pct(0.50), pct(0.99), errors + bad, statuses, cpu)


def process_cpu(pids):
    """CPU seconds (user + system) used so far by these processes."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy():
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Load:
    """The load generator for this run: wrk if available, else the Python one (and it says which)."""

    def __init__(self, wrk):
        self.wrk = wrk
        self.name = "wrk 1 thread" if wrk else "Python asyncio client (wrk not found)"

    def run(self, url, seconds, connections=16, method="GET", headers=None, body=None, pids=()):
        """One load run; with `pids`, also the CPU those server processes used."""
        cpu0, (busy0, total0) = process_cpu(pids), machine_busy()
        if self.wrk:
            result = run_wrk(self.wrk, url, seconds, connections, method, headers, body)
        else:
            result = run_python(url, seconds, connections, method, headers, body)
        busy1, total1 = machine_busy()
        result.server_cpu = process_cpu(pids) - cpu0
        result.busy_cores = (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1) if total1 > total0 else 0.0
        return result
