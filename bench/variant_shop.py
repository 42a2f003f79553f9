"""`python shop.py` with one of its per-request costs taken out, to show where GET / time goes (figure 1b).

    python bench/variant_shop.py --port 8001 [--no-access-log]

Diagnostics only: the shop itself always logs every request.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-access-log", action="store_true", help="serve without cli.AccessLog")
    args, rest = p.parse_known_args(argv)
    import cli
    if args.no_access_log:
        cli.AccessLog = lambda app: app
    return cli.main(["--port", str(args.port), *rest])


if __name__ == "__main__":
    sys.exit(main())
