"""The service graph and per-workload golden signals of one window, computed from two rounds of scrapes.

Istio's standard metrics describe each request twice: the client's sidecar reports it with
``reporter="source"`` and the server's with ``reporter="destination"`` (istio.io/latest/docs/reference/config/
metrics). The two views differ on purpose, and Kiali reads them the same way we do here:

- an **edge** (source workload → destination workload) takes its rate, success and latency from the *source*
  reports when there are any, because faults injected by a VirtualService (an abort, a delay) happen in the
  client's sidecar and never reach the server; a client outside the mesh has only destination reports;
- the **mTLS share** of an edge comes from the *destination* reports: only the server side knows what the
  inbound connection really was (``connection_security_policy`` is ``mutual_tls`` or ``none`` there);
- a workload's **golden signals** are what it served — destination reports — as ``linkerd viz stat`` shows
  inbound traffic per workload (falling back to source reports for a destination without a sidecar).

A request succeeds when it got a response below 500 (Linkerd's definition; a 4xx is the client's mistake, and
``response_code="0"`` — no response at all — is a failure). When there is nothing to show, the result says why
instead of showing zeros: no proxy found, every proxy unreachable, the window too short, or no traffic yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshlab.telemetry.metrics import Labels, Scrape, SeriesKey, histogram_quantile, increase

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
MIN_WINDOW = 1.0  # seconds: below this a rate says more about timing noise than about traffic
UNKNOWN = "unknown"

# Why there are no numbers (``NoData.reason``): short codes for programs, the detail for people.
NO_PROXIES = "no proxies"
UNREACHABLE = "proxy unreachable"
WINDOW_TOO_SHORT = "window too short"
NO_TRAFFIC = "no traffic yet"


@dataclass(frozen=True)
class NoData:
    """Why a value is missing: ``reason`` is one of the constants above, ``detail`` names what and where."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"no data because {self.reason}: {self.detail}"


@dataclass(frozen=True, order=True)
class Node:
    """A workload (a Deployment's pods, or a bare pod) in a namespace, with its ``version`` label."""

    namespace: str
    workload: str
    version: str = ""

    def __str__(self) -> str:
        name = self.workload if self.namespace in ("", UNKNOWN) else f"{self.workload}.{self.namespace}"
        return f"{name} ({self.version})" if self.version else name


@dataclass(frozen=True)
class Signals:
    """Golden signals over a window: traffic, errors, latency (p50/p95/p99 in ms; None when not computable)."""

    requests: float
    rps: float
    success: float | None  # 0..1; None without requests
    p50: float | None
    p95: float | None
    p99: float | None

    def __repr__(self) -> str:
        def ms(v: float | None) -> str:
            return "None" if v is None else f"{v:.1f}"
        success = "None" if self.success is None else f"{self.success:.3f}"
        return (f"Signals(requests={self.requests:g}, rps={self.rps:.2f}, success={success}, "
                f"p50={ms(self.p50)}, p95={ms(self.p95)}, p99={ms(self.p99)})")


@dataclass(frozen=True)
class Edge:
    source: Node
    destination: Node
    signals: Signals
    mtls_share: float | None  # 0..1 of requests the server saw over mutual TLS; None without server reports
    reporter: str  # whose reports gave the signals: "source" or "destination"

    def __repr__(self) -> str:
        share = "None" if self.mtls_share is None else f"{self.mtls_share:.2f}"
        return (f"Edge({self.source} -> {self.destination}, {self.signals!r}, mtls_share={share}, "
                f"reporter={self.reporter!r})")


@dataclass(frozen=True)
class Graph:
    window: float  # seconds between the two scrape rounds
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    unreachable: tuple[tuple[str, str], ...] = ()  # (target, error) of proxies that did not answer
    no_data: NoData | None = None
    # The same traffic by destination *service* (Kiali's service nodes): a request a VirtualService fault
    # aborted in the client's sidecar reached no workload, so only this view puts it beside the others.
    service_edges: tuple[Edge, ...] = ()

    def edge(self, source: str, destination: str) -> Edge | None:
        """The edge between two workload names (any namespace), or None."""
        return next((e for e in self.edges if e.source.workload == source
                     and e.destination.workload == destination), None)

    def service_edge(self, source: str, service: str) -> Edge | None:
        """All requests from workload ``source`` to ``service`` (short name), whichever workload answered."""
        return next((e for e in self.service_edges if e.source.workload == source
                     and e.destination.workload == service), None)

    def __repr__(self) -> str:
        lines = [f"Graph(window={self.window:.1f}s, {len(self.nodes)} nodes, {len(self.edges)} edges"
                 + (f", {self.no_data}" if self.no_data else "") + ")"]
        lines += [f"  {e!r}" for e in self.edges]
        lines += [f"  unreachable {target}: {error}" for target, error in self.unreachable]
        return "\n".join(lines)


@dataclass(frozen=True)
class WorkloadSignals:
    node: Node
    pods: int  # pods of the workload with a sidecar
    signals: Signals | None
    no_data: NoData | None = None

    def __repr__(self) -> str:
        what = repr(self.signals) if self.signals is not None else str(self.no_data)
        return f"WorkloadSignals({self.node}, pods={self.pods}, {what})"


@dataclass
class _Tally:
    requests: float = 0.0
    ok: float = 0.0
    mtls: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))

    def signals(self, window: float) -> Signals:
        points = list(self.buckets.items())

        def q(x: float) -> float | None:
            return histogram_quantile(x, points)
        return Signals(requests=self.requests, rps=self.requests / window if window > 0 else 0.0,
                       success=self.ok / self.requests if self.requests else None,
                       p50=q(0.5), p95=q(0.95), p99=q(0.99))


def _success(code: str) -> bool:
    try:
        return 0 < int(code) < 500
    except ValueError:
        return False


def window_increase(before: Sequence[Scrape], after: Sequence[Scrape]) -> tuple[dict[SeriesKey, float],
                                                                               list[tuple[str, str]]]:
    """Sum of every target's increase between the rounds, and the targets that failed in either round."""
    first = {s.target: s for s in before}
    total: dict[SeriesKey, float] = defaultdict(float)
    failed = []
    for scrape in after:
        old = first.get(scrape.target)
        error = scrape.error or (old.error if old is not None else None)
        if error is not None:
            failed.append((scrape.target, error))
            continue
        for key, value in increase(old.samples if old is not None else {}, scrape.samples).items():
            total[key] += value
    failed += [(s.target, s.error) for s in before if s.error and s.target not in {a.target for a in after}]
    return dict(total), failed


def _node(labels: Mapping[str, str], side: str, versions: Mapping[tuple[str, str], str]) -> Node:
    namespace = labels.get(f"{side}_workload_namespace") or UNKNOWN
    workload = labels.get(f"{side}_workload") or UNKNOWN
    if workload == UNKNOWN and side == "destination" and labels.get("destination_service", UNKNOWN) != UNKNOWN:
        # No workload known (the request never reached one: no healthy endpoint...): name the service.
        name = labels.get("destination_service_name", UNKNOWN)
        workload = name if name != UNKNOWN else labels["destination_service"].split(".")[0]
        service_ns = labels.get("destination_service_namespace", UNKNOWN)
        namespace = service_ns if service_ns != UNKNOWN else namespace
    version = labels.get(f"{side}_version") or versions.get((namespace, workload), "")
    if version == UNKNOWN:
        version = versions.get((namespace, workload), "")
    return Node(namespace, workload, version)


def _service(labels: Mapping[str, str]) -> Node | None:
    name = labels.get("destination_service_name", UNKNOWN)
    if name == UNKNOWN:
        name = labels.get("destination_service", UNKNOWN).split(".")[0]
    namespace = labels.get("destination_service_namespace", UNKNOWN)
    if namespace == UNKNOWN:
        namespace = labels.get("destination_workload_namespace", UNKNOWN)
    return None if name == UNKNOWN else Node(namespace, name)


def _tallies(delta: Mapping[SeriesKey, float], versions: Mapping[tuple[str, str], str], *,
             by_service: bool = False) -> dict[tuple[str, Node, Node], _Tally]:
    """(reporter, source, destination) → counts, successes, mTLS count and latency buckets; the destination
    is the service (``by_service``) or the workload that answered."""
    tallies: dict[tuple[str, Node, Node], _Tally] = defaultdict(_Tally)
    for (name, pairs), value in delta.items():
        if name not in (REQUESTS, DURATION_BUCKET):
            continue
        labels = dict(pairs)
        destination = _service(labels) if by_service else None
        key = (labels.get("reporter", ""), _node(labels, "source", versions),
               destination or _node(labels, "destination", versions))
        tally = tallies[key]
        if name == REQUESTS:
            tally.requests += value
            if _success(labels.get("response_code", "")):
                tally.ok += value
            if labels.get("connection_security_policy") == "mutual_tls":
                tally.mtls += value
        else:
            tally.buckets[float(labels.get("le", "+Inf"))] += value
    return tallies


def _reason(scrape_count: int, failed: Sequence[tuple[str, str]], window: float, traffic: bool) -> NoData | None:
    if scrape_count == 0:
        return NoData(NO_PROXIES, "no pod with an istio-proxy container was found (is the namespace injected?)")
    if len(failed) >= scrape_count:
        return NoData(UNREACHABLE, "; ".join(f"{t}: {e}" for t, e in failed))
    if window < MIN_WINDOW:
        return NoData(WINDOW_TOO_SHORT, f"{window:.2f} s between scrapes, at least {MIN_WINDOW:g} s needed")
    if not traffic:
        return NoData(NO_TRAFFIC, f"no request was reported in the {window:.1f} s window")
    return None


def build_graph(before: Sequence[Scrape], after: Sequence[Scrape], *, window: float,
                versions: Mapping[tuple[str, str], str] | None = None,
                namespace: str | None = None) -> Graph:
    """The service graph of the window between two scrape rounds (``versions``: (namespace, workload) →
    version label, from the pods, for reports that carry no version; ``namespace``: keep edges touching it)."""
    delta, failed = window_increase(before, after)
    edges = _edges(_tallies(delta, versions or {}), window, namespace)
    services = _edges(_tallies(delta, versions or {}, by_service=True), window, namespace)
    nodes = tuple(sorted({n for e in edges for n in (e.source, e.destination)}))
    reason = _reason(len(after), failed, window, bool(edges))
    if reason is not None and reason.reason == WINDOW_TOO_SHORT:
        edges, services, nodes = [], [], ()
    return Graph(window, nodes, tuple(edges), tuple(failed), reason, tuple(services))


def _edges(tallies: Mapping[tuple[str, Node, Node], _Tally], window: float, namespace: str | None) -> list[Edge]:
    pairs: dict[tuple[Node, Node], dict[str, _Tally]] = defaultdict(dict)
    for (reporter, src, dst), tally in tallies.items():
        if tally.requests > 0 and (namespace is None or namespace in (src.namespace, dst.namespace)):
            pairs[(src, dst)][reporter] = tally
    edges = []
    for (src, dst), by_reporter in sorted(pairs.items()):
        reporter = "source" if "source" in by_reporter else "destination"
        server = by_reporter.get("destination")
        share = server.mtls / server.requests if server is not None and server.requests else None
        edges.append(Edge(src, dst, by_reporter[reporter].signals(window), share, reporter))
    return edges


def workload_signals(before: Sequence[Scrape], after: Sequence[Scrape], *, window: float,
                     workloads: Iterable[tuple[Node, int, Iterable[str]]]) -> list[WorkloadSignals]:
    """Golden signals of each workload: (node, sidecar pod count, its scrape targets) → what it served."""
    workloads = list(workloads)
    delta, failed = window_increase(before, after)
    errors = dict(failed)
    versions = {(n.namespace, n.workload): n.version for n, _, _ in workloads}
    inbound: dict[tuple[str, str], dict[str, _Tally]] = defaultdict(lambda: defaultdict(_Tally))
    for (reporter, _src, dst), part in _tallies(delta, versions).items():
        into = inbound[(dst.namespace, dst.workload)][reporter]
        into.requests += part.requests
        into.ok += part.ok
        into.mtls += part.mtls
        for le, count in part.buckets.items():
            into.buckets[le] += count
    out = []
    for node, pods, targets in sorted(workloads, key=lambda w: w[0]):
        by_reporter = inbound.get((node.namespace, node.workload), {})
        tally = by_reporter.get("destination") or by_reporter.get("source")
        down = [(t, errors[t]) for t in targets if t in errors]
        if window < MIN_WINDOW:
            reason: NoData | None = NoData(WINDOW_TOO_SHORT, f"{window:.2f} s between scrapes, "
                                                             f"at least {MIN_WINDOW:g} s needed")
        elif tally is not None and tally.requests > 0:
            reason = None
        elif down:
            reason = NoData(UNREACHABLE, "; ".join(f"{t}: {e}" for t, e in down))
        else:
            reason = NoData(NO_TRAFFIC, f"no request to {node.workload} in the {window:.1f} s window")
        signals = tally.signals(window) if reason is None and tally is not None else None
        out.append(WorkloadSignals(node, pods, signals, reason))
    return out


def labels_with(pairs: Labels, **extra: str) -> Labels:
    """``pairs`` with some labels added or replaced (for tests and fakes building series)."""
    return tuple(sorted({**dict(pairs), **extra}.items()))
