"""The cluster review page: FastAPI + Jinja2 templates + Plotly, served on the loopback only.

Reads the warehouse read-only (a connection per request, python_udfs/apps/warehouse.py; a
cluster's main source and map position come from the `cluster_summary` mart, the same rule
the report and `prompt_scan_clusters` use) and writes one file, the
exclusion seed, atomically. Plain HTML forms: no websocket session state, testable with
TestClient and a real browser, and plotly.js comes from the installed package (offline).
"""

from __future__ import annotations

import enum
import functools
import hmac
import html
import json
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import plotly.graph_objects as go
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from python_udfs import settings
from python_udfs.apps.review import seed
from python_udfs.apps.review.quotas import QuotaPreview, cluster_quotas
from python_udfs.apps.review.warehouse import Overview, Warehouse, WarehouseUnavailable, project_total, scan_tasks

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 16_384
EXAMPLES_PER_PAGE = 10
#: bounds of every number a request may carry: cluster ids (k-means' k is far below this) and
#: example offsets (rows of one cluster)
MAX_CLUSTER_ID = 2**31 - 1
MAX_OFFSET = 10_000_000
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]
EXCLUDED_COLOUR = "#9e9e9e"

Category = enum.StrEnum("Category", {name: name for name in seed.CATEGORIES})


@dataclass
class ReviewConfig:
    """Where the review page reads and writes.

    db: the warehouse file, opened read-only. seeds_dir: the folder holding
    cluster_exclusions.csv (the only file written). root: the project root (views over the
    lake use paths relative to it). total: MiniPile's size
    for the quota preview; None reads it from the warehouse (sum of int_cluster_quotas, else
    the minipile row count), else dbt_project.yml's train + validation + test sizes.
    """

    db: Path
    seeds_dir: Path
    root: Path = settings.ROOT
    total: int | None = None
    #: the address and port served: only requests whose Host header names them are answered
    host: str = "127.0.0.1"
    port: int = 8765

    @property
    def seed_path(self) -> Path:
        return Path(self.seeds_dir) / seed.SEED_NAME


class ExclusionRequest(BaseModel):
    """The exclusion form. Pydantic turns bad input into a readable 422."""

    model_config = ConfigDict(extra="ignore")

    cluster_id: int
    category: Category
    note: str

    @field_validator("note")
    @classmethod
    def _note(cls, value: str) -> str:
        value = value.replace("\r\n", "\n").replace("\r", "\n").strip()
        if not value:
            raise ValueError("write a few words on why this cluster is excluded")
        if len(value) > seed.MAX_NOTE_CHARS:
            raise ValueError(f"is {len(value)} characters long; keep it to {seed.MAX_NOTE_CHARS}")
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
            raise ValueError("contains control characters")
        return value


class ReviewError(Exception):
    """A request the page refuses, with the HTTP status and the text shown to the user."""

    def __init__(self, status: int, message: str, cluster_id: int | None = None, form: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.cluster_id, self.form = status, message, cluster_id, form


def share(fraction: float) -> str:
    """A share as a whole percentage, never rounding a present minority down to 0%."""
    if 0 < fraction < 0.005:
        return "<1%"
    if 0.995 <= fraction < 1:
        return ">99%"
    return f"{100 * fraction:.0f}%"


def readable(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "form"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


@functools.cache
def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def preview(config: ReviewConfig, overview: Overview, excluded: set[int]) -> tuple[QuotaPreview | None, str]:
    """The quota preview for the seed's exclusions, and where its total came from."""
    if config.total is not None:
        total, origin = config.total, "--total"
    elif overview.built_total is not None:
        total, origin = overview.built_total, "the warehouse's last build"
    else:
        total = project_total()
        origin = "dbt_project.yml's train_size + validation_size + test_size"
    return cluster_quotas(overview.sizes, excluded, total), origin


def seed_state(config: ReviewConfig, overview: Overview) -> dict:
    """The seed's exclusions against the warehouse's: what the next build changes."""
    try:
        rows = seed.read_exclusions(config.seed_path)
        seed_problem = None
    except (ValueError, UnicodeDecodeError) as exc:
        rows, seed_problem = [], str(exc)
    excluded = {r.cluster_id: r for r in rows if r.cluster_id is not None and r.problem is None}
    built = overview.built_exclusions
    pending = []
    for cid, row in excluded.items():
        if cid not in built:
            pending.append((cid, "excluded in the seed, still in the warehouse"))
        elif built[cid] != (row.category, row.note):
            pending.append((cid, "category or note changed in the seed"))
    for cid in built:
        if cid not in excluded:
            pending.append((cid, "excluded in the warehouse, included again in the seed"))
    unknown = [r for r in rows if r.cluster_id is not None and r.cluster_id not in overview.by_id]
    problems = [f"row for cluster {r.raw_cluster_id or r.cluster_id}: {r.problem}" for r in rows if r.problem]
    problems += [f"cluster {r.cluster_id} is not a cluster of this warehouse" for r in unknown]
    if seed_problem:
        problems.insert(0, seed_problem)
    return {"rows": rows, "excluded": excluded, "pending": sorted(pending), "problems": problems}


def cluster_map(overview: Overview, excluded: set[int]) -> str:
    """The 2-D map of the centroids (PCA) as an HTML fragment; plotly.js is loaded by the page."""
    biggest = max((c.n_docs for c in overview.clusters), default=1) or 1
    sources = sorted({c.main_source for c in overview.clusters},
                     key=lambda s: -sum(c.n_docs for c in overview.clusters if c.main_source == s))
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(sources)}
    fig = go.Figure()

    def trace(clusters, name, colour, symbol):
        if not clusters:
            return
        fig.add_trace(go.Scatter(
            # plotly renders names and hover text as (a subset of) HTML: corpus strings are escaped
            x=[c.x for c in clusters], y=[c.y for c in clusters], mode="markers+text", name=html.escape(name),
            text=[str(c.cluster_id) for c in clusters], textposition="middle center",
            textfont={"size": 9, "color": "#222"},
            customdata=[[c.cluster_id] for c in clusters],
            hovertext=[
                f"cluster {c.cluster_id}{' (excluded)' if c.cluster_id in excluded else ''}<br>"
                f"{c.n_docs:,} documents<br>{html.escape(c.main_source)} {100 * c.main_share:.0f}%<br>"
                f"avg distance {c.average_distance or 0:.3f}"
                for c in clusters
            ],
            hoverinfo="text",
            marker={"size": [10 + 34 * (c.n_docs / biggest) ** 0.5 for c in clusters], "color": colour,
                    "symbol": symbol, "opacity": 0.75, "line": {"width": 1, "color": "#333"}},
        ))

    for source in sources:
        trace([c for c in overview.clusters if c.main_source == source and c.cluster_id not in excluded],
              source, colours[source], "circle")
    trace([c for c in overview.clusters if c.cluster_id in excluded], "excluded (seed)", EXCLUDED_COLOUR, "x")
    v1, v2 = overview.explained_variance
    fig.update_layout(
        margin={"l": 40, "r": 10, "t": 30, "b": 40}, height=520, template="plotly_white",
        xaxis_title=f"PC 1 ({100 * v1:.0f}% of variance)", yaxis_title=f"PC 2 ({100 * v2:.0f}%)",
        legend={"title": {"text": "main source"}, "itemsizing": "constant"},
        title={"text": "Clusters: PCA of the centroids (size = documents; click one to review it)",
               "font": {"size": 14}},
    )
    return fig.to_html(include_plotlyjs=False, full_html=False, div_id="cluster-map",
                       config={"displaylogo": False, "responsive": True})


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded (HTML form) or JSON body as a dict of strings."""
    too_big = ReviewError(413, f"The form is larger than {MAX_FORM_BYTES:,} bytes, the most accepted.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():  # never more than MAX_FORM_BYTES in memory, whatever is sent
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise too_big
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReviewError(400, "The form is not valid UTF-8.") from exc
    if content_type == "application/json":
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise ReviewError(400, f"The body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ReviewError(400, "The JSON body must be an object.")
        return {str(k): "" if v is None else str(v) for k, v in data.items()}
    if content_type in ("application/x-www-form-urlencoded", ""):
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=20)
        return dict(pairs)
    raise ReviewError(415, f"Send the form as application/x-www-form-urlencoded, not {content_type}.")


#: the names a loopback server answers to, whatever loopback address it bound
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: the header a script may send the form token in instead of the form field (a cross-site page
#: cannot set it without a CORS preflight, which this server never grants)
TOKEN_HEADER = "x-pilehouse-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values the page answers: the bound loopback address, or another loopback
    name, with the port (and without it only on port 80). Anything else (a DNS-rebinding name,
    another machine's address) is refused, so a page from another site cannot read this one
    through a name it controls."""
    names = set(LOOPBACK_NAMES) | {f"[{host}]" if ":" in host and not host.startswith("[") else host}
    values = {f"{name}:{port}" for name in names}
    if port == 80:
        values |= names
    return frozenset(v.lower() for v in values)


def cross_site_refusal(headers, hosts: frozenset[str]) -> str | None:
    """Why a write request looks cross-site, or None. Checked where the browser sends them:
    Sec-Fetch-Site must be same-origin (or none: typed by the user), and Origin must be this
    server's own origin."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return f"the browser says this request comes from another site (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null" or not origin.lower().startswith("http://") or \
                origin.lower().removeprefix("http://").rstrip("/") not in hosts:
            return f"it was sent by the page {origin!r}, not by this review page"
    return None


def form_schema(exclusion: bool) -> dict:
    """The OpenAPI request body of a POST route: the HTML form it reads (``read_form`` parses it
    itself, so FastAPI cannot infer it), with the form token."""
    properties: dict = {"csrf_token": {"type": "string", "description": "the token in the page's forms"}}
    required = ["csrf_token"]
    if exclusion:
        properties |= {
            "cluster_id": {"type": "integer", "minimum": 0, "maximum": MAX_CLUSTER_ID},
            "category": {"type": "string", "enum": [c.value for c in Category]},
            "note": {"type": "string", "maxLength": seed.MAX_NOTE_CHARS},
        }
        required += ["cluster_id", "category", "note"]
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": schema}, "application/json": {"schema": schema}}}}


def create_app(config: ReviewConfig) -> FastAPI:
    # the OpenAPI schema (/openapi.json) describes every route and form, for tools such as
    # schemathesis; the interactive docs pages stay off (they load scripts from a CDN)
    app = FastAPI(title="pilehouse cluster review", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["pct"] = share
    warehouse = Warehouse(config.db, config.root)
    hosts = allowed_hosts(config.host, config.port)
    # one secret per process, put in every form and checked on submit: a page from another site
    # cannot read it (same-origin policy), so it cannot forge a write
    token = secrets.token_urlsafe(32)
    app.state.config, app.state.warehouse, app.state.csrf_token = config, warehouse, token

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        host = request.headers.get("host", "").lower()
        if host not in hosts:
            return PlainTextResponse(
                f"421 Misdirected Request: this review page answers only to {', '.join(sorted(hosts))}, "
                f"not to the Host {host or '(none)'!r} (a request through another name, e.g. DNS rebinding, "
                "is refused).", status_code=421)
        if request.method in UNSAFE_METHODS:
            reason = cross_site_refusal(request.headers, hosts)
            if reason is not None:
                return PlainTextResponse(f"403 Forbidden: not saved, nothing changed: {reason}.", status_code=403)
        return await call_next(request)

    def check_token(request: Request, form: dict[str, str]) -> None:
        sent = form.get("csrf_token") or request.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(sent.encode(), token.encode()):
            raise ReviewError(403, "Not saved, nothing changed: the form's token is missing or stale (this page "
                                   "only accepts forms it served itself since it started; reload the page and "
                                   "submit again).")

    def page(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
        context = {"config": config, "categories": seed.CATEGORIES, "max_note": seed.MAX_NOTE_CHARS,
                   "csrf_token": token, **context}
        return templates.TemplateResponse(request, name, context, status_code=status)

    def error_page(request: Request, status: int, message: str) -> HTMLResponse:
        return page(request, "error.html", {"status": status, "message": message}, status)

    @app.exception_handler(WarehouseUnavailable)
    async def _unavailable(request: Request, exc: WarehouseUnavailable):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return error_page(request, 503, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return error_page(request, exc.status_code, str(exc.detail))

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p not in ('query', 'path', 'body'))}: {e['msg']}"
            for e in exc.errors()
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=422)
        return error_page(request, 422, message)

    @app.exception_handler(ReviewError)
    async def _refused(request: Request, exc: ReviewError):
        if request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        try:  # back to the cluster's page, the form refilled, with the reason on top
            if exc.cluster_id is not None and exc.cluster_id in warehouse.overview().by_id:
                return cluster_page(request, exc.cluster_id, status=exc.status, error=exc.message, form=exc.form)
        except (WarehouseUnavailable, StarletteHTTPException):
            pass
        return error_page(request, exc.status, exc.message)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/static/plotly.min.js")
    def plotly_script() -> Response:
        return Response(plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        overview = warehouse.overview()
        state = seed_state(config, overview)
        quota_preview, total_origin = preview(config, overview, set(state["excluded"]))
        quotas = {q.cluster_id: q for q in quota_preview.quotas} if quota_preview else {}
        return page(request, "index.html", {
            "overview": overview, "seed": state, "preview": quota_preview, "total_origin": total_origin,
            "quotas": quotas, "map_html": cluster_map(overview, set(state["excluded"])),
        })

    def cluster_page(request: Request, cluster_id: int, offset: int = 0, order: str = "closest",
                     status: int = 200, error: str | None = None, form: dict | None = None,
                     done: str | None = None) -> HTMLResponse:
        overview = warehouse.overview()
        summary = overview.by_id.get(cluster_id)
        if summary is None:
            ids = f"0..{max(overview.by_id)}" if overview.by_id else "none"
            raise HTTPException(404, f"Cluster {cluster_id} is not a cluster of this warehouse (ids: {ids}).")
        state = seed_state(config, overview)
        quota_preview, total_origin = preview(config, overview, set(state["excluded"]))
        quota = next((q for q in quota_preview.quotas if q.cluster_id == cluster_id), None) if quota_preview else None
        examples = warehouse.examples(cluster_id, offset, EXAMPLES_PER_PAGE, farthest_first=order == "farthest")
        ids = sorted(overview.by_id)
        position = ids.index(cluster_id)
        return page(request, "cluster.html", {
            "overview": overview, "cluster": summary, "inspection": warehouse.inspection(cluster_id),
            "seed": state, "exclusion": state["excluded"].get(cluster_id),
            "built_exclusion": overview.built_exclusions.get(cluster_id),
            "quota": quota, "built_quota": (overview.built_quotas or {}).get(cluster_id),
            "preview": quota_preview, "total_origin": total_origin,
            "examples": examples, "offset": offset, "order": order, "per_page": EXAMPLES_PER_PAGE,
            "scan_tasks": scan_tasks(warehouse, cluster_id),
            "previous_id": ids[position - 1] if position > 0 else None,
            "next_id": ids[position + 1] if position + 1 < len(ids) else None,
            "error": error, "form": form or {}, "done": done,
        }, status)

    @app.get("/cluster/{cluster_id}", response_class=HTMLResponse)
    def cluster(request: Request, cluster_id: int = PathParam(ge=0, le=MAX_CLUSTER_ID),
                offset: int = Query(0, ge=0, le=MAX_OFFSET),
                order: Literal["closest", "farthest"] = "closest",
                done: Literal["excluded", "updated", "included"] | None = None):
        return cluster_page(request, cluster_id, offset, order, done=done)

    @app.get("/api/cluster/{cluster_id}/examples")
    def examples_api(cluster_id: int = PathParam(ge=0, le=MAX_CLUSTER_ID), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                     limit: int = Query(10, ge=1, le=200),
                     order: Literal["closest", "farthest"] = "closest"):
        if cluster_id not in warehouse.overview().by_id:
            raise HTTPException(404, f"Cluster {cluster_id} is not a cluster of this warehouse.")
        rows = warehouse.examples(cluster_id, offset, limit, farthest_first=order == "farthest")
        return {"cluster_id": cluster_id, "offset": offset, "examples": [r.__dict__ for r in rows]}

    @app.get("/api/quotas")
    def quotas_api():
        overview = warehouse.overview()
        state = seed_state(config, overview)
        quota_preview, origin = preview(config, overview, set(state["excluded"]))
        if quota_preview is None:
            raise HTTPException(503, f"MiniPile's size is {origin}: pass --total.")
        return {
            "total": quota_preview.total, "total_from": origin, "enough": quota_preview.enough,
            "kept_docs": quota_preview.kept_docs, "excluded": sorted(quota_preview.excluded),
            "quotas": [q.__dict__ for q in quota_preview.quotas],
        }

    @app.post("/exclusions", openapi_extra=form_schema(exclusion=True))
    async def exclude(request: Request):
        form = await read_form(request)
        try:
            cluster_id: int | None = int(form.get("cluster_id", ""))
        except ValueError:
            cluster_id = None
        check_token(request, form)
        form.pop("csrf_token", None)
        try:
            wanted = ExclusionRequest.model_validate(form)
        except ValidationError as exc:
            raise ReviewError(422, f"Not saved: {readable(exc)}", cluster_id, form) from exc
        overview = warehouse.overview()
        if wanted.cluster_id not in overview.by_id:
            ids = f"0..{max(overview.by_id)}" if overview.by_id else "none"
            raise ReviewError(422, f"Not saved: cluster {wanted.cluster_id} is not a cluster of this warehouse "
                                   f"(ids: {ids}).")
        try:
            existed = seed.set_exclusion(config.seed_path, wanted.cluster_id, wanted.category.value, wanted.note)
        except (ValueError, UnicodeDecodeError) as exc:  # a hand-edited seed this page cannot read safely
            raise ReviewError(409, f"Not saved: {exc}; fix the file by hand first.", wanted.cluster_id) from exc
        done = "updated" if existed else "excluded"
        return RedirectResponse(f"/cluster/{wanted.cluster_id}?done={done}", status_code=303)

    @app.post("/exclusions/{cluster_id}/delete", openapi_extra=form_schema(exclusion=False))
    async def include_again(request: Request, cluster_id: int = PathParam(ge=0, le=MAX_CLUSTER_ID)):
        check_token(request, await read_form(request))
        try:
            removed = seed.remove_exclusion(config.seed_path, cluster_id)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReviewError(409, f"Not saved: {exc}; fix the file by hand first.", cluster_id) from exc
        if not removed:
            raise ReviewError(409, f"Cluster {cluster_id} is not excluded in {config.seed_path}: nothing to undo.",
                              cluster_id)
        return RedirectResponse(f"/cluster/{cluster_id}?done=included", status_code=303)

    return app
