"""Where the collector keeps spans: in memory, grouped by trace, the oldest traces forgotten first.

Zipkin's in-memory storage (openzipkin/zipkin ``InMemoryStorage``) keeps spans per trace id and evicts whole
traces once ``maxSpanCount`` is exceeded; this store does the same, bounded by span count. Spans are Zipkin v2
JSON objects (zipkin.io/zipkin-api ``Span``); a span reported twice (same trace id, span id and kind) is
merged, as Zipkin merges the halves of a shared span. Queries follow Zipkin's ``GET /api/v2/traces``:
``serviceName``, ``spanName`` and ``annotationQuery`` (``key`` or ``key=value`` terms joined by `` and ``,
matched against tags — ``guid:x-request-id=<id>`` finds one request), newest first, ``limit`` traces.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

MAX_SPANS = 50_000
_HEX = re.compile(r"[0-9a-f]{1,32}")

Span = dict[str, Any]


class SpanError(ValueError):
    """A span the collector refuses (Zipkin answers 400 for the whole request)."""


def normalize_trace_id(trace_id: str) -> str:
    """Zipkin's lenient trace id: lower case, left-padded to 16 or 32 hex digits."""
    value = trace_id.strip().lower()
    if not _HEX.fullmatch(value):
        raise SpanError(f"traceId {trace_id!r} is not 1-32 hex characters")
    return value.rjust(16 if len(value) <= 16 else 32, "0")


def validate(span: Any) -> Span:
    """A checked copy of one v2 span; :class:`SpanError` says what is wrong."""
    if not isinstance(span, Mapping):
        raise SpanError("each span must be a JSON object")
    out = dict(span)
    out["traceId"] = normalize_trace_id(str(span.get("traceId", "")))
    if not re.fullmatch(r"[0-9a-f]{16}", str(span.get("id", "")).lower()):
        raise SpanError(f"span id {span.get('id')!r} is not 16 hex characters")
    out["id"] = str(span["id"]).lower()
    if span.get("parentId") is not None:
        if not re.fullmatch(r"[0-9a-f]{16}", str(span["parentId"]).lower()):
            raise SpanError(f"parentId {span['parentId']!r} is not 16 hex characters")
        out["parentId"] = str(span["parentId"]).lower()
    tags = span.get("tags") or {}
    if not isinstance(tags, Mapping) or not all(isinstance(v, str) for v in tags.values()):
        raise SpanError("tags must be an object of strings")
    return out


def matches(trace: Iterable[Span], *, service: str | None = None, span_name: str | None = None,
            annotation_query: str | None = None) -> bool:
    spans = list(trace)
    if service and not any((s.get("localEndpoint") or {}).get("serviceName") == service for s in spans):
        return False
    if span_name and not any(s.get("name") == span_name for s in spans):
        return False
    for term in (annotation_query or "").split(" and "):
        term = term.strip()
        if not term:
            continue
        key, eq, value = term.partition("=")
        if not any(key in (s.get("tags") or {}) and (not eq or s["tags"][key] == value) for s in spans):
            return False
    return True


class SpanStore:
    """Traces by id, in arrival order of their first span; bounded by the total number of spans."""

    def __init__(self, max_spans: int = MAX_SPANS) -> None:
        self.max_spans = max_spans
        self._traces: OrderedDict[str, dict[tuple[str, str], Span]] = OrderedDict()
        self._count = 0
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    def accept(self, spans: Iterable[Any]) -> int:
        """Validate all, then store all (all or nothing, as Zipkin); returns how many."""
        checked = [validate(s) for s in spans]
        for span in checked:
            trace = self._traces.setdefault(span["traceId"], {})
            key = (span["id"], str(span.get("kind", "")))
            if key in trace:
                trace[key] = {**trace[key], **span, "tags": {**trace[key].get("tags", {}), **span.get("tags", {})}}
            else:
                trace[key] = span
                self._count += 1
        while self._count > self.max_spans and len(self._traces) > 1:
            _, dropped = self._traces.popitem(last=False)
            self._count -= len(dropped)
            self.evicted += len(dropped)
        return len(checked)

    def trace(self, trace_id: str) -> list[Span] | None:
        """One trace's spans by start time, or None when unknown."""
        found = self._traces.get(normalize_trace_id(trace_id))
        if found is None:
            return None
        return sorted(found.values(), key=lambda s: (int(s.get("timestamp") or 0), s["id"]))

    def traces(self, *, service: str | None = None, span_name: str | None = None,
               annotation_query: str | None = None, limit: int = 10) -> list[list[Span]]:
        """Matching traces, the most recently started first."""
        out: list[list[Span]] = []
        for trace_id in reversed(self._traces):
            spans = self.trace(trace_id) or []
            if matches(spans, service=service, span_name=span_name, annotation_query=annotation_query):
                out.append(spans)
                if len(out) >= limit:
                    break
        return out

    def services(self) -> list[str]:
        return sorted({str((s.get("localEndpoint") or {}).get("serviceName")) for t in self._traces.values()
                       for s in t.values() if (s.get("localEndpoint") or {}).get("serviceName")})
