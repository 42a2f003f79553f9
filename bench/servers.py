"""Start and stop the servers under test: `python shop.py` and the bare baseline, each on its own loopback port."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LIFETIME = 600  # seconds: a server left behind by a crashed run still ends by itself


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_later():
    os.setsid()  # its own process group, so stop() reaches the workers too
    signal.alarm(LIFETIME)  # survives exec; SIGALRM's default action ends the process


class Server:
    """One server process (group) on 127.0.0.1:port; stops on exit from `with`."""

    def __init__(self, name, argv, port, env=None, log=None, parent_serves=False):
        self.name, self.port, self.parent_serves = name, port, parent_serves
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=self.log,
                                     preexec_fn=_die_later)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def wait_ready(self, path="/healthz", timeout=30):
        """Block until the server answers `path` with a status below 500."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}")
            try:
                status, _, _ = fetch(self.url + path)
                if status < 500:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s")

    def workers(self):
        """The pids that serve requests: the forked workers, or the process itself when there are none."""
        kids = children(self.proc.pid)
        return [self.proc.pid, *kids] if self.parent_serves or not kids else kids

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def children(pid):
    """Direct child pids of a process (Linux /proc)."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def peak_rss_mb(pid):
    """The process's peak resident set size (VmHWM) in MiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def fetch(url, headers=None, method="GET", body=None):
    """(status, [(name, value)], body bytes) of one request over a fresh connection."""
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def shop_env(data_dir, catalog=None, **extra):
    """The environment for `python shop.py` in offline mode on a private DATA_DIR (no keys, no .env surprises)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "WORKERS", "THREADS"))}
    # Set (even empty) wins over a developer's .env: python-dotenv never overrides the environment.
    env.update(STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="", STRIPE_API_BASE="", BASE_URL="",
               DATA_DIR=str(data_dir), CATALOG=str(catalog or ROOT / "catalog.json"), PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_shop(tmp, name="shop", workers=1, catalog=None, data_dir=None, **env):
    port = free_port()
    data_dir = data_dir or Path(tmp) / f"data-{name}"
    argv = [PYTHON, "shop.py", "--port", str(port), "--workers", str(workers)]
    return Server(name, argv, port, shop_env(data_dir, catalog, **env), log=Path(tmp) / f"{name}.log")


def start_variant(tmp, name, *flags):
    """bench/variant_shop.py: the shop with a per-request cost taken out (diagnostics for figure 1)."""
    port = free_port()
    argv = [PYTHON, str(ROOT / "bench" / "variant_shop.py"), "--port", str(port), *flags]
    return Server(name, argv, port, shop_env(Path(tmp) / f"data-{name}"), log=Path(tmp) / f"{name}.log")


def start_bare(tmp, responses_file, name="bare", workers=1):
    """bench/bare.py; with workers > 1 its first process serves too, beside the ones it forks."""
    port = free_port()
    argv = [PYTHON, str(ROOT / "bench" / "bare.py"), "--port", str(port), "--responses", str(responses_file),
            "--workers", str(workers)]
    return Server(name, argv, port, log=Path(tmp) / f"{name}.log", parent_serves=True)
