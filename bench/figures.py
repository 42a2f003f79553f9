"""The five figures. Each starts its own servers, measures, stops them, and returns rows for the table."""

import asyncio
import json
import math
import os
import time
from pathlib import Path

import load
import servers
import shoppers

LATENCY_MS = 400
SHOP_PAID = b"Thank you for your order"
GUNICORN = "two gthread workers of 64 threads"  # as servers.gunicorn() and docs/operations.md run it
FLASK_PAID = b"Payment paid"


class Plan:
    """How long and how big: the full run, or --quick."""

    def __init__(self, quick):
        self.quick = quick
        self.seconds = 2.0 if quick else 10.0  # each sale-time load
        self.short = 1.5 if quick else 5.0  # each GET / load of figures 2 and 4
        self.catalog_sizes = (10, 1_000, 10_000)


class Row:
    """One line of the results table."""

    def __init__(self, figure, measure, shop, baseline="", target="", verdict=""):
        self.figure, self.measure, self.shop, self.baseline, self.target, self.verdict = (
            figure, measure, shop, baseline, target, verdict)


def verdict(ok):
    return "pass" if ok else "FAIL"


def fmt(result, unit="/s"):
    """'153/s, p50 412 ms, p99 780 ms, 0 errors' for a load result."""
    if result.count == 0:
        return f"nothing answered, {result.errors} errors {result.error_kinds}"
    errors = f"{result.errors} errors" + (f" ({_kinds(result)})" if result.errors else "")
    early = f", all done in {result.elapsed:.1f} s" if result.seconds and result.elapsed < result.seconds else ""
    others = result.extra.get("others", 0)
    busy = f"; other processes took {others:.0%} of the CPU" if others >= 0.05 else ""
    return (f"{result.rate:.0f}{unit}, p50 {result.pct(50) * 1000:.0f} ms, p99 {result.pct(99) * 1000:.0f} ms, "
            f"{errors} ({result.count:,} done{early}{busy})")


def _kinds(result):
    return ", ".join(f"{n}× {k}" for k, n in sorted(result.error_kinds.items(), key=lambda kv: -kv[1])[:2])


async def measure(op, clients, seconds, watch=(), limit=None):
    """load.run() plus, per watched server, CPU seconds used during the run and peak RSS (sampled 4× a second)."""
    peak = {s.name: s.rss_mib() for s in watch}  # nan for PostgreSQL's processes
    cpu0 = {s.name: s.cpu_seconds() for s in watch}
    busy0 = machine_busy_seconds()

    def tick():
        for s in watch:
            peak[s.name] = max(peak[s.name], s.rss_mib())
    # Bounded in count too: more than the clients could do if every call took no time but Stripe's 400 ms.
    limit = limit or math.ceil(clients / (LATENCY_MS / 1000) * seconds) + clients
    result = await load.run(op, clients, seconds, limit=limit, on_tick=tick)
    tick()
    result.extra["cpu"] = {s.name: s.cpu_seconds() - cpu0[s.name] for s in watch}
    result.extra["rss"] = peak
    # What the rest of the machine used meanwhile (other processes share the 2 cores): busy CPU seconds of the
    # whole machine minus the watched servers' and the generator's own, as a share of the run's 2-core seconds.
    others = machine_busy_seconds() - busy0 - sum(result.extra["cpu"].values()) - result.cpu
    result.extra["others"] = max(0.0, others) / (result.elapsed * (os.cpu_count() or 1))
    OTHERS.append(result.extra["others"])
    return result


OTHERS = []  # every measured run's share of the machine used by processes outside the bench


def machine_busy_seconds():
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def log_run(label, result):
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in result.extra.get("cpu", {}).items())
    others = result.extra.get("others")
    print(f"  {label}: {result!r}" + (f" [CPU s: {cpu}; others {others:.0%}]" if cpu else ""), flush=True)


async def warm_up(app, stripe, csrf):
    """A few unmeasured checkouts first: imports, first connections, compiled templates."""
    await load.run(shoppers.checkout(app.port, stripe.port, csrf), 16, 1.0, limit=64)


async def top_up(shop, stripe, sessions, wanted, clients=128, csrf=True):
    """Start checkouts (unmeasured) until `sessions` holds `wanted` ids."""
    for _ in range(3):
        missing = wanted - len(sessions)
        if missing <= 0:
            return
        result = await load.run(shoppers.checkout(shop.port, stripe.port, csrf, sessions), min(clients, missing),
                                120, limit=missing)
        if result.errors:
            print(f"  topping up: {result!r}", flush=True)
    if len(sessions) < wanted:
        raise RuntimeError(f"{shop.name}: could not start {wanted} checkouts (see {shop.log_path})")


async def pay_all(stripe, sessions):
    """Pay every session on the stand-in's payment page; returns the paid ids in the order given."""
    paid = []
    result = await load.run(shoppers.payer(stripe.port, sessions, paid), 8, 600, limit=len(sessions))
    if result.errors:
        print(f"  paying: {result!r}", flush=True)
    done = set(paid)
    return [s for s in sessions if s in done]


def with_duplicates(events, every=10, later=32):
    """Stripe delivers at least once: every `every`-th event is sent again `later` deliveries on, while the first
    may still be in flight (https://docs.stripe.com/webhooks#handle-duplicate-events)."""
    out = list(events)
    for i in range(len(events) - 1, -1, -every):
        out.insert(min(len(out), i + later), events[i])
    return out


def fulfilments(workdir, shop, env=None):
    """Every hand-off record of the shop, read with `python shop.py fulfilments --json` (paged with --after)."""
    records, after = [], 0
    while True:
        out = servers.shop_command(workdir, shop, "fulfilments", "--json", "--after", str(after), env=env)
        page = [json.loads(line) for line in out.splitlines() if line.strip()]
        if not page:
            return records
        records += page
        after = page[-1]["id"]


def hand_off_check(records, answers):
    """(acknowledged, lost, double) for the deliveries in `answers` ((event, status) pairs): acknowledged = paid
    sessions whose event was answered with a 2xx; lost = those of them without a record; double = records beyond
    one per order."""
    wanted = {e["data"]["object"]["id"] for e, status in answers if 200 <= status < 300}
    mine = [r for r in records if r.get("session_id") in wanted]
    orders = [r["order_id"] for r in mine]
    return len(wanted), len(wanted) - len(set(r["session_id"] for r in mine)), len(orders) - len(set(orders))


# -- figure 1 -----------------------------------------------------------------------------------------------------

async def figure1(plan, workdir):
    rows, notes = [], []
    # One stand-in each, configured alike: sharing one, the shop's 128 idle keep-alive connections (one per
    # request thread) would slow the stand-in down while it answered the baseline, whose waitress loop visits
    # every open connection each time it wakes.
    stripes = {"shop": servers.standin(workdir, LATENCY_MS, name="stand-in (shop)")}
    started = [stripes["shop"]]
    try:
        stripes["flask"] = servers.standin(workdir, LATENCY_MS, name="stand-in (Flask)")
        started.append(stripes["flask"])
        shop = servers.shop(workdir, stripes["shop"], data_dir=Path(workdir) / "shop-data")
        started.append(shop)
        flask = servers.flask_sample(workdir, stripes["flask"])
        started.append(flask)
        rows, notes = await _figure1(plan, workdir, {"shop": shop, "flask": flask}, stripes)
    finally:
        for s in reversed(started):
            s.stop()
    return rows, notes


async def _figure1(plan, workdir, apps, stripes):
    rows, notes = [], []
    csrf = {"shop": True, "flask": False}
    shop = apps["shop"]
    watch = (*apps.values(), *stripes.values())
    for name, app in apps.items():
        await warm_up(app, stripes[name], csrf[name])
    sessions = {name: [] for name in apps}
    checkouts = {}
    for clients in (64, 256):
        for name, app in apps.items():
            r = await measure(shoppers.checkout(app.port, stripes[name].port, csrf[name], sessions[name]), clients,
                              plan.seconds, watch)
            checkouts[name, clients] = r
            log_run(f"checkout {name} {clients}", r)
    s64, f64, s256, f256 = (checkouts["shop", 64], checkouts["flask", 64], checkouts["shop", 256],
                            checkouts["flask", 256])
    ideal = 64 / (LATENCY_MS / 1000)
    rows.append(Row(1, "Checkout starts, 64 clients", fmt(s64), fmt(f64),
                    f"≥ {0.9 * ideal:.0f}/s, p99 ≤ 0.9 s, no errors",
                    verdict(s64.rate >= 0.9 * ideal and s64.pct(99) <= 0.9 and s64.errors == 0)))
    rows.append(Row(1, "Checkout starts, 256 clients", fmt(s256), fmt(f256), "≥ Flask sample, p99 ≤ 1.5 s",
                    verdict(s256.rate >= f256.rate and s256.pct(99) <= 1.5)))
    # The same shop and ledger under gunicorn (docs/operations.md), before the stand-in holds thousands of sessions.
    gunicorn = servers.gunicorn(workdir, stripes["shop"], Path(workdir) / "shop-data")
    try:
        await warm_up(gunicorn, stripes["shop"], True)
        for clients in (64, 256):
            r = await measure(shoppers.checkout(gunicorn.port, stripes["shop"].port, True, sessions["shop"]),
                              clients, plan.seconds, (gunicorn, stripes["shop"]))
            log_run(f"checkout shop under gunicorn {clients}", r)
            rows.append(Row(1, f"Checkout starts, {clients} clients: the shop under gunicorn ({GUNICORN})", fmt(r),
                            fmt(checkouts["flask", clients])))
    finally:
        gunicorn.stop()

    # Paid sessions whose shopper has not come back yet: for each app, one pool per load from its own checkouts
    # (topped up when short), each session viewed once. Sized from the faster app's checkout rate at the same
    # concurrency; a load that uses its pool up before its deadline ends there and says so.
    def size(clients):
        fastest = max(checkouts["shop", clients].rate, checkouts["flask", clients].rate, 20)
        return min(math.ceil(clients / (LATENCY_MS / 1000) * plan.seconds), math.ceil(2 * fastest * plan.seconds))
    need = {"success64": size(64), "success256": size(256), "webhook64": size(64)}
    pools = {}
    for name, app in apps.items():
        wanted = dict(need, gunicorn256=size(256), gunicornhooks=size(64)) if name == "shop" else need
        await top_up(app, stripes[name], sessions[name], sum(wanted.values()), csrf=csrf[name])
        start = time.monotonic()
        paid = await pay_all(stripes[name], sessions[name][:sum(wanted.values())])
        print(f"  paid {len(paid)} sessions of the {name} in {time.monotonic() - start:.1f} s", flush=True)
        at = 0
        for key, n in wanted.items():
            pools[name, key], at = paid[at:at + n], at + n

    success = {}
    for clients in (64, 256):
        for name, app in apps.items():
            expect = SHOP_PAID if name == "shop" else FLASK_PAID
            r = await measure(shoppers.viewer(app.port, pools[name, f"success{clients}"], expect), clients,
                              plan.seconds, watch)
            success[name, clients] = r
            log_run(f"success {name} {clients}", r)
    for clients in (64, 256):
        rows.append(Row(1, f"Success page (first view, paid), {clients} clients", fmt(success["shop", clients]),
                        fmt(success["flask", clients])))
    # The same shop and ledger under gunicorn (docs/operations.md): waitress's loop thread, which visits every
    # open connection each time it wakes, spins while a request thread holds a connection's output lock, and
    # under load that thread waits long for the GIL (docs/benchmarks.md, "What limits one process").
    gunicorn = servers.gunicorn(workdir, stripes["shop"], Path(workdir) / "shop-data")
    try:
        await warm_up(gunicorn, stripes["shop"], True)
        r = await measure(shoppers.viewer(gunicorn.port, pools["shop", "gunicorn256"], SHOP_PAID), 256,
                          plan.seconds, (gunicorn, stripes["shop"]))
        log_run("success shop under gunicorn 256", r)
        deliveries = with_duplicates(await shoppers.completed_events(stripes["shop"].port,
                                                                     pools["shop", "gunicornhooks"]))
        g_answers = []
        g_hooks = await measure(shoppers.deliverer(gunicorn.port, deliveries, g_answers), 64, plan.seconds,
                                (gunicorn, stripes["shop"]), limit=len(deliveries))
        log_run("webhooks shop under gunicorn", g_hooks)
    finally:
        gunicorn.stop()
    rows.append(Row(1, f"Success page (first view, paid), 256 clients: the shop under gunicorn ({GUNICORN})", fmt(r),
                    fmt(success["flask", 256])))
    notes.append(f"CPU ms per success view at 256, the same shop under gunicorn | waitress: "
                 f"{1000 * r.extra['cpu'][gunicorn.name] / max(1, r.count):.1f} | "
                 f"{1000 * success['shop', 256].extra['cpu'][shop.name] / max(1, success['shop', 256].count):.1f}")

    hooks, answers = {}, {}
    for name, app in apps.items():
        events = await shoppers.completed_events(stripes[name].port, pools[name, "webhook64"])
        deliveries = with_duplicates(events)
        answers[name] = []
        r = await measure(shoppers.deliverer(app.port, deliveries, answers[name]), 64, plan.seconds, watch,
                          limit=len(deliveries))
        hooks[name] = r
        log_run(f"webhooks {name}", r)
    records = fulfilments(workdir, shop)  # both instances' hand-offs, on the one DATA_DIR

    def hook_cell(result, delivered):
        """A webhook load's cell, and whether each order it acknowledged was handed off once."""
        acknowledged, lost, double = hand_off_check(records, delivered)
        return (fmt(result, " events/s") + f"; {acknowledged} paid orders acknowledged: {lost} lost, {double} double",
                lost == 0 and double == 0)
    cell, once = hook_cell(hooks["shop"], answers["shop"])
    rows.append(Row(1, "Webhook deliveries (checkout.session.completed, 10% sent twice), 64 senders", cell,
                    fmt(hooks["flask"], " events/s"), "≥ 120 events/s, 0 lost, 0 double",
                    verdict(hooks["shop"].rate >= 120 and once)))
    rows.append(Row(1, f"Webhook deliveries, as above: the shop under gunicorn ({GUNICORN})",
                    hook_cell(g_hooks, g_answers)[0], fmt(hooks["flask"], " events/s")))

    rss = {name: max(checkouts[name, 256].extra["rss"][app.name], success[name, 256].extra["rss"][app.name])
           for name, app in apps.items()}
    rows.append(Row(1, "Peak RSS during the 256-client loads", f"{rss['shop']:.0f} MiB", f"{rss['flask']:.0f} MiB",
                    "≤ 150 MiB", verdict(rss["shop"] <= 150)))

    slow = {name: await shoppers.slow_clients(app.port) for name, app in apps.items()}
    cells = {name: f"{held} held, {ok}/20 answered, slowest {worst * 1000:.0f} ms"
             for name, (held, worst, ok) in slow.items()}
    _, worst, ok = slow["shop"]
    rows.append(Row(1, "300 slow clients (half a request line each) + 20 GET /", cells["shop"], cells["flask"],
                    "20/20 within 1 s", verdict(ok == 20 and worst <= 1.0)))

    def cell(runs):
        return " | ".join(f"{1000 * runs[n].extra['cpu'][apps[n].name] / max(1, runs[n].count):.1f} + "
                          f"{1000 * runs[n].extra['cpu'][stripes[n].name] / max(1, runs[n].count):.1f}"
                          for n in ("shop", "flask"))
    notes.append("CPU ms per operation, app + its stand-in, shop | Flask sample: " + "; ".join(
        [f"checkout start (with its GET /) at {c}: {cell({n: checkouts[n, c] for n in apps})}" for c in (64, 256)]
        + [f"success view at {c}: {cell({n: success[n, c] for n in apps})}" for c in (64, 256)]
        + [f"webhook at 64: {cell(hooks)}"]))
    notes.append("share of one core each stand-in used during the 256-client checkout loads (one process: 100% "
                 "is all it can use), shop | Flask sample: " + " | ".join(
                     f"{checkouts[n, 256].extra['cpu'][stripes[n].name] / checkouts[n, 256].elapsed:.0%}"
                     for n in ("shop", "flask")))
    queued = shop.log_lines("Task queue depth")
    if queued:
        notes.append(f"shop log: {len(queued)} waitress warnings 'Task queue depth' (all THREADS busy, "
                     "requests waiting for a thread)")
    errors = shop.log_lines(" ERROR ", "Traceback")
    if errors:
        notes.append(f"shop log: {len(errors)} ERROR lines, e.g. {errors[0][:200]}")
    gen = sorted(r.cpu_ms_per_op for r in list(checkouts.values()) + list(success.values()) + list(hooks.values()))
    notes.append(f"load generator's own CPU: {gen[0]:.2f}–{gen[-1]:.2f} ms per operation (a checkout start is "
                 "two requests and a new connection)")
    return rows, notes


# -- figure 2 -----------------------------------------------------------------------------------------------------

async def figure2(plan, workdir):
    rows, notes = [], []
    stripe = servers.standin(workdir, 0)
    shop = servers.shop(workdir, stripe)
    bare = None
    try:
        conn = load.Connection(shop.port)
        _, headers, _ = await conn.request("GET", "/")
        cookie = f"sid={load.cookie_of(headers, 'sid')}"
        status, headers, body = await conn.request("GET", "/", {"Cookie": cookie})
        conn.close()
        recorded = {"status": f"{status} OK",
                    "headers": [[k, v] for k, vs in headers.items() for v in vs
                                if k not in ("date", "server", "connection")],
                    "body": body.decode("latin-1")}
        path = Path(workdir) / "response.json"
        path.write_text(json.dumps(recorded))
        bare = servers.bare(workdir, path)
        clients = 8
        runs = {"shop": [], "bare": []}
        for name, server in (("shop", shop), ("bare", bare)):  # warm-up
            await load.run(shoppers.getter(server.port, "/", cookie), clients, 0.5)
        for _ in range(2):
            for name, server in (("shop", shop), ("bare", bare)):
                r = await measure(shoppers.getter(server.port, "/", cookie), clients, plan.short, (server,),
                                  limit=100_000)
                runs[name].append(r)
                log_run(f"GET / {name}", r)
        # The better of two rounds each: other work on the machine only ever slows a server down.
        best = {k: max(v, key=lambda r: r.rate) for k, v in runs.items()}
        shop_rate, bare_rate = best["shop"].rate, best["bare"].rate
        rows.append(Row(2, f"GET / ({len(body):,} bytes), {clients} keep-alive clients",
                        fmt(best["shop"]), fmt(best["bare"]) + " (bare WSGI, same bytes, same waitress)",
                        "shop ÷ bare ≥ 0.6", verdict(shop_rate / bare_rate >= 0.6)
                        + f" ({shop_rate / bare_rate:.2f})"))
        notes.append(f"GET / CPU per request: shop "
                     f"{1000 * best['shop'].extra['cpu']['shop'] / best['shop'].count:.2f} ms, bare "
                     f"{1000 * best['bare'].extra['cpu']['bare WSGI'] / best['bare'].count:.2f} ms")
        # The generator's own cost, both ways, against the bare app (the cheapest server).
        a = await load.run(shoppers.getter(bare.port, "/", cookie), clients, plan.short / 2, limit=100_000)
        t = await asyncio.get_running_loop().run_in_executor(
            None, load.run_threads, bare.port, "/", clients, plan.short / 2, {"Cookie": cookie})
        rows.append(Row(2, "Load generator's own CPU per request (GET / of the bare app, 8 clients)",
                        f"asyncio + raw HTTP/1.1: {a.cpu_ms_per_op:.2f} ms ({a.rate:.0f}/s)",
                        f"threads + http.client: {t.cpu_ms_per_op:.2f} ms ({t.rate:.0f}/s)"))
    finally:
        for s in (bare, shop, stripe):
            if s is not None:
                s.stop()
    return rows, notes


# -- figure 3 -----------------------------------------------------------------------------------------------------

async def _delta(stripe, action):
    """The stand-in's calls made during action(), by endpoint; the action's own requests must all succeed."""
    before = await shoppers.calls(stripe.port)
    result = await action()
    after = await shoppers.calls(stripe.port)
    if result.errors or result.count != 1:
        raise RuntimeError(f"figure 3: a step of the purchase failed: {result!r}")
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def _n(delta):
    return sum(delta.values())


async def figure3(plan, workdir):
    rows, notes = [], []
    stripe = servers.standin(workdir, 0)
    shop = servers.shop(workdir, stripe)
    flask = servers.flask_sample(workdir, stripe)
    try:
        counts = {}
        for name, server, csrf, paid_text in (("shop", shop, True, SHOP_PAID), ("flask", flask, False, FLASK_PAID)):
            got = counts[name] = {}
            for order in ("success first", "webhook first"):
                sessions = []
                got["start", order] = await _delta(stripe, lambda: load.run(
                    shoppers.checkout(server.port, stripe.port, csrf, sessions), 1, 30, limit=1))
                assert len(sessions) == 1, f"{name}: the checkout did not start"
                await pay_all(stripe, sessions)
                event = (await shoppers.completed_events(stripe.port, sessions))[0]

                def view():
                    return load.run(shoppers.viewer(server.port, sessions, paid_text), 1, 30, limit=1)

                def hook():
                    return load.run(shoppers.deliverer(server.port, [event]), 1, 30, limit=1)
                steps = (("success", view), ("webhook", hook)) if order == "success first" else (
                    ("webhook", hook), ("success", view))
                for step, action in steps:
                    got[step, order] = await _delta(stripe, action)
                got["reload", order] = await _delta(stripe, view)
                got["duplicate webhook", order] = await _delta(stripe, hook)
        s, f = counts["shop"], counts["flask"]

        def cell(d, *keys):
            return " / ".join(str(_n(d[k])) for k in keys)
        rows.append(Row(3, "Stripe calls to start a checkout", cell(s, ("start", "success first")),
                        cell(f, ("start", "success first")), "1", verdict(_n(s["start", "success first"]) == 1)))
        confirm = max(_n(s["success", "success first"]), _n(s["success", "webhook first"]))
        rows.append(Row(3, "… to confirm (success page before / after the webhook; a reload)",
                        cell(s, ("success", "success first"), ("success", "webhook first"), ("reload", "webhook first")),
                        cell(f, ("success", "success first"), ("success", "webhook first"), ("reload", "webhook first")),
                        "≤ 1", verdict(confirm <= 1 and _n(s["reload", "webhook first"]) <= 1)))
        hook_max = max(_n(s["webhook", "success first"]), _n(s["webhook", "webhook first"]),
                       _n(s["duplicate webhook", "webhook first"]))
        rows.append(Row(3, "… per webhook (after / before the success page; a duplicate)",
                        cell(s, ("webhook", "success first"), ("webhook", "webhook first"),
                             ("duplicate webhook", "webhook first")),
                        cell(f, ("webhook", "success first"), ("webhook", "webhook first"),
                             ("duplicate webhook", "webhook first")),
                        "≤ 1", verdict(hook_max <= 1)))
        grouped = {}
        for (step, order), d in s.items():
            grouped.setdefault(tuple(sorted(d.items())), []).append(f"{step} ({order})")
        notes.append("the shop's calls by endpoint: " + "; ".join(
            f"{', '.join(steps)}: " + (", ".join(f"{n}× {k}" for k, n in calls) or "none")
            for calls, steps in grouped.items()))
    finally:
        for srv in (flask, shop, stripe):
            srv.stop()
    return rows, notes


# -- figure 4 -----------------------------------------------------------------------------------------------------

WORDS = ("lantern", "harbour", "orchard", "winter", "atlas", "meridian", "quiet", "copper", "river", "garden",
         "northern", "salt", "paper", "ember", "violet", "stone", "tide", "falcon", "hollow", "summer")


def generate_catalog(path, count):
    """A valid catalog of `count` products: the shop's own settings, its images reused."""
    base = json.loads((servers.ROOT / "catalog.json").read_text())
    images = sorted({p["image"] for p in base["products"]})
    base["products"] = [{
        "id": f"book-{i:05d}",
        "name": f"The {WORDS[i % 20].title()} {WORDS[(i * 7 + 3) % 20].title()} No. {i}",
        "description": f"A generated title: {WORDS[i % 20]}, {WORDS[(i * 7 + 3) % 20]} and {WORDS[(i * 3) % 20]}.",
        "price": 499 + (i * 37) % 3000,
        "image": images[i % len(images)],
        "tax_code": "txcd_35010000",
    } for i in range(count)]
    Path(path).write_text(json.dumps(base, indent=2))
    return path


async def figure4(plan, workdir):
    rows, notes = [], []
    stripe = servers.standin(workdir, 0)
    shop = servers.shop(workdir, stripe)
    try:
        conn = load.Connection(shop.port)
        status, headers, home = await conn.request("GET", "/")
        sid = load.cookie_of(headers, "sid")
        token = shoppers.CSRF.search(home)[1].decode()
        form = f"csrf_token={token}&product_id=moby-dick&quantity=1&action=add".encode()
        _, headers, _ = await conn.request("POST", "/cart", {**shoppers.FORM, "Cookie": f"sid={sid}"}, form)
        cart_cookie = load.cookie_of(headers, "cart")
        _, _, cart = await conn.request("GET", "/cart", {"Cookie": f"sid={sid}; cart={cart_cookie}"})
        _, _, css = await conn.request("GET", "/static/style.css")
        conn.close()
        sessions = []
        await load.run(shoppers.checkout(shop.port, stripe.port, True, sessions), 1, 30, limit=1)
        await pay_all(stripe, sessions)
        conn = load.Connection(shop.port)
        _, _, success = await conn.request("GET", f"/success?session_id={sessions[0]}")
        conn.close()
        rows.append(Row(4, "Page weight (HTML/CSS bytes, uncompressed)",
                        f"/ {len(home):,}; /cart {len(cart):,}; /success {len(success):,}; style.css {len(css):,}"))
    finally:
        shop.stop()
    try:
        cells = []
        for count in plan.catalog_sizes:
            path = generate_catalog(Path(workdir) / f"catalog-{count}.json", count)
            started = time.monotonic()
            shop = servers.shop(workdir, stripe, env={"CATALOG": str(path)})
            ready = time.monotonic() - started
            try:
                await load.run(shoppers.getter(shop.port, "/"), 1, 0.3)
                one = await measure(shoppers.getter(shop.port, "/"), 1, plan.short / 2, (shop,), limit=100_000)
                many = await measure(shoppers.getter(shop.port, "/"), 8, plan.short / 2, (shop,), limit=100_000)
                cells.append(f"{count:,}: p50 {one.pct(50) * 1000:.1f} ms, {many.rate:.0f}/s, "
                             f"{shop.rss_mib():.0f} MiB, up in {ready:.1f} s")
                log_run(f"catalog {count} x1", one)
                log_run(f"catalog {count} x8", many)
            finally:
                shop.stop()
        rows.append(Row(4, "Catalog scale: GET / (1 client p50; 8 clients rate; RSS; start-up)", "; ".join(cells)))
    finally:
        stripe.stop()
    return rows, notes


# -- figure 5 -----------------------------------------------------------------------------------------------------

async def figure5(plan, workdir):
    rows, notes = [], []
    if not servers.postgres_available():
        return [Row(5, "PostgreSQL ledger", "skipped: no PostgreSQL at 127.0.0.1:5432 (user postgres)")], notes
    pg = servers.Postgres()
    started = []
    try:
        # A stand-in for the SQLite shop and one for the PostgreSQL shops (which must share theirs: either may
        # be asked about the other's session); the second instance starts only for the loads it is part of.
        lite_stripe = servers.standin(workdir, LATENCY_MS, name="stand-in (SQLite)")
        started.append(lite_stripe)
        pg_stripe = servers.standin(workdir, LATENCY_MS, name="stand-in (PostgreSQL)")
        started.append(pg_stripe)
        lite = servers.shop(workdir, lite_stripe, name="shop (SQLite)")
        started.append(lite)
        pg_env = {"DATABASE_URL": pg.url}
        one = servers.shop(workdir, pg_stripe, env=pg_env, name="shop (PostgreSQL)")
        started.append(one)
        rows, notes = await _figure5(plan, workdir, lite, one, lite_stripe, pg_stripe, pg_env, started)
    finally:
        for s in reversed(started):
            s.stop()
        pg.drop()
    return rows, notes


async def _figure5(plan, workdir, lite, one, lite_stripe, pg_stripe, pg_env, started):
    rows, notes = [], []
    stripe_of = {lite.name: lite_stripe, one.name: pg_stripe}
    pools = {lite.name: [], "PostgreSQL": []}  # one ledger: either PostgreSQL instance's orders
    watch = [lite, one, lite_stripe, pg_stripe, servers.PostgresProcesses()]

    def spread(*shops):
        """A checkout op that sends client i to shop i mod n (a load balancer's round robin)."""
        ops = [shoppers.checkout(s.port, stripe_of[s.name].port, True,
                                 pools[s.name if s is lite else "PostgreSQL"]) for s in shops]
        return lambda i, result: ops[i % len(ops)](i, result)

    async def checkouts(label, shops, clients):
        r = await measure(spread(*shops), clients, plan.seconds, watch)
        log_run(f"checkout {label} {clients}", r)
        return r

    async def webhooks(label, shops, pool, need):
        stripe = stripe_of[shops[0].name]
        await top_up(shops[0], stripe, pool, need)
        batch = pool[:need]
        del pool[:need]
        paid = await pay_all(stripe, batch)
        deliveries = with_duplicates(await shoppers.completed_events(stripe.port, paid))
        answers = []
        r = await measure(shoppers.deliverer([s.port for s in shops], deliveries, answers), 64, plan.seconds,
                          watch, limit=len(deliveries))
        log_run(f"webhooks {label}", r)
        acknowledged, lost, double = hand_off_check(
            fulfilments(workdir, shops[0], pg_env if shops[0] is not lite else None), answers)
        return r, lost, double, acknowledged

    for s in (lite, one):
        await warm_up(s, stripe_of[s.name], True)
    results = {("SQLite", 64): await checkouts("SQLite", (lite,), 64),
               ("PostgreSQL", 64): await checkouts("PostgreSQL", (one,), 64),
               ("PostgreSQL", 256): await checkouts("PostgreSQL", (one,), 256)}
    fastest = max(results["SQLite", 64].rate, results["PostgreSQL", 64].rate, 20)
    need = min(math.ceil(64 / (LATENCY_MS / 1000) * plan.seconds), math.ceil(2 * fastest * plan.seconds))
    hooks = {"SQLite": await webhooks("SQLite", (lite,), pools[lite.name], need),
             "PostgreSQL": await webhooks("PostgreSQL", (one,), pools["PostgreSQL"], need)}

    two = servers.shop(workdir, pg_stripe, env=pg_env, name="shop 2 (PostgreSQL)")
    started.append(two)
    stripe_of[two.name] = pg_stripe
    watch.append(two)
    await warm_up(two, pg_stripe, True)
    results["PostgreSQL ×2", 256] = await checkouts("PostgreSQL ×2", (one, two), 256)
    hooks["PostgreSQL ×2"] = await webhooks("PostgreSQL ×2", (one, two), pools["PostgreSQL"], need)

    rows.append(Row(5, "Checkout starts, 64 clients: PostgreSQL | SQLite", fmt(results["PostgreSQL", 64]),
                    fmt(results["SQLite", 64])))
    rows.append(Row(5, "Checkout starts, 256 clients: two instances on one PostgreSQL | one",
                    fmt(results["PostgreSQL ×2", 256]), fmt(results["PostgreSQL", 256])))

    def hook_cell(label):
        r, lost, double, n = hooks[label]
        return fmt(r, " events/s") + f"; {n} orders: {lost} lost, {double} double"
    rows.append(Row(5, "Webhook deliveries, 64 senders: PostgreSQL | SQLite", hook_cell("PostgreSQL"),
                    hook_cell("SQLite"), "0 lost, 0 double",
                    verdict(all(hooks[k][1] == 0 and hooks[k][2] == 0 for k in ("PostgreSQL", "SQLite")))))
    rows.append(Row(5, "Webhook deliveries, 64 senders: two instances on one PostgreSQL (duplicates to either) | one",
                    hook_cell("PostgreSQL ×2"), hook_cell("PostgreSQL"), "0 lost, 0 double",
                    verdict(hooks["PostgreSQL ×2"][1] == 0 and hooks["PostgreSQL ×2"][2] == 0)))
    notes.append("CPU ms per checkout start at 256 clients, shops + stand-in + PostgreSQL: two instances "
                 + " | one: ".join(
                     f"{1000 * sum(v for k, v in r.extra['cpu'].items() if k.startswith('shop')) / r.count:.1f} + "
                     f"{1000 * r.extra['cpu'][pg_stripe.name] / r.count:.1f} + "
                     f"{1000 * r.extra['cpu']['PostgreSQL'] / r.count:.1f}"
                     for r in (results["PostgreSQL ×2", 256], results["PostgreSQL", 256])))
    return rows, notes
