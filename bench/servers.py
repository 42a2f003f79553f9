"""Starting and stopping what the bench measures: each server is its own process on a loopback port."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
STRIPE_KEY = "sk_test_bench_0000000000000000"
WEBHOOK_SECRET = "whsec_bench_0000000000000000"
LIFETIME = 1800  # no server the bench starts outlives it by more than this many seconds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One child process listening on 127.0.0.1:port; its output goes to log_path."""

    def __init__(self, name, argv, port, log_path, env=None, cwd=ROOT):
        self.name, self.port, self.log_path = name, port, Path(log_path)
        self.log = open(self.log_path, "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
        full_env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        full_env.update(env or {})
        # `timeout` ends the server even if the bench itself is killed before it can stop it.
        self.proc = subprocess.Popen(["timeout", "-s", "TERM", str(LIFETIME), PYTHON, *argv], cwd=cwd,
                                     env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_ready()

    def wait_ready(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {seconds} s")

    @property
    def pids(self):
        """The processes that serve: the child of `timeout`, or under gunicorn its workers."""
        pid = self.proc.pid
        try:
            while True:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    children = [int(c) for c in f.read().split()]
                if len(children) != 1:
                    return children or [pid]
                pid = children[0]
        except OSError:
            return [pid]

    def rss_mib(self):
        """Resident memory of the serving processes now, in MiB (one that has just gone counts nothing)."""
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            except OSError:
                continue
        return total / 1024

    def cpu_seconds(self):
        """User + system CPU seconds the serving processes have used so far (a worker gunicorn replaced mid-run
        takes its seconds with it)."""
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

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
        self.log.close()

    def log_lines(self, *needles):
        """Lines of the server's output that contain any of the needles."""
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if any(n in line for n in needles)]


def standin(workdir, latency_ms=400, threads=400, name="stand-in"):
    """The Stripe stand-in as its own server (see bench/standin_server.py), every API call taking latency_ms."""
    port = free_port()
    data = Path(workdir) / f"standin-{port}"
    return Server(name, [str(BENCH / "standin_server.py"), "--port", str(port), "--data-dir", str(data),
                         "--public-url", f"http://127.0.0.1:{port}", "--webhook-secret", WEBHOOK_SECRET,
                         "--latency-ms", str(latency_ms), "--threads", str(threads)],
                  port, Path(workdir) / f"standin-{port}.log")


def shop(workdir, stripe, env=None, name="shop", port=None, data_dir=None):
    """`python shop.py` in test mode against the stand-in, default settings unless env says otherwise."""
    port = port or free_port()
    data_dir = data_dir or Path(workdir) / f"shop-{port}"
    settings = {**shop_env(stripe, data_dir), "PORT": str(port), "HOST": "127.0.0.1", **(env or {})}
    server = Server(name, ["shop.py"], port, Path(workdir) / f"shop-{port}.log", env=settings)
    server.data_dir = data_dir  # where `shop_command` finds its ledger
    return server


def shop_env(stripe, data_dir):
    """Test mode against the stand-in `stripe`, with its webhook secret, on data_dir."""
    return {"STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_API_BASE": f"http://127.0.0.1:{stripe.port}",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "DATA_DIR": str(data_dir)}


def gunicorn(workdir, stripe, data_dir, workers=2, threads=64):
    """The same shop under gunicorn as docs/operations.md runs it for a sale (two gthread workers of 64 threads),
    on data_dir, which another instance may share."""
    port = free_port()
    env = {**shop_env(stripe, data_dir), "BASE_URL": f"http://127.0.0.1:{port}"}
    return Server("shop (gunicorn)", ["-m", "gunicorn", "-k", "gthread", "-w", str(workers), "--threads",
                                      str(threads), "--bind", f"127.0.0.1:{port}", "shop:make_app()"],
                  port, Path(workdir) / f"gunicorn-{port}.log", env=env)


def flask_sample(workdir, stripe):
    """bench/flask_sample.py (`app.run(threaded=True)`) against the same stand-in."""
    port = free_port()
    return Server("flask sample", [str(BENCH / "flask_sample.py"), "--port", str(port)], port,
                  Path(workdir) / f"flask-{port}.log",
                  env={"STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_API_BASE": f"http://127.0.0.1:{stripe.port}",
                       "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET})


def bare(workdir, responses_path):
    port = free_port()
    return Server("bare WSGI", [str(BENCH / "bare.py"), "--port", str(port), "--response", str(responses_path)],
                  port, Path(workdir) / f"bare-{port}.log")


def shop_command(workdir, shop_server, *args, env=None):
    """Run a merchant command (`python shop.py fulfilments --json`) against a shop's data; its stdout."""
    settings = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STANDIN_"))}
    settings.update({"STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                     "DATA_DIR": str(shop_server.data_dir)})
    settings.update(env or {})
    out = subprocess.run([PYTHON, "shop.py", *args], cwd=ROOT, env=settings, capture_output=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"shop.py {' '.join(args)} exited {out.returncode}: {out.stderr.decode()[-2000:]}")
    return out.stdout.decode()


class Postgres:
    """A fresh database on the local PostgreSQL for one run, dropped afterwards."""

    def __init__(self, admin="postgresql://postgres@127.0.0.1:5432/postgres"):
        import psycopg
        self.admin = admin
        self.name = f"shop_bench_{os.getpid()}_{int(time.time())}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = admin.rsplit("/", 1)[0] + "/" + self.name

    def drop(self):
        import psycopg
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_available():
    try:
        import psycopg
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 — any failure means: skip the PostgreSQL figure, say why
        return False


class PostgresProcesses:
    """PostgreSQL's own processes, watched like a server: the CPU they use during a load (every database's)."""

    name = "PostgreSQL"

    def cpu_seconds(self):
        total = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
                if not head.endswith("(postgres"):
                    continue
                fields = rest.split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mib(self):
        return float("nan")
