"""The shop's benchmarks: every figure is a ratio or count measured in this run; prints a markdown table.

    .venv/bin/python bench/run.py            # about 3 minutes on 2 cores; loopback only; stops by itself
    .venv/bin/python bench/run.py --quick    # shorter rounds, for trying things out
    .venv/bin/python bench/run.py --readme   # also put the table into README.md (between the bench markers)
"""

import argparse
import datetime
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import catalog_scale  # noqa: E402
import pages  # noqa: E402
import purchase  # noqa: E402
from load import Load, find_wrk  # noqa: E402
from servers import peak_rss_mb, start_shop  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine():
    """CPU model, cores, memory and versions, for the table's caption."""
    model = "unknown CPU"
    try:
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())[1].strip()
    except (OSError, TypeError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import waitress.utilities  # noqa: F401
    from importlib.metadata import version
    return (f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, waitress {version('waitress')}, bottle {version('bottle')}")


def ok(met):
    return "met" if met else "**NOT met**"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1-second rounds, 2 rounds (numbers are noisier)")
    p.add_argument("--readme", action="store_true", help="write the table into README.md")
    p.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is there")
    p.add_argument("--connections", type=int, default=16, help="concurrent connections for page loads")
    args = p.parse_args(argv)
    rounds, seconds = (2, 1) if args.quick else (5, 2)
    conns = args.connections
    started = time.monotonic()
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 progress on stderr, table on stdout
    load = Load(None if args.no_wrk else find_wrk(say=say))
    say(f"load generator: {load.name}")
    rows, notes = [], []

    from catalog import load_catalog
    catalog = load_catalog(ROOT / "catalog.json", ROOT / "public")
    ids = [p.id for p in catalog.products]
    variants = pages.variants(ids)

    with tempfile.TemporaryDirectory(prefix="shop-bench-") as tmp:
        tmp = Path(tmp)
        # 1. Pages against the bare baseline; 4. page weight; 8. memory.
        say("1. GET / and GET /cart against the bare baseline ...")
        with start_shop(tmp, "shop") as shop:
            shop.wait_ready()
            vs = pages.versus_bare(load, shop, tmp, variants, rounds, seconds, conns)
            for label, r in vs.items():
                target = "≥ 0.8" if label.startswith("GET / ") else "(reported)"
                met = r["ratio"] >= 0.8 if label.startswith("GET / ") else None
                rows.append((f"1. {label}: shop ÷ bare WSGI, same bytes", f"**{r['ratio']:.2f}** "
                             f"({r['a_rps']:.0f} vs {r['b_rps']:.0f} req/s; rounds {', '.join(f'{x:.2f}' for x in r['ratios'])})",
                             target, ok(met) if met is not None else "—"))
                if r["errors"]:
                    notes.append(f"{label}: {r['errors']} errors during the load")
            load_cores = max(r["client_cores"] for r in vs.values())

            say("2. POST /checkout ...")
            co = purchase.checkout_load(load, shop, ids[0], pages.SID, seconds * 2)
            share = purchase.standin_share(tmp / "inproc-share", ids[0])
            rows.append(("2. POST /checkout (in-process stand-in)",
                         f"{co.rps:.0f} req/s, p50 {co.p50_ms:.1f} ms, p99 {co.p99_ms:.1f} ms; "
                         f"stand-in share {share['share']:.0%} ({share['standin_ms']:.1f} of "
                         f"{share['per_request_ms']:.1f} ms in-process)", "(reported)", "—"))

            say("4. page weight and static caching ...")
            for label in ("GET / warm", "GET /cart warm"):
                path, headers = variants[label]
                w = pages.page_weight(shop.url, path, headers)
                kb = w["total"] / 1024
                rows.append((f"4. weight of {path}: HTML + CSS + JS", f"{w['total']:,} B = {kb:.1f} KiB "
                             f"(HTML {w['html']:,}, CSS {w['css']:,}, JS {w['js']}; {w['scripts']} scripts)",
                             "≤ 15 KiB, no JS", ok(kb <= 15 and w["scripts"] == 0)))
            s = pages.static_revalidation(shop.url)
            met = s["etag"] and s["last_modified"] and s["cache_control"] and s["repeat_status"] == 304
            rows.append(("4. /static/style.css revalidation",
                         f"ETag {'yes' if s['etag'] else 'no'}, Last-Modified {'yes' if s['last_modified'] else 'no'}, "
                         f"Cache-Control `{s['cache_control']}`; repeat → {s['repeat_status']} "
                         f"({s['repeat_bytes']} B instead of {s['first_bytes']:,})", "304", ok(met)))
            rss_one = max(filter(None, (peak_rss_mb(pid) for pid in shop.workers())), default=0)

        # 3. More than one core.
        say("3. 2 workers against 1 ...")
        with start_shop(tmp, "w1", workers=1) as one, start_shop(tmp, "w2", workers=2) as two:
            one.wait_ready(), two.wait_ready()
            label = "GET / cold"
            path, headers = variants[label]
            r = pages.workers_scaling(load, one, two, path, headers, rounds, seconds, conns)
            rows.append((f"3. {label}: 2 workers ÷ 1 worker", f"**{r['ratio']:.2f}** ({r['a_rps']:.0f} vs "
                         f"{r['b_rps']:.0f} req/s; rounds {', '.join(f'{x:.2f}' for x in r['ratios'])})",
                         "≥ 1.6", ok(r["ratio"] >= 1.6)))
            rss_two = max(filter(None, (peak_rss_mb(pid) for pid in two.workers())), default=0)

        # 5. Stripe API calls per purchase.
        say("5. API calls per purchase ...")
        calls = purchase.api_calls_per_purchase(tmp / "inproc-calls", ids[:2])
        hooks = calls["webhooks"]
        worst = max((n for _, n, _ in hooks), default=0)
        rows.append(("5. Stripe API calls per purchase", f"checkout {calls['checkout']}, success page "
                     f"{calls['success']}, webhooks {', '.join(f'{t} {n}' for t, n, _ in hooks) or 'none'}",
                     "1, ≤ 1, ≤ 1 each", ok(calls["checkout"] == 1 and calls["success"] <= 1 and worst <= 1
                                            and calls["paid"])))

        # 6. Webhook ingestion.
        say("6. webhook ingestion ...")
        n_events = 600 if args.quick else 2000
        data = tmp / "data-webhooks"
        signed, order_ids = purchase.prepare_paid_sessions(data, ids[0], n_events)
        with start_shop(tmp, "webhooks", data_dir=data) as shop:
            shop.wait_ready()
            w = purchase.webhook_ingestion(shop.url, data, signed, order_ids)
            rss_hooks = max(filter(None, (peak_rss_mb(pid) for pid in shop.workers())), default=0)
        met = w["rps"] >= 500 and w["lost"] == 0 and w["double"] == 0 and w["not_marked_paid"] == 0
        rows.append(("6. webhook ingestion, 8 concurrent senders", f"**{w['rps']:.0f} events/s** ({w['events']} "
                     f"events, p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms); lost {w['lost']}, "
                     f"double fulfilments {w['double']}", "≥ 500/s, 0 lost, 0 double", ok(met)))

        # 7. Catalog scale.
        say("7. 10,000-product catalog ...")
        big = catalog_scale.generate(tmp / "catalog-10k.json")
        t = catalog_scale.timings(big)
        with start_shop(tmp, "big", catalog=big) as shop:
            shop.wait_ready()
            big_ids = [f"book-{i:05d}" for i in range(2)]
            vs_big = pages.versus_bare(load, shop, tmp, {"GET / cold": pages.variants(big_ids)["GET / cold"]},
                                       rounds, seconds, conns, name="bare-big")["GET / cold"]
            w1 = pages.page_weight(shop.url, "/", {})
            w_last = pages.page_weight(shop.url, "/?page=417", {})
            rss_big = max(filter(None, (peak_rss_mb(pid) for pid in shop.workers())), default=0)
        rows.append(("7. 10,000 products: validate / reload after an edit",
                     f"{t['validate_s'] * 1000:.0f} ms / {t['reload_s'] * 1000:.0f} ms "
                     f"({t['bytes'] / 2**20:.1f} MiB file; unchanged file: {t['unchanged_us']:.0f} µs per request)",
                     "(reported)", "—"))
        rows.append(("7. 10,000 products: GET / cold, shop ÷ bare", f"**{vs_big['ratio']:.2f}** "
                     f"({vs_big['a_rps']:.0f} vs {vs_big['b_rps']:.0f} req/s); page 1 weighs {w1['html']:,} B HTML, "
                     f"page 417 {w_last['html']:,} B", "(reported)", "—"))

        # 8. Memory.
        rows.append(("8. peak RSS of one worker", f"{rss_one:.0f} MiB (8 products), {rss_two:.0f} MiB (each of "
                     f"2 workers), {rss_hooks:.0f} MiB (webhooks), {rss_big:.0f} MiB (10,000 products)",
                     "(reported)", "—"))

    took = time.monotonic() - started
    today = datetime.date.today().isoformat()
    table = render(rows, today, machine(), load.name, load_cores, conns, rounds, seconds, took, notes)
    print(table)
    if args.readme:
        write_readme(table)
        say("README.md updated")
    return 0


def render(rows, today, machine_, load_name, load_cores, conns, rounds, seconds, took, notes):
    lines = [f"Measured {today} on {machine_}.",
             f"Load: {load_name}, {conns} connections, {rounds} interleaved rounds of {seconds} s per pair "
             f"(the load generator used {load_cores:.2f} of a core while loading the shop); the run took {took:.0f} s.",
             "", "| Figure | Measured | Target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [f"\nNote: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_readme(table):
    path = ROOT / "README.md"
    text = path.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = f"{head}{START}\n{table}{END}{tail}"
    else:
        text = text.rstrip("\n") + f"\n\n{START}\n{table}{END}\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
