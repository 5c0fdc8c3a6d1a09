"""Mesh telemetry as a dashboard reads it: the service graph, golden signals and traces of the lab's mesh.

``graph(lab)`` finds the sidecars through the Kubernetes API (or Mixer in the ``classic`` profile), scrapes their
Prometheus metrics twice ``window`` seconds apart, and returns what happened in between: workloads as nodes,
edges with requests/s, success rate, p50/p95/p99 latency (interpolated from histogram buckets as PromQL's
``histogram_quantile`` does) and the share of requests over mutual TLS. ``golden_signals(lab)`` gives the same
numbers per workload, as ``linkerd viz stat`` does, and ``trace(lab, request_id)`` one request's spans as a tree.
When there is nothing to show the answer says why (``NoData``): no proxies, a proxy unreachable, the window
too short, no traffic yet. In the ``classic`` profile the numbers come from Mixer, whose metrics grow when a
batch of Reports arrives (about once a second), so its window lags the traffic by up to that much. The
arithmetic lives in :mod:`meshlab.telemetry.metrics` and :mod:`meshlab.telemetry.service_graph` (pure);
:mod:`meshlab.telemetry.scraping` and :mod:`meshlab.telemetry.traces` talk to the cluster through the
``kubernetes`` client only, so this works on any cluster a :class:`Lab` reaches.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from meshlab.telemetry.metrics import Scrape
from meshlab.telemetry.scraping import Proxy, Target, discover, mixer_targets, profile, scrape_all
from meshlab.telemetry.service_graph import (
    Edge,
    Graph,
    NoData,
    Node,
    Signals,
    WorkloadSignals,
    build_graph,
    workload_signals,
)
from meshlab.telemetry.traces import Span, Trace, build_trace, fetch_spans

if TYPE_CHECKING:
    from meshlab.lab import Lab

__all__ = ["Edge", "Graph", "NoData", "Node", "Proxy", "Scrape", "Signals", "Span", "Trace", "WorkloadSignals",
           "golden_signals", "graph", "graph_of", "scrape_window", "signals_of", "trace"]


def _targets(lab: Lab, proxies: list[Proxy]) -> tuple[list[Target], str | None]:
    """What to scrape, or why nothing can be (classic profile without a running Mixer)."""
    if profile(lab) == "classic":
        mixers = mixer_targets(lab)
        return mixers, None if mixers else "unreachable (classic profile: no Running istio-mixer pod in istio-system)"
    return [p.target for p in proxies], None


def scrape_window(lab: Lab, *, namespace: str | None = None, window: float = 10.0,
                  during: Callable[[], object] | None = None
                  ) -> tuple[list[Proxy], list[Scrape], list[Scrape], float]:
    """Two scrape rounds ``window`` seconds apart (or around ``during()``, when given, e.g. a load run):
    (proxies, first round, second round, seconds between them)."""
    proxies = discover(lab, namespace)
    targets, missing = _targets(lab, proxies)
    if missing is not None:
        nothing = [Scrape("mixer", time.monotonic(), {}, missing)]
        return proxies, nothing, nothing, window
    start, before = scrape_all(lab, targets)
    if during is not None:
        during()
    else:
        time.sleep(max(0.0, window - (time.monotonic() - start)))
    end, after = scrape_all(lab, targets)
    return proxies, before, after, end - start


def graph(lab: Lab, *, namespace: str | None = None, window: float = 10.0) -> Graph:
    """The service graph of the next ``window`` seconds (blocks that long)."""
    proxies, before, after, seconds = scrape_window(lab, namespace=namespace, window=window)
    return graph_of(proxies, before, after, seconds, namespace=namespace)


def graph_of(proxies: list[Proxy], before: list[Scrape], after: list[Scrape], seconds: float, *,
             namespace: str | None = None) -> Graph:
    versions = {(p.node.namespace, p.node.workload): p.node.version for p in proxies}
    return build_graph(before, after, window=seconds, versions=versions, namespace=namespace)


def golden_signals(lab: Lab, *, namespace: str | None = None, window: float = 10.0) -> list[WorkloadSignals]:
    """Per meshed workload: requests/s served, success rate and p50/p95/p99 over the next ``window`` seconds."""
    proxies, before, after, seconds = scrape_window(lab, namespace=namespace, window=window)
    return signals_of(proxies, before, after, seconds)


def signals_of(proxies: list[Proxy], before: list[Scrape], after: list[Scrape], seconds: float
               ) -> list[WorkloadSignals]:
    pods = Counter(p.node for p in proxies)
    targets: dict[Node, list[str]] = {}
    for p in proxies:
        targets.setdefault(p.node, []).append(p.target.name)
    # In the classic profile the only target is Mixer: an unreachable Mixer is every workload's reason.
    own = {t.target for t in after} & {p.target.name for p in proxies}
    shared = [s.target for s in after if s.target not in own]
    workloads = [(node, count, targets[node] + shared) for node, count in pods.items()]
    return workload_signals(before, after, window=seconds, workloads=workloads)


def trace(lab: Lab, request_id: str) -> Trace:
    """The spans the collector holds for one request (its ``x-request-id``), as a tree."""
    return build_trace(request_id, fetch_spans(lab, request_id))
