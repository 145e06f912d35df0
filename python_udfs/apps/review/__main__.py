"""Serve the cluster review page: `python -m python_udfs.apps.review [--db ...] [--port 8765]`.

Loopback only: the page has no authentication and writes seeds/cluster_exclusions.csv, so
any other host is refused.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from python_udfs import settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m python_udfs.apps.review", description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=settings.db_path(),
                        help="the warehouse, opened read-only (default %(default)s, from $PILEHOUSE_DB when set)")
    parser.add_argument("--seeds-dir", type=Path, default=Path("seeds"),
                        help="folder of cluster_exclusions.csv, the only file written (default seeds)")
    parser.add_argument("--root", type=Path, default=settings.ROOT,
                        help="project root: the warehouse's views read the lake relative to it (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--total", type=int, default=None,
                        help="MiniPile documents for the quota preview (default: the warehouse's last build, "
                             "else dbt_project.yml's split sizes)")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"refusing to serve on {args.host}: the review page has no authentication and writes "
                     f"{args.seeds_dir}/cluster_exclusions.csv; use --host 127.0.0.1 (loopback only)")
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port")
    if args.total is not None and args.total < 0:
        parser.error("--total must be >= 0")
    if not args.seeds_dir.is_dir():
        parser.error(f"--seeds-dir {args.seeds_dir} is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.db.exists():
        print(f"error: the warehouse {args.db} does not exist: run `make minipile` first "
              "(or pass --db / set PILEHOUSE_DB)", file=sys.stderr)
        return 1
    import uvicorn

    from python_udfs.apps.review.app import ReviewConfig, create_app

    app = create_app(ReviewConfig(db=args.db, seeds_dir=args.seeds_dir, root=args.root, total=args.total,
                                  host=args.host, port=args.port))
    print(f"cluster review: http://{args.host}:{args.port}/  (warehouse {args.db}, read-only; "
          f"writes {args.seeds_dir / 'cluster_exclusions.csv'})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
