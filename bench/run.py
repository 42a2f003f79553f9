"""The shop's benchmarks, each side by side with a baseline measured in the same run, on loopback only.

    python bench/run.py            # the full run (about 8 minutes)
    python bench/run.py --quick    # a few seconds per load (about 2 minutes)
    python bench/run.py --only 1,3 # some figures

1. Sale time: the shop and a minimal Flask app of the stripe-samples shape against the same stand-in, which
   answers every API call in 400 ms: checkout starts and success pages at 64 and 256 clients, webhooks at 64,
   peak RSS, 300 slow clients.
2. GET / of the shop against a bare WSGI app serving the same bytes under the same waitress settings.
3. Stripe calls per purchase, from the stand-in's own call counter.
4. Page weight, and GET / with 10, 1,000 and 10,000 products.
5. The ledger on PostgreSQL beside SQLite, and two shop instances on one PostgreSQL beside one.

Prints a Markdown table (docs/benchmarks.md holds the last full run). Servers' logs are kept with --keep.
"""

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures  # noqa: E402

FIGURES = {1: figures.figure1, 2: figures.figure2, 3: figures.figure3, 4: figures.figure4, 5: figures.figure5}
TITLES = {1: "Sale time, Stripe at 400 ms a call", 2: "GET / against a bare WSGI app", 3: "Stripe calls per purchase",
          4: "Page weight and catalog scale", 5: "Ledger: PostgreSQL, and two instances"}


def table(rows):
    lines = ["| # | Measure | Shop | Baseline | Target | Result |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [str(r.figure), r.measure, r.shop, r.baseline, r.target, r.verdict]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def revision():
    """The commit measured, and whether the app's files differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench", ":!docs"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    return f"commit {head}" + (" with uncommitted changes" if changed else "")


def header(quick):
    load1, _, _ = os.getloadavg()
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {revision()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}, "
            f"{'quick' if quick else 'full'} run, load average before {load1:.2f}")


async def main_async(args, workdir):
    plan = figures.Plan(args.quick)
    rows, notes = [], []
    for number in args.only:
        print(f"figure {number}: {TITLES[number]}", flush=True)
        start = time.monotonic()
        got, said = await FIGURES[number](plan, workdir)
        rows += got
        notes += [f"({number}) {n}" for n in said]
        print(f"  ({time.monotonic() - start:.0f} s)", flush=True)
    return rows, notes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds per load instead of 10")
    p.add_argument("--only", default="1,2,3,4,5", help="comma-separated figure numbers (default: all)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder with the servers' logs")
    args = p.parse_args(argv)
    try:
        args.only = [int(n) for n in args.only.split(",")]
        assert all(n in FIGURES for n in args.only)
    except (ValueError, AssertionError):
        p.error("--only takes figure numbers from 1 to 5, e.g. 1,3")
    workdir = tempfile.mkdtemp(prefix="shop-bench-")
    about = header(args.quick)
    try:
        rows, notes = asyncio.run(main_async(args, workdir))
    finally:
        if args.keep:
            print(f"servers' logs and data: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(about)
    print()
    print(table(rows))
    if figures.OTHERS:
        notes.append(f"other processes on the machine used {max(figures.OTHERS):.0%} of its CPU at most during a "
                     f"measured load (median {sorted(figures.OTHERS)[len(figures.OTHERS) // 2]:.0%})")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    return 1 if any(r.verdict.startswith("FAIL") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
