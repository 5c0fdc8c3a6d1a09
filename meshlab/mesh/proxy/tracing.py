"""Trace context: reading, continuing and writing W3C Trace Context and Zipkin B3 headers; Zipkin v2 spans.

A trace is a tree of spans sharing one trace id; each span has its own id and names its parent's. A sidecar
makes one span per request it handles (Envoy's way with ``shared_span_context: false``): the server sidecar a
``SERVER`` span, the client sidecar a ``CLIENT`` span, each the child of the span in the incoming headers, and
it forwards its own span id as the parent of whatever comes next. The context travels in two header families,
both written on every forwarded request so that either kind of application library can continue it:

- W3C Trace Context (www.w3.org/TR/trace-context): ``traceparent: 00-<32 hex trace id>-<16 hex parent id>-<flags>``
  (flag ``01`` = sampled; all-zero ids invalid) and ``tracestate`` (vendor data, passed on untouched);
- B3 multi-header (github.com/openzipkin/b3-propagation): ``x-b3-traceid`` (16 or 32 hex), ``x-b3-spanid``,
  ``x-b3-parentspanid``, ``x-b3-sampled`` (``1``/``0``; ``x-b3-flags: 1`` = debug, sampled), or the single
  ``b3: <trace>-<span>[-<sampled>[-<parent>]]`` header.

Incoming B3 is read first (Envoy's Zipkin tracer is B3-native), then ``b3``, then ``traceparent``; with none
valid a new trace starts (sampled: the lab traces every request, as Istio's ``demo`` profile does). An
unsampled context is continued and propagated but not reported. Spans are reported as Zipkin v2 JSON
(zipkin.io/zipkin-api, ``POST /api/v2/spans``): ids in lower-case hex, ``timestamp``/``duration`` in
microseconds, tags as strings, among them ``guid:x-request-id`` — the tag Istio's Zipkin spans carry and
by which a request's trace is found.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
B3_TRACE_ID = "x-b3-traceid"
B3_SPAN_ID = "x-b3-spanid"
B3_PARENT_SPAN_ID = "x-b3-parentspanid"
B3_SAMPLED = "x-b3-sampled"
B3_FLAGS = "x-b3-flags"
B3_SINGLE = "b3"
#: Every header this module reads or rewrites.
TRACE_HEADERS = (TRACEPARENT, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS, B3_SINGLE)
REQUEST_ID_TAG = "guid:x-request-id"

_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
IdSource = Callable[[int], str]


def random_id(n_bytes: int) -> str:
    """A random non-zero id of ``n_bytes`` bytes in lower-case hex."""
    while True:
        value = secrets.token_hex(n_bytes)
        if value.strip("0"):
            return value


@dataclass(frozen=True)
class TraceContext:
    """What the incoming headers said: the trace, the caller's span (our parent), sampling, ``tracestate``."""

    trace_id: str
    parent_id: str | None = None
    sampled: bool = True
    tracestate: str | None = None


def _valid_id(value: str, *, trace: bool) -> bool:
    value = value.lower()
    ok = bool(_HEX32.fullmatch(value) or _HEX16.fullmatch(value)) if trace else bool(_HEX16.fullmatch(value))
    return ok and bool(value.strip("0"))


def _sampled(value: str | None, flags: str | None) -> bool:
    if flags == "1":
        return True  # debug implies sampled
    return value not in ("0", "false", "d") if value is not None else True


def extract(headers: Iterable[tuple[str, str]]) -> TraceContext | None:
    """The trace context the request carries, or None when it carries no valid one."""
    found: dict[str, str] = {}
    for key, value in headers:
        found.setdefault(key.lower(), value.strip())
    tracestate = found.get(TRACESTATE)
    trace_id, span_id = found.get(B3_TRACE_ID, "").lower(), found.get(B3_SPAN_ID, "").lower()
    if _valid_id(trace_id, trace=True) and _valid_id(span_id, trace=False):
        return TraceContext(trace_id, span_id, _sampled(found.get(B3_SAMPLED), found.get(B3_FLAGS)), tracestate)
    if B3_SINGLE in found:
        parts = found[B3_SINGLE].lower().split("-")
        if len(parts) >= 2 and _valid_id(parts[0], trace=True) and _valid_id(parts[1], trace=False):
            sampled = _sampled(parts[2], None) if len(parts) > 2 else True
            return TraceContext(parts[0], parts[1], sampled, tracestate)
    match = _TRACEPARENT.fullmatch(found.get(TRACEPARENT, "").lower())
    if match and match.group(1) != "ff" and not (match.group(1) == "00" and match.group(5)):
        trace, parent = match.group(2), match.group(3)
        if trace.strip("0") and parent.strip("0"):
            return TraceContext(trace, parent, bool(int(match.group(4), 16) & 1), tracestate)
    return None


@dataclass(frozen=True)
class SpanContext:
    """The span this sidecar opens for one request."""

    trace_id: str
    span_id: str
    parent_id: str | None
    sampled: bool
    tracestate: str | None = None


def start_span(incoming: TraceContext | None, *, new_id: IdSource = random_id) -> SpanContext:
    """Continue ``incoming`` with a child span, or start a new trace (a root span, 128-bit trace id)."""
    if incoming is None:
        return SpanContext(new_id(16), new_id(8), None, True)
    return SpanContext(incoming.trace_id, new_id(8), incoming.parent_id, incoming.sampled, incoming.tracestate)


def inject(headers: Iterable[tuple[str, str]], span: SpanContext) -> list[tuple[str, str]]:
    """``headers`` with the trace headers replaced by ones naming ``span`` as the next hop's parent.

    ``tracestate`` is kept as it came (W3C: a vendor that does not own an entry must not change it).
    """
    kept = [(k, v) for k, v in headers if k.lower() not in TRACE_HEADERS]
    trace_w3c = span.trace_id.rjust(32, "0")  # a 64-bit B3 trace id is left-padded to 128 bits
    flags = "01" if span.sampled else "00"
    kept += [(TRACEPARENT, f"00-{trace_w3c}-{span.span_id}-{flags}"),
             (B3_TRACE_ID, span.trace_id), (B3_SPAN_ID, span.span_id)]
    if span.parent_id:
        kept.append((B3_PARENT_SPAN_ID, span.parent_id))
    kept.append((B3_SAMPLED, "1" if span.sampled else "0"))
    return kept


@dataclass(frozen=True)
class Endpoint:
    service_name: str
    ipv4: str = ""
    port: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"serviceName": self.service_name}
        if self.ipv4:
            out["ipv4"] = self.ipv4
        if self.port:
            out["port"] = self.port
        return out


@dataclass(frozen=True)
class Span:
    """One finished span, ready to be reported."""

    context: SpanContext
    name: str
    kind: str  # "CLIENT" or "SERVER"
    timestamp_us: int
    duration_us: int
    local: Endpoint
    remote: Endpoint | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_zipkin(self) -> dict[str, Any]:
        """The span as a Zipkin v2 JSON object."""
        out: dict[str, Any] = {
            "traceId": self.context.trace_id, "id": self.context.span_id, "name": self.name, "kind": self.kind,
            "timestamp": self.timestamp_us, "duration": max(1, self.duration_us),
            "localEndpoint": self.local.to_json(), "tags": dict(self.tags),
        }
        if self.context.parent_id:
            out["parentId"] = self.context.parent_id
        if self.remote is not None:
            out["remoteEndpoint"] = self.remote.to_json()
        return out
