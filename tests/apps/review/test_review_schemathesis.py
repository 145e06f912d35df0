"""schemathesis against the review page's own OpenAPI schema (/openapi.json), over real HTTP.

The page runs as ``python -m python_udfs.apps.review`` on a loopback port. schemathesis
generates requests for every route from the schema: path and query parameters at and past
their bounds, forms with every field missing, wrong or huge, with and without the page's
form token. No request gets a 5xx, and whatever was written, the exclusion seed is still a
file the page (and dbt) can read.
"""

from __future__ import annotations

import itertools
import re
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from test_review_browser import serving

from python_udfs.apps.review import seed
from python_udfs.apps.review.app import TOKEN_HEADER


@pytest.fixture
def page(tiny_warehouse, seeds_dir):
    with serving(tiny_warehouse, seeds_dir) as url:
        with urllib.request.urlopen(f"{url}/cluster/0", timeout=30) as response:
            html = response.read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        yield url, token, seeds_dir


def test_the_schema_describes_every_route_and_form(page):
    import json

    url, _, _ = page
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as response:
        spec = json.load(response)
    paths = spec["paths"]
    assert {"/", "/cluster/{cluster_id}", "/api/cluster/{cluster_id}/examples", "/api/quotas",
            "/exclusions", "/exclusions/{cluster_id}/delete"} <= set(paths)
    form = paths["/exclusions"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert set(form["required"]) == {"csrf_token", "cluster_id", "category", "note"}
    limit = next(p for p in paths["/api/cluster/{cluster_id}/examples"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 200


def test_no_request_gets_a_server_error(page):
    """Every operation of the schema, up to 40 generated requests each, valid (positive) and
    invalid (negative): schemathesis' strategies run by hypothesis here (its pytest plugin does
    not load under this pytest)."""
    url, token, seeds_dir = page
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 6
    seen: dict[str, set[int]] = {}
    counts: dict[int, int] = {}

    for operation, mode in itertools.product(operations, list(schemathesis.GenerationMode)):
        raw = operation.definition.raw
        if mode is schemathesis.GenerationMode.NEGATIVE and not (raw.get("parameters") or raw.get("requestBody")):
            continue  # nothing to make invalid
        # positive: valid by the schema; negative: values past every bound and of the wrong types
        @given(case=operation.as_strategy(generation_mode=mode), with_token=st.booleans())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def run(case, with_token):
            # with the page's token a request reaches validation and the seed write; without it
            # the write must be refused, never crash
            response = case.call(base_url=url, headers={TOKEN_HEADER: token} if with_token else {})
            case.validate_response(response, checks=[not_a_server_error])
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:500])
            seen.setdefault(f"{case.method} {case.operation.path} {case.meta.generation.mode.value}",
                            set()).add(response.status_code)
            counts[response.status_code] = counts.get(response.status_code, 0) + 1

        run()
    # whatever was written is still a seed the page reads back
    rows = seed.read_exclusions(seeds_dir / "cluster_exclusions.csv")
    assert all(row.category in seed.CATEGORIES for row in rows)
    # the generated requests reached past the guards: some were answered, some refused
    print(f"schemathesis: {sum(counts.values())} requests over {len(operations)} operations, by status: "
          f"{dict(sorted(counts.items()))}")
    statuses = set().union(*seen.values())
    assert {200, 403, 404, 422} <= statuses, seen
    # out-of-bounds query and path values are refused by validation, not served
    assert 422 in seen["GET /api/cluster/{cluster_id}/examples negative"], seen
