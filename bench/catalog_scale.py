"""Figure 7: a generated 10,000-product catalog: validation, reload after an edit, and what GET / costs then."""

import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT / "public"

WORDS = ("lantern", "harbour", "orchard", "winter", "atlas", "meridian", "quiet", "copper", "river", "garden",
         "northern", "salt", "paper", "ember", "violet", "stone", "tide", "falcon", "hollow", "summer")


def generate(path, count=10_000, source=ROOT / "catalog.json"):
    """Write a valid catalog of `count` products (the shop's own settings, images reused) to path."""
    base = json.loads(Path(source).read_text())
    images = sorted({p["image"] for p in base["products"]})
    products = []
    for i in range(count):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
        products.append({
            "id": f"book-{i:05d}",
            "name": f"The {a.title()} {b.title()} No. {i}",
            "description": f"A generated title for load tests: {a}, {b} and {WORDS[(i * 3) % len(WORDS)]}. Paperback.",
            "price": 499 + (i * 37) % 3000,
            "image": images[i % len(images)],
            "tax_code": "txcd_35010000",
        })
    base["products"] = products
    Path(path).write_text(json.dumps(base, indent=2))
    return path


def timings(path, repeats=3):
    """Median seconds to validate the file from scratch, and for a CatalogStore to pick up an edit."""
    from catalog import CatalogStore, load_catalog
    validate = []
    for _ in range(repeats):
        start = time.perf_counter()
        catalog = load_catalog(path, PUBLIC)
        validate.append(time.perf_counter() - start)
    store = CatalogStore(path, PUBLIC, lambda message: None)
    reload, unchanged = [], []
    for i in range(repeats):
        data = json.loads(Path(path).read_text())
        data["products"][i]["price"] += 1  # the merchant changes one price
        Path(path).write_text(json.dumps(data, indent=2))
        start = time.perf_counter()
        fresh = store.current()
        reload.append(time.perf_counter() - start)
        assert fresh.products[i].price == data["products"][i]["price"], "the edit was not picked up"
    for _ in range(1000):
        start = time.perf_counter()
        store.current()
        unchanged.append(time.perf_counter() - start)
    return {"products": len(catalog.products), "validate_s": statistics.median(validate),
            "reload_s": statistics.median(reload), "unchanged_us": statistics.median(unchanged) * 1e6,
            "bytes": os.path.getsize(path)}
