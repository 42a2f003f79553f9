"""Figures 1, 3 and 4: page throughput against the bare baseline, one worker against two, and page weight."""

import base64
import json
import re
import statistics
from pathlib import Path

from servers import fetch, start_bare

SKIP_HEADERS = ("date", "server")  # waitress adds these to every response, the shop's and the baseline's alike
SID = "benchbenchbenchbenchbenchbench01"  # a well-formed `sid` cookie value: the warm (returning) browser


def variants(catalog_products):
    """The requests measured: (label, path, headers)."""
    a, b = catalog_products[0], catalog_products[1]
    return {
        "GET / cold": ("/", {}),
        "GET / warm": ("/", {"Cookie": f"sid={SID}"}),
        "GET /cart warm": ("/cart", {"Cookie": f"sid={SID}; cart={a}:1.{b}:2"}),
    }


def capture(url, variants_):
    """Record the shop's exact responses, to be replayed byte for byte by the bare app."""
    recorded = {}
    for label, (path, headers) in variants_.items():
        status, hdrs, body = fetch(url + path, headers)
        if status != 200:
            raise RuntimeError(f"{label}: the shop answered {status}")
        key = f"GET {path}" + (" +cookie" if "Cookie" in headers else "")
        recorded[key] = {"status": "200 OK", "headers": [(k, v) for k, v in hdrs if k.lower() not in SKIP_HEADERS],
                         "body_b64": base64.b64encode(body).decode()}
    return recorded


def versus_bare(load, shop, tmp, variants_, rounds, seconds, connections, name="bare", extras=None):
    """Per variant: interleaved rounds shop, bare, shop, bare ...; the median of the per-round ratios.

    extras: {label: {name: server}}: more servers (the shop with a cost taken out) measured in the same rounds
    for that variant, each against the same bare rounds; their results come back as out[f"{label} :: {name}"]."""
    responses = Path(tmp) / f"{name}-responses.json"
    responses.write_text(json.dumps(capture(shop.url, variants_)))
    out = {}
    with start_bare(tmp, responses, name) as bare:
        bare.wait_ready()
        for label, (path, headers) in variants_.items():
            others = (extras or {}).get(label, {})
            mine, theirs = fetch(shop.url + path, headers)[2], fetch(bare.url + path, headers)[2]
            # A cold page carries a fresh sid and CSRF token each time: same length, different bytes.
            if (len(mine) != len(theirs)) if "cold" in label else (mine != theirs):
                raise RuntimeError(f"{label}: the baseline does not serve the shop's bytes")
            for server in (shop, bare, *others.values()):  # warm-up: caches, connection set-up
                load.run(server.url + path, 1, connections, headers=headers)
            pairs, more = [], {k: [] for k in others}
            for _ in range(rounds):
                a = load.run(shop.url + path, seconds, connections, headers=headers, pids=shop.workers())
                b = load.run(bare.url + path, seconds, connections, headers=headers, pids=bare.workers())
                pairs.append((a, b))
                for k, server in others.items():
                    more[k].append((load.run(server.url + path, seconds, connections, headers=headers,
                                             pids=server.workers()), b))
            out[label] = summarize(pairs)
            for k, k_pairs in more.items():
                out[f"{label} :: {k}"] = summarize(k_pairs)
    return out


def summarize(pairs):
    """The median ratio a/b over rounds, with the median throughputs and any errors.

    cpu_ratio compares CPU per request instead (b's ÷ a's): it hardly moves when other processes take CPU time,
    so it tells whether a low throughput ratio is the code or a busy machine."""
    ratios = [a.rps / b.rps for a, b in pairs if b.rps]
    cpu = [b.server_us_per_request / a.server_us_per_request for a, b in pairs if a.server_us_per_request]
    return {
        "cpu_ratio": statistics.median(cpu) if cpu else 0.0,
        "a_us": statistics.median(a.server_us_per_request for a, _ in pairs),
        "b_us": statistics.median(b.server_us_per_request for _, b in pairs),
        "other_cores": statistics.median(x.other_cores for pair in pairs for x in pair),
        "ratio": statistics.median(ratios) if ratios else 0.0,
        "ratios": ratios,
        "a_rps": statistics.median(a.rps for a, _ in pairs),
        "b_rps": statistics.median(b.rps for _, b in pairs),
        "a_p99": statistics.median(a.p99_ms for a, _ in pairs),
        "errors": sum(a.errors + b.errors for a, b in pairs),
        "client_cores": statistics.median(a.client_cores for a, _ in pairs),
    }


def workers_scaling(load, one, two, path, headers, rounds, seconds, connections):
    """2 workers ÷ 1 worker on the same request, interleaved rounds."""
    for server in (one, two):
        load.run(server.url + path, 1, connections, headers=headers)
    pairs = []
    for _ in range(rounds):
        a = load.run(two.url + path, seconds, connections, headers=headers, pids=two.workers())
        b = load.run(one.url + path, seconds, connections, headers=headers, pids=one.workers())
        pairs.append((a, b))
    return summarize(pairs)


_LINKS = re.compile(r"""<link\b[^>]*\brel=["']?stylesheet["']?[^>]*\bhref=["']([^"']+)["']""", re.I)
_SCRIPTS = re.compile(r"""<script\b[^>]*?(?:\bsrc=["']([^"']+)["'])?[^>]*>""", re.I)


def page_weight(url, path, headers):
    """Bytes of the HTML and of every stylesheet and script it loads (images aside), and the script count."""
    _, _, html = fetch(url + path, headers)
    text = html.decode()
    css = sum(len(fetch(url + href)[2]) for href in _LINKS.findall(text))
    scripts = _SCRIPTS.findall(text)
    js = sum(len(fetch(url + src)[2]) for src in scripts if src)
    inline_js = sum(len(m) for m in re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S | re.I))
    return {"html": len(html), "css": css, "js": js + inline_js, "scripts": len(scripts),
            "total": len(html) + css + js + inline_js}


def static_revalidation(url, path="/static/style.css"):
    """The caching headers of a static file and whether a repeat request with its validators gets 304."""
    status, headers, body = fetch(url + path)
    h = {k.lower(): v for k, v in headers}
    repeat = {}
    if "etag" in h:
        repeat["If-None-Match"] = h["etag"]
    if "last-modified" in h:
        repeat["If-Modified-Since"] = h["last-modified"]
    status2, _, body2 = fetch(url + path, repeat)
    return {"etag": "etag" in h, "last_modified": "last-modified" in h, "cache_control": h.get("cache-control"),
            "repeat_status": status2, "repeat_bytes": len(body2), "first_bytes": len(body)}
