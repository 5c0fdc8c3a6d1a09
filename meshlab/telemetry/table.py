"""``meshlab mesh stat`` / ``top`` as text: one row per workload, like ``linkerd viz stat`` (NAME, PODS (meshed),
SUCCESS, RPS, LATENCY_P50/P95/P99), and one row per edge for ``top``; a dash and the reason where there is no data.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlab.telemetry.service_graph import Graph, Signals, WorkloadSignals


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _cells(s: Signals | None) -> list[str]:
    if s is None:
        return ["-"] * 5
    success = "-" if s.success is None else f"{s.success * 100:.2f}%"
    return [success, f"{s.rps:.1f}", _ms(s.p50), _ms(s.p95), _ms(s.p99)]


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def format_stat(rows: Sequence[WorkloadSignals]) -> str:
    header = ["NAMESPACE", "NAME", "VERSION", "PODS", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
              "LATENCY_P99", "NOTE"]
    body = [[r.node.namespace, r.node.workload, r.node.version or "-", str(r.pods), *_cells(r.signals),
             "" if r.no_data is None else f"{r.no_data.reason}"] for r in rows]
    notes = sorted({str(r.no_data) for r in rows if r.no_data is not None and r.no_data.reason != "no traffic yet"})
    return "\n".join([_render(header, body), *notes]) if body else "no meshed workloads found"


def format_top(graph: Graph) -> str:
    header = ["SOURCE", "DESTINATION", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "MTLS"]
    body = [[str(e.source), str(e.destination), *_cells(e.signals),
             "-" if e.mtls_share is None else f"{e.mtls_share * 100:.0f}%"] for e in graph.edges]
    lines = [_render(header, body)] if body else []
    if graph.no_data is not None:
        lines.append(str(graph.no_data))
    lines += [f"unreachable: {target}: {error}" for target, error in graph.unreachable]
    return "\n".join(lines)
