"""Serve dbt's docs site (`dbt docs generate`'s target/ folder) on the loopback:
`python -m python_udfs.apps.docs_site --dir target --port 8080`.

Why not `dbt docs serve`: it answers any Host header, so a web page that rebinds its own name to
127.0.0.1 could read the docs (every model's SQL and columns). This server binds the loopback
only, answers only to 127.0.0.1 / localhost / [::1] with its port (else 421), serves GET and HEAD
of the files under the folder and nothing else (no listing, no path outside it, no writes).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

from python_udfs.apps.review.__main__ import is_loopback
from python_udfs.apps.review.app import allowed_hosts


class DocsHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of one folder, for the allowed Host values only."""

    hosts: frozenset[str] = frozenset()

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        if host in self.hosts:
            return True
        body = (f"421 Misdirected Request: this docs site answers only to {', '.join(sorted(self.hosts))}, "
                f"not to the Host {host or '(none)'!r}.\n").encode()
        self.send_response(421)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def do_GET(self):  # noqa: N802 (http.server's names)
        if self._host_ok():
            super().do_GET()

    def do_HEAD(self):  # noqa: N802
        if self._host_ok():
            super().do_HEAD()

    def list_directory(self, path):  # no folder listings
        self.send_error(404, "No listing")
        return None

    def log_message(self, format, *args):  # quiet, like the review page
        pass


def make_server(folder: Path, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A server over ``folder`` (port 0: any free port; the allowed Host values follow the bound one)."""
    handler = type("BoundDocsHandler", (DocsHandler,), {})
    server_class = http.server.ThreadingHTTPServer
    if ":" in host:
        import socket

        server_class = type("V6Server", (http.server.ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), functools.partial(handler, directory=str(folder)))
    handler.hosts = allowed_hosts(host, server.server_address[1])
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m python_udfs.apps.docs_site", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("target"), help="dbt's target folder (default target)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"refusing to serve on {args.host}: use a loopback address such as 127.0.0.1")
    if not (args.dir / "index.html").is_file():
        print(f"error: {args.dir}/index.html does not exist: run `dbt docs generate` first (make docs does)",
              file=sys.stderr)
        return 1
    server = make_server(args.dir, args.host, args.port)
    print(f"dbt docs: http://{args.host}:{args.port}/  (serving {args.dir}, read-only)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
