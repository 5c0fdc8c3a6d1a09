"""Istio's standard metrics, kept in the proxy and printed in the Prometheus text exposition format.

Since Istio 1.5 ("telemetry v2", istio.io/latest/docs/reference/config/metrics) each sidecar's ``istio.stats``
filter counts every request it handles: ``istio_requests_total`` (counter), ``istio_request_duration_milliseconds``,
``istio_request_bytes`` and ``istio_response_bytes`` (histograms), all with the same labels — who called
(``source_*``), who answered (``destination_*``), how (``request_protocol``, ``connection_security_policy``)
and with what result (``response_code``, ``response_flags``). The client sidecar reports with
``reporter="source"``, the server sidecar with ``reporter="destination"``, so one request through two sidecars
is counted twice: queries pick one reporter. The histograms use Envoy's default buckets (Istio sets no others
unless ``sidecar.istio.io/statsHistogramBuckets`` says so): 0.5 ms to one hour. The text follows the
Prometheus exposition format 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats): ``# HELP``/``# TYPE``
lines, cumulative ``_bucket{le=...}`` series ending in ``+Inf``, then ``_sum`` and ``_count``. It is written
here rather than through ``prometheus_client``'s process-global registry, so that each sidecar object (tests
run several in one process) owns its numbers; the tests parse it with ``prometheus_client``'s parser.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, fields

#: Envoy's default histogram buckets (``source/common/stats/histogram_impl.h``), which Istio's metrics use.
DEFAULT_BUCKETS: tuple[float, ...] = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                                      60000, 300000, 600000, 1800000, 3600000)
REQUESTS_TOTAL = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
REQUEST_BYTES = "istio_request_bytes"
RESPONSE_BYTES = "istio_response_bytes"
_HELP = {
    REQUESTS_TOTAL: "Requests handled by this proxy (Istio standard metric).",
    DURATION: "Request duration in milliseconds, as this proxy saw it (Istio standard metric).",
    REQUEST_BYTES: "Request body sizes in bytes (Istio standard metric).",
    RESPONSE_BYTES: "Response body sizes in bytes (Istio standard metric).",
}


@dataclass(frozen=True)
class IstioLabels:
    """The labels of one time series, in Istio's names and order (istio.io ".../config/metrics#labels")."""

    reporter: str
    source_workload: str = "unknown"
    source_workload_namespace: str = "unknown"
    source_principal: str = "unknown"
    source_app: str = "unknown"
    source_version: str = "unknown"
    destination_workload: str = "unknown"
    destination_workload_namespace: str = "unknown"
    destination_principal: str = "unknown"
    destination_app: str = "unknown"
    destination_version: str = "unknown"
    destination_service: str = "unknown"
    destination_service_name: str = "unknown"
    destination_service_namespace: str = "unknown"
    request_protocol: str = "http"
    response_code: str = "0"
    response_flags: str = "-"
    connection_security_policy: str = "unknown"

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Histogram:
    """Cumulative-on-output bucket counts (one count per upper bound, plus the overflow), sum and count."""

    bounds: tuple[float, ...] = DEFAULT_BUCKETS
    counts: list[int] | None = None
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if self.counts is None:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value equal to a bound falls in that bucket
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count of observations <= le)`` for every bound and ``+Inf``."""
        counts = self.counts or [0] * (len(self.bounds) + 1)
        running, out = 0, []
        for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class _Series:
    requests: int = 0
    duration: Histogram | None = None
    request_bytes: Histogram | None = None
    response_bytes: Histogram | None = None


class IstioMetrics:
    """The four standard metrics of one proxy, keyed by their label sets."""

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self._buckets = buckets
        self._series: dict[IstioLabels, _Series] = {}

    def record(self, labels: IstioLabels, *, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series(0, Histogram(self._buckets), Histogram(self._buckets),
                                                    Histogram(self._buckets))
        assert series.duration and series.request_bytes and series.response_bytes
        series.requests += 1
        series.duration.observe(duration_ms)
        series.request_bytes.observe(request_bytes)
        series.response_bytes.observe(response_bytes)

    def requests(self, **match: str) -> int:
        """The ``istio_requests_total`` sum over the series whose labels include ``match``."""
        return sum(s.requests for labels, s in self._series.items()
                   if all(getattr(labels, k) == v for k, v in match.items()))

    def render(self) -> str:
        """All series as Prometheus text (no trailing ``# EOF``: that is OpenMetrics, not format 0.0.4)."""
        ordered = sorted(self._series.items(), key=lambda item: astuple(item[0]))
        lines = [f"# HELP {REQUESTS_TOTAL} {_HELP[REQUESTS_TOTAL]}", f"# TYPE {REQUESTS_TOTAL} counter"]
        lines += [f"{REQUESTS_TOTAL}{_labels(labels.as_dict())} {s.requests}" for labels, s in ordered]
        for name, attribute in ((DURATION, "duration"), (REQUEST_BYTES, "request_bytes"),
                                (RESPONSE_BYTES, "response_bytes")):
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} histogram"]
            for labels, series in ordered:
                histogram: Histogram = getattr(series, attribute)
                base = labels.as_dict()
                for bound, running in histogram.cumulative():
                    lines.append(f"{name}_bucket{_labels({**base, 'le': _number(bound)})} {running}")
                lines.append(f"{name}_sum{_labels(base)} {_number(histogram.total)}")
                lines.append(f"{name}_count{_labels(base)} {histogram.count}")
        return "\n".join(lines) + "\n"


def render_counters(counters: Mapping[str, int], prefix: str = "envoy_") -> str:
    """The proxy's own counters (``/stats`` names) as Prometheus counters: ``cluster.x.upstream_rq_2xx`` →
    ``envoy_cluster_x_upstream_rq_2xx`` (Envoy's admin does tag extraction as well; meshlab keeps the names)."""
    lines: list[str] = []
    for name, value in sorted(counters.items()):
        metric = prefix + re.sub(r"[^a-zA-Z0-9_]", "_", name)
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    return "\n".join(lines) + ("\n" if lines else "")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if value != int(value) else str(int(value)) if abs(value) < 1e15 else repr(value)
