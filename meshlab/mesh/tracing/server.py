"""The collector's HTTP API, Zipkin v2's subset the mesh uses (zipkin.io/zipkin-api, ``zipkin2-api.yaml``).

``POST /api/v2/spans`` (a JSON array of spans; 202 Accepted, 400 with the reason for a bad one),
``GET /api/v2/trace/{traceId}`` (the spans, 404 when unknown), ``GET /api/v2/traces`` (``serviceName``,
``spanName``, ``annotationQuery``, ``limit``; plus meshlab's ``requestId=<x-request-id>``, shorthand for
``annotationQuery=guid:x-request-id=<id>``), ``GET /api/v2/services``, and ``/health`` for probes.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from meshlab.mesh.tracing.store import SpanError, SpanStore

log = logging.getLogger(__name__)
STORE: web.AppKey[SpanStore] = web.AppKey("store", SpanStore)
REQUEST_ID_TAG = "guid:x-request-id"
MAX_BODY = 16 * 1024 * 1024


async def _post_spans(request: web.Request) -> web.Response:
    try:
        spans = json.loads(await request.read())
        if not isinstance(spans, list):
            raise SpanError("the body must be a JSON array of spans")
        request.app[STORE].accept(spans)
    except (ValueError, SpanError) as err:  # JSONDecodeError is a ValueError
        return web.Response(status=400, text=f"{err}\n")
    return web.Response(status=202)


async def _get_trace(request: web.Request) -> web.Response:
    try:
        spans = request.app[STORE].trace(request.match_info["trace_id"])
    except SpanError as err:
        return web.Response(status=400, text=f"{err}\n")
    if spans is None:
        return web.Response(status=404, text=f"trace {request.match_info['trace_id']} not found\n")
    return web.json_response(spans)


async def _get_traces(request: web.Request) -> web.Response:
    query = request.query
    annotation = query.get("annotationQuery") or ""
    if query.get("requestId"):
        term = f"{REQUEST_ID_TAG}={query['requestId']}"
        annotation = f"{annotation} and {term}" if annotation else term
    try:
        limit = int(query.get("limit") or 10)
    except ValueError:
        return web.Response(status=400, text="limit must be an integer\n")
    traces = request.app[STORE].traces(service=query.get("serviceName"), span_name=query.get("spanName"),
                                       annotation_query=annotation, limit=max(1, limit))
    return web.json_response(traces)


async def _services(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].services())


async def _health(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({"status": "UP", "spans": len(store), "evicted": store.evicted})


def make_app(store: SpanStore | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STORE] = store if store is not None else SpanStore()
    app.router.add_post("/api/v2/spans", _post_spans)
    app.router.add_get("/api/v2/trace/{trace_id}", _get_trace)
    app.router.add_get("/api/v2/traces", _get_traces)
    app.router.add_get("/api/v2/services", _services)
    app.router.add_get("/health", _health)
    return app


def run(host: str, port: int, max_spans: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(make_app(SpanStore(max_spans)), host=host, port=port, access_log=None, print=None)
    return 0
