"""Mixer's Prometheus adapter: attribute bags from Reports become Istio's standard metrics.

Istio 1.1-1.4 shipped ``metric`` instances whose dimensions were *expressions over attributes* and a
``prometheus`` handler serving them on Mixer's port 42422 (``istio-telemetry``). The mapping here follows those
instances (``requestcount``, ``requestduration``, ``requestsize``, ``responsesize``): e.g. ``reporter`` is
``conditional((context.reporter.kind | "inbound") == "outbound", "source", "destination")``, ``source_workload``
is ``source.workload.name | "unknown"``, and ``connection_security_policy`` is ``unknown`` for the client's
reports, else ``mutual_tls`` when ``connection.mtls``, else ``none``. The names, labels and buckets are the
in-proxy ones (:mod:`meshlab.mesh.proxy.metrics`, whose pure store and renderer are reused), so one scraper and
one aggregation read both profiles. String-map attributes (``source.labels``) travel flattened as
``source.labels.<key>`` in meshlab's simplified bag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlab.mesh.proxy.metrics import IstioLabels, IstioMetrics

UNKNOWN = "unknown"


def _text(bag: Mapping[str, Any], name: str, default: str = UNKNOWN) -> str:
    value = bag.get(name)
    return default if value is None or value == "" else str(value)


def labels_from(bag: Mapping[str, Any]) -> IstioLabels:
    """The label set of one reported request (Istio's ``requestcount`` instance dimensions)."""
    outbound = _text(bag, "context.reporter.kind", "inbound") == "outbound"
    if outbound:
        security = UNKNOWN
    else:
        security = "mutual_tls" if bag.get("connection.mtls") else "none"
    return IstioLabels(
        reporter="source" if outbound else "destination",
        source_workload=_text(bag, "source.workload.name"),
        source_workload_namespace=_text(bag, "source.workload.namespace"),
        source_principal=_text(bag, "source.principal"),
        source_app=_text(bag, "source.labels.app"),
        source_version=_text(bag, "source.labels.version"),
        destination_workload=_text(bag, "destination.workload.name"),
        destination_workload_namespace=_text(bag, "destination.workload.namespace"),
        destination_principal=_text(bag, "destination.principal"),
        destination_app=_text(bag, "destination.labels.app"),
        destination_version=_text(bag, "destination.labels.version"),
        destination_service=_text(bag, "destination.service.host"),
        destination_service_name=_text(bag, "destination.service.name"),
        destination_service_namespace=_text(bag, "destination.service.namespace"),
        request_protocol=_text(bag, "context.protocol", "http"),
        response_code=_text(bag, "response.code", "0"),
        response_flags=_text(bag, "context.proxy_error_code", "-"),
        connection_security_policy=security,
    )


class Metrics:
    """Every reported request, counted under its labels; :meth:`render` is the Prometheus page."""

    def __init__(self) -> None:
        self.store = IstioMetrics()

    def record(self, bag: Mapping[str, Any]) -> None:
        duration = bag.get("response.duration")
        self.store.record(labels_from(bag), duration_ms=float(duration or 0.0) * 1000.0,
                          request_bytes=int(bag.get("request.total_size") or 0),
                          response_bytes=int(bag.get("response.total_size") or 0))

    def requests(self, **match: str) -> int:
        return self.store.requests(**match)

    def render(self) -> str:
        return self.store.render()
