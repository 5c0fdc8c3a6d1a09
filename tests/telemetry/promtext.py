"""Prometheus text for tests, written by hand from (reporter, source, destination, code, mTLS, ms, n) rows:
the exposition a proxy or Mixer would serve after exactly those requests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
           1800000, 3600000)


class Row(NamedTuple):
    reporter: str
    source: str
    destination: str
    code: int = 200
    mtls: bool = True
    ms: float = 3.0
    n: int = 1
    namespace: str = "shop"
    service: str = ""  # default: the workload's name before its first dash


def _service(row: Row) -> str:
    return row.service or row.destination.split("-")[0]


def _labels(row: Row) -> dict[str, str]:
    return {"reporter": row.reporter, "source_workload": row.source, "source_workload_namespace": row.namespace,
            "destination_workload": row.destination, "destination_workload_namespace": row.namespace,
            "destination_service": f"{_service(row)}.{row.namespace}.svc.cluster.local",
            "destination_service_name": _service(row), "destination_service_namespace": row.namespace,
            "request_protocol": "http", "response_code": str(row.code), "response_flags": "-",
            "connection_security_policy": "mutual_tls" if row.mtls else "none"}


def _fmt(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def exposition(rows: Iterable[Row]) -> str:
    counts: dict[str, float] = defaultdict(float)
    histograms: dict[str, list[float]] = defaultdict(list)
    label_sets: dict[str, dict[str, str]] = {}
    for row in rows:
        labels = _labels(row)
        key = _fmt(labels)
        label_sets[key] = labels
        counts[key] += row.n
        histograms[key] += [row.ms] * row.n
    lines = ["# TYPE istio_requests_total counter"]
    lines += [f"istio_requests_total{k} {v}" for k, v in counts.items()]
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for key, values in histograms.items():
        for bound in (*BUCKETS, float("inf")):
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            n = sum(1 for v in values if v <= bound)
            lines.append(f"istio_request_duration_milliseconds_bucket{_fmt({**label_sets[key], 'le': le})} {n}")
        lines.append(f"istio_request_duration_milliseconds_sum{key} {sum(values)}")
        lines.append(f"istio_request_duration_milliseconds_count{key} {len(values)}")
    return "\n".join(lines) + "\n"
