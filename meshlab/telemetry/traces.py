"""One request's spans, from the Zipkin collector, as a tree for a waterfall.

Each sidecar reports one span per hop in Zipkin's v2 JSON (zipkin.io/zipkin-api, ``Span``): ``traceId``, ``id``,
``parentId`` (absent on the root), ``name``, ``kind`` (``CLIENT`` at the caller's sidecar, ``SERVER`` at the
callee's — Envoy's way: a hop through two sidecars is two spans, the server span a child of the client span),
``timestamp`` and ``duration`` in microseconds, ``localEndpoint.serviceName`` and string ``tags``; Istio tags
every span with ``guid:x-request-id``, which is how we find a request's trace
(``GET /api/v2/traces?annotationQuery=guid:x-request-id=<id>``). :func:`build_trace` is pure: spans whose
parent is missing (not reported yet, or dropped) become extra roots rather than vanishing.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshlab.lab import Lab

COLLECTOR_SERVICE = "zipkin"
COLLECTOR_NAMESPACE = "istio-system"
COLLECTOR_PORT = 9411
REQUEST_ID_TAG = "guid:x-request-id"


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    start_us: int
    duration_us: int
    tags: tuple[tuple[str, str], ...] = ()
    children: tuple[Span, ...] = ()

    def __repr__(self) -> str:
        return (f"Span({self.service} {self.kind} {self.name!r}, id={self.span_id}, parent={self.parent_id}, "
                f"start={self.start_us}us, duration={self.duration_us}us, children={len(self.children)})")


@dataclass(frozen=True)
class Trace:
    request_id: str
    trace_id: str
    roots: tuple[Span, ...]

    def spans(self) -> list[Span]:
        """Every span, depth first (a parent before its children, siblings by start time)."""
        out: list[Span] = []

        def walk(span: Span) -> None:
            out.append(span)
            for child in span.children:
                walk(child)
        for root in self.roots:
            walk(root)
        return out

    def waterfall(self) -> list[tuple[int, float, float, str]]:
        """(depth, start offset ms, duration ms, label) per span, for a waterfall plot."""
        origin = min((s.start_us for s in self.spans()), default=0)
        rows: list[tuple[int, float, float, str]] = []

        def walk(span: Span, depth: int) -> None:
            rows.append((depth, (span.start_us - origin) / 1000, span.duration_us / 1000,
                         f"{span.service} {span.kind.lower()} {span.name}"))
            for child in span.children:
                walk(child, depth + 1)
        for root in self.roots:
            walk(root, 0)
        return rows

    def __repr__(self) -> str:
        lines = [f"Trace(request_id={self.request_id!r}, trace_id={self.trace_id!r}, spans={len(self.spans())})"]
        lines += [f"  {'  ' * d}{label} +{start:.1f}ms {dur:.1f}ms" for d, start, dur, label in self.waterfall()]
        return "\n".join(lines)


def _span(raw: Mapping[str, Any], children: tuple[Span, ...] = ()) -> Span:
    return Span(trace_id=str(raw.get("traceId", "")), span_id=str(raw.get("id", "")),
                parent_id=raw.get("parentId") or None, name=str(raw.get("name", "")),
                kind=str(raw.get("kind", "")), service=str((raw.get("localEndpoint") or {}).get("serviceName", "")),
                start_us=int(raw.get("timestamp", 0)), duration_us=int(raw.get("duration", 0)),
                tags=tuple(sorted((str(k), str(v)) for k, v in (raw.get("tags") or {}).items())),
                children=children)


def build_trace(request_id: str, raw_spans: Iterable[Mapping[str, Any]]) -> Trace:
    """Zipkin v2 spans (JSON objects) → a tree linked by ``parentId``."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for raw in raw_spans:
        # A span reported twice (a shared span id, Zipkin's B3 single-host convention) keeps its first copy.
        by_id.setdefault(str(raw.get("id", "")), raw)
    kids: dict[str, list[str]] = {}
    roots = []
    for span_id, raw in by_id.items():
        parent = raw.get("parentId")
        if parent and parent in by_id and parent != span_id:
            kids.setdefault(str(parent), []).append(span_id)
        else:
            roots.append(span_id)

    def start(span_id: str) -> tuple[int, str]:
        return int(by_id[span_id].get("timestamp", 0)), span_id

    def make(span_id: str) -> Span:
        return _span(by_id[span_id], tuple(make(c) for c in sorted(kids.get(span_id, []), key=start)))
    trees = tuple(make(r) for r in sorted(roots, key=start))
    trace_id = trees[0].trace_id if trees else ""
    return Trace(request_id, trace_id, trees)


def collector_get(lab: Lab, path: str) -> Any:
    """GET a collector API path (JSON): through the lab's kube-proxy when embedded, the API server's service
    proxy otherwise."""
    if lab.embedded is not None:
        url = lab.url(COLLECTOR_SERVICE, COLLECTOR_PORT, namespace=COLLECTOR_NAMESPACE, path=path)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as resp:
            return json.loads(resp.read())
    path_only, _, query = path.partition("?")
    text = lab.clients.core.connect_get_namespaced_service_proxy_with_path(
        f"{COLLECTOR_SERVICE}:{COLLECTOR_PORT}", COLLECTOR_NAMESPACE, path_only.lstrip("/") +
        (f"?{query}" if query else ""), _preload_content=True)
    return json.loads(text) if isinstance(text, str) else text


def fetch_spans(lab: Lab, request_id: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"annotationQuery": f"{REQUEST_ID_TAG}={request_id}"})
    traces = collector_get(lab, f"/api/v2/traces?{query}")
    return [span for trace in traces or [] for span in trace]
