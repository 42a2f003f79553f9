"""`python shop.py` with one of its per-request costs taken out, to show where GET / time goes (figure 1b).

    python bench/variant_shop.py --port 8001 [--no-access-log] [--stat-once-a-second]

Diagnostics only: the shop itself always logs every request and checks the catalog file on every request.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-access-log", action="store_true", help="serve without cli.AccessLog")
    p.add_argument("--stat-once-a-second", action="store_true", help="stat catalog.json at most once a second")
    args, rest = p.parse_known_args(argv)
    import cli
    if args.no_access_log:
        cli.AccessLog = lambda app: app
    if args.stat_once_a_second:
        import catalog
        current = catalog.CatalogStore.current
        checked = {}

        def throttled(self):
            now = time.monotonic()
            if now - checked.get(id(self), -1.0) >= 1.0:
                checked[id(self)] = now
                return current(self)
            return self._catalog
        catalog.CatalogStore.current = throttled
    return cli.main(["--port", str(args.port), *rest])


if __name__ == "__main__":
    sys.exit(main())
