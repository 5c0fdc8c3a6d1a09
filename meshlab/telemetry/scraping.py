"""Finding the proxies through the Kubernetes API and scraping them, as Prometheus' kubernetes_sd would.

Prometheus' ``kubernetes_sd_configs`` with ``role: pod`` lists pods from the API server and keeps, for Istio,
the containers named ``istio-proxy`` with their port 15090 (``envoy-stats`` in Istio's Prometheus
configuration; istio.io/latest/docs/ops/integrations/prometheus). We do the same with the ``kubernetes``
client: every Running pod with an ``istio-proxy`` container is a target, ``http://<podIP>:15090/stats/prometheus``.
The embedded lab's pod IPs live on this machine's loopback, so we fetch them directly; on a real cluster the pod
network is out of reach and we go through the API server's pod proxy
(``/api/v1/namespaces/{ns}/pods/{name}:15090/proxy/stats/prometheus``, as ``kubectl get --raw`` would). In the
``classic`` profile the proxies keep no ``istio_*`` metrics — Mixer does — so the one target is Mixer's
Prometheus endpoint. A pod's workload is its controller's name (a ReplicaSet's Deployment: the ReplicaSet name
without its ``pod-template-hash``), else the pod's own name, as Istio names workloads.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshlab.telemetry.metrics import Scrape, parse_text
from meshlab.telemetry.service_graph import Node

if TYPE_CHECKING:
    from meshlab.lab import Lab

STATS_PORT = 15090
STATS_PATH = "/stats/prometheus"
PROXY_CONTAINER = "istio-proxy"
MESH_NAMESPACE = "istio-system"
MESH_CONFIG = "meshlab-mesh"
MIXER_SELECTOR = "app=istio-mixer"
MIXER_PORT_NAMES = ("prometheus", "http-monitoring", "metrics", "http-metrics")
SCRAPE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Target:
    """One endpoint to scrape: ``name`` identifies it in errors (``pod/<ns>/<name>`` or ``mixer``)."""

    name: str
    namespace: str
    pod: str
    ip: str
    port: int
    path: str = STATS_PATH


@dataclass(frozen=True)
class Proxy:
    """A pod with a sidecar: its workload (with version) and its scrape target."""

    node: Node
    target: Target


def workload_of(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller"):
            name = str(owner.get("name", ""))
            hash_ = labels.get("pod-template-hash")
            if owner.get("kind") == "ReplicaSet" and hash_ and name.endswith("-" + hash_):
                return name[: -len(hash_) - 1]
            return name
    return str(meta.get("name", ""))


def proxies_of(pods: Sequence[dict[str, Any]]) -> list[Proxy]:
    """The meshed, running pods of a pod list (API JSON), as scrape targets."""
    out = []
    for pod in pods:
        spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
        if not any(c.get("name") == PROXY_CONTAINER for c in spec.get("containers") or []):
            continue
        if status.get("phase") != "Running" or not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        version = (meta.get("labels") or {}).get("version", "")
        out.append(Proxy(Node(ns, workload_of(pod), version),
                         Target(f"pod/{ns}/{name}", ns, name, status["podIP"], STATS_PORT)))
    return out


def discover(lab: Lab, namespace: str | None = None) -> list[Proxy]:
    core = lab.clients.core
    listed = core.list_namespaced_pod(namespace) if namespace else core.list_pod_for_all_namespaces()
    return proxies_of(lab.clients.api_client.sanitize_for_serialization(listed)["items"])


def profile(lab: Lab) -> str:
    """The installed mesh's telemetry profile, read as Pilot reads it (``modern`` when unset or unreadable)."""
    from meshlab.mesh.pilot.model import telemetry_from_mesh

    try:
        cm = lab.clients.core.read_namespaced_config_map(MESH_CONFIG, MESH_NAMESPACE)
    except Exception:  # no mesh installed, or not allowed to read it: the default profile
        return "modern"
    return telemetry_from_mesh(cm.data or {}).profile


def mixer_targets(lab: Lab) -> list[Target]:
    """Mixer's Prometheus endpoint(s): the istio-mixer pods' metrics port."""
    listed = lab.clients.core.list_namespaced_pod(MESH_NAMESPACE, label_selector=MIXER_SELECTOR)
    out = []
    for pod in lab.clients.api_client.sanitize_for_serialization(listed)["items"]:
        status, meta = pod.get("status") or {}, pod["metadata"]
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        ports = [p for c in pod["spec"].get("containers") or [] for p in c.get("ports") or []]
        port = next((p["containerPort"] for p in ports if p.get("name") in MIXER_PORT_NAMES), None)
        if port is not None:
            out.append(Target(f"mixer/{meta['name']}", MESH_NAMESPACE, meta["name"], status["podIP"], int(port),
                              "/metrics"))
    return out


def fetch(lab: Lab, target: Target) -> str:
    """The target's exposition text: direct in the embedded lab, through the API server's pod proxy elsewhere."""
    if lab.embedded is not None:
        url = f"http://{target.ip}:{target.port}{target.path}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=SCRAPE_TIMEOUT) as resp:
            return str(resp.read().decode("utf-8"))
    return str(lab.clients.core.connect_get_namespaced_pod_proxy_with_path(
        f"{target.pod}:{target.port}", target.namespace, target.path.lstrip("/"),
        _request_timeout=SCRAPE_TIMEOUT, _preload_content=True))


def _describe(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{err.__class__.__name__}: {err}"


def scrape(lab: Lab, target: Target) -> Scrape:
    at = time.monotonic()
    try:
        text = fetch(lab, target)
    except Exception as err:  # any failure to reach the proxy is data: "proxy unreachable, because ..."
        return Scrape(target.name, at, {}, f"unreachable ({_describe(err)})")
    try:
        return Scrape(target.name, at, parse_text(text))
    except ValueError as err:
        return Scrape(target.name, at, {}, f"unparsable metrics ({err})")


def scrape_all(lab: Lab, targets: Sequence[Target]) -> tuple[float, list[Scrape]]:
    """Scrape every target (a few at a time); returns the round's start time and the scrapes."""
    at = time.monotonic()
    if not targets:
        return at, []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return at, list(pool.map(lambda t: scrape(lab, t), targets))
