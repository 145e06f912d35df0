"""`make docs`' server: dbt's docs folder on the loopback, for the loopback Host names only."""

from __future__ import annotations

import http.client
import threading

import pytest

from python_udfs.apps.docs_site.__main__ import main, make_server


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "target"
    (folder / "sub").mkdir(parents=True)
    (folder / "index.html").write_text("<html>dbt docs</html>")
    (folder / "catalog.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("outside")
    server = make_server(folder, "127.0.0.1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()
    server.server_close()


def request(port: int, path: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    con.putrequest(method, path, skip_host=True)
    con.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
    con.endheaders()
    response = con.getresponse()
    body = response.read()
    con.close()
    return response.status, body


def test_serves_the_docs_to_the_loopback_names(site):
    assert request(site, "/") == (200, b"<html>dbt docs</html>")
    assert request(site, "/catalog.json", host=f"localhost:{site}")[0] == 200


@pytest.mark.parametrize("host", ["attacker.example:{port}", "attacker.example", "127.0.0.1:1", "", "10.0.0.1:{port}"])
def test_other_hosts_get_421(site, host):
    status, body = request(site, "/catalog.json", host=host.format(port=site))
    assert status == 421 and b"answers only to" in body and b"{}" not in body


def test_no_writes_listings_or_paths_outside(site):
    assert request(site, "/", method="POST")[0] == 501
    assert request(site, "/index.html", method="PUT")[0] == 501
    assert request(site, "/sub/")[0] == 404
    status, body = request(site, "/../secret.txt")
    assert status == 404 and b"outside" not in body
    status, body = request(site, "/%2e%2e/secret.txt")
    assert status == 404 and b"outside" not in body


def test_refuses_other_addresses_and_a_missing_site(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--host", "0.0.0.0", "--dir", str(tmp_path)])
    assert main(["--dir", str(tmp_path / "none")]) == 1
    assert "run `dbt docs generate` first" in capsys.readouterr().err
