"""The review page refuses what another web site could make a browser send: writes without the
page's own form token, writes a browser marks as cross-site or from another origin (CSRF), and
any request whose Host is not the loopback address served (DNS rebinding). A refused request
changes nothing and says why."""

from __future__ import annotations

import re

import pytest
from review_clients import review_client
from warehouses import ROOT

from python_udfs.apps.review.app import ReviewConfig, allowed_hosts, create_app

FORM = {"cluster_id": "1", "category": "other", "note": "boilerplate"}


@pytest.fixture
def app(tiny_warehouse, seeds_dir):
    return create_app(ReviewConfig(db=tiny_warehouse, seeds_dir=seeds_dir, root=ROOT))


def seed_bytes(seeds_dir) -> bytes:
    return (seeds_dir / "cluster_exclusions.csv").read_bytes()


@pytest.mark.parametrize("host", ["attacker.example:8765", "attacker.example", "127.0.0.1:9999", "127.0.0.1",
                                  "192.168.1.10:8765", "localhost.attacker.example:8765", ""])
def test_a_foreign_host_header_is_refused_before_anything_runs(app, seeds_dir, host):
    before = seed_bytes(seeds_dir)
    with review_client(app) as client:
        for response in (client.get("/", headers={"host": host}),
                         client.get("/api/quotas", headers={"host": host}),
                         client.post("/exclusions", data=FORM, headers={"host": host}, follow_redirects=False)):
            assert response.status_code == 421, (host, response.status_code)
            assert "answers only to" in response.text and "<html" not in response.text
    assert seed_bytes(seeds_dir) == before


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765"])
def test_the_loopback_names_with_the_port_are_served(app, host):
    with review_client(app) as client:
        assert client.get("/healthz", headers={"host": host}).status_code == 200


def test_allowed_hosts_follow_the_bound_address_and_port():
    assert allowed_hosts("127.0.0.1", 9000) == {"127.0.0.1:9000", "localhost:9000", "[::1]:9000"}
    assert allowed_hosts("::1", 8765) == {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}
    assert "127.0.0.1" in allowed_hosts("127.0.0.1", 80)


@pytest.mark.parametrize("headers, reason", [
    ({"origin": "http://evil.example", "sec-fetch-site": "cross-site"}, "another site"),
    ({"sec-fetch-site": "cross-site"}, "another site"),
    ({"sec-fetch-site": "same-site"}, "another site"),
    ({"origin": "http://evil.example"}, "'http://evil.example'"),
    ({"origin": "null"}, "'null'"),
    ({"origin": "http://127.0.0.1:9999"}, "not by this review page"),
    ({"origin": "https://127.0.0.1:8765"}, "not by this review page"),
])
def test_cross_site_writes_are_refused_even_with_the_token(app, seeds_dir, headers, reason):
    before = seed_bytes(seeds_dir)
    with review_client(app) as client:  # the token is right: the browser's headers alone refuse it
        for path in ("/exclusions", "/exclusions/1/delete"):
            response = client.post(path, data=FORM, headers=headers, follow_redirects=False)
            assert response.status_code == 403, (path, headers)
            assert "nothing changed" in response.text and reason in response.text
    assert seed_bytes(seeds_dir) == before


def test_a_write_without_the_pages_token_is_refused(app, seeds_dir):
    before = seed_bytes(seeds_dir)
    with review_client(app, token=False) as client:
        for extra in ({}, {"csrf_token": "guessed"}, {"csrf_token": ""}):
            response = client.post("/exclusions", data={**FORM, **extra}, follow_redirects=False)
            assert response.status_code == 403
            assert "token is missing or stale" in response.text
        response = client.post("/exclusions/1/delete", follow_redirects=False)
        assert response.status_code == 403
        # another process's token (an old tab, another server) is stale too
        other = create_app(ReviewConfig(db=app.state.config.db, seeds_dir=seeds_dir, root=ROOT))
        assert other.state.csrf_token != app.state.csrf_token
        response = client.post("/exclusions", data={**FORM, "csrf_token": other.state.csrf_token},
                               follow_redirects=False)
        assert response.status_code == 403
    assert seed_bytes(seeds_dir) == before


def test_the_pages_own_form_round_trips_its_token(app, seeds_dir):
    """As a browser on the page: read the form's hidden token, post it with same-origin headers."""
    with review_client(app, token=False) as client:
        page = client.get("/cluster/1").text
        tokens = set(re.findall(r'name="csrf_token" value="([^"]+)"', page))
        assert tokens == {app.state.csrf_token}
        same_origin = {"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"}
        response = client.post("/exclusions", data={**FORM, "csrf_token": tokens.pop()}, headers=same_origin,
                               follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/cluster/1?done=excluded"
    assert seed_bytes(seeds_dir).decode().splitlines()[1:] == ["1,other,boilerplate"]
    # the token never lands in the seed, and the include-again form carries it too
    with review_client(app, token=False) as client:
        page = client.get("/cluster/1").text
        assert 'id="include-button"' in page
        token = re.findall(r'name="csrf_token" value="([^"]+)"', page)[-1]
        response = client.post("/exclusions/1/delete", data={"csrf_token": token}, follow_redirects=False)
        assert response.status_code == 303
    assert seed_bytes(seeds_dir).decode().splitlines()[1:] == []


def test_reads_need_no_token_and_get_never_writes(app, seeds_dir):
    before = seed_bytes(seeds_dir)
    with review_client(app, token=False) as client:
        assert client.get("/").status_code == 200
        assert client.get("/exclusions").status_code == 405
        assert client.get("/api/quotas", headers={"origin": "http://evil.example"}).status_code == 200
        assert "access-control-allow-origin" not in client.get("/api/quotas").headers
    assert seed_bytes(seeds_dir) == before


def test_a_body_is_bounded_while_it_streams_in(app, seeds_dir):
    """A chunked body (no Content-Length) is cut off at MAX_FORM_BYTES, not read whole into memory;
    a lying or absurd Content-Length is refused before any byte is read."""
    import asyncio

    from starlette.requests import Request

    from python_udfs.apps.review.app import MAX_FORM_BYTES, ReviewError, read_form

    received = []

    async def receive():  # the server side of an endless chunked upload: 640 MB if read whole
        received.append(1)
        return {"type": "http.request", "body": b"note=" + b"x" * 65_531, "more_body": len(received) < 10_000}

    scope = {"type": "http", "method": "POST", "path": "/exclusions", "headers": [
        (b"content-type", b"application/x-www-form-urlencoded")]}
    with pytest.raises(ReviewError) as refused:
        asyncio.run(read_form(Request(scope, receive)))
    assert refused.value.status == 413 and len(received) == 1  # stopped at the first chunk past the limit

    before = seed_bytes(seeds_dir)
    with review_client(app) as client:
        response = client.post("/exclusions", content=b"x" * (MAX_FORM_BYTES + 1),
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413 and f"{MAX_FORM_BYTES:,}" in response.text
        for length in ("99999999999", "-1", "12abc"):
            response = client.post("/exclusions", content=b"cluster_id=1",
                                   headers={"content-type": "application/x-www-form-urlencoded",
                                            "content-length": length})
            assert response.status_code in (400, 413), (length, response.status_code)
    assert seed_bytes(seeds_dir) == before


@pytest.mark.parametrize("path", ["/cluster/99999999999999999999", "/cluster/-1", "/cluster/0?offset=10000001",
                                  "/api/cluster/0/examples?limit=201", "/api/cluster/0/examples?offset=-5",
                                  "/api/cluster/0/examples?order=sideways"])
def test_out_of_bounds_parameters_are_refused_by_validation(app, path):
    with review_client(app) as client:
        response = client.get(path)
    assert response.status_code == 422, (path, response.status_code)
