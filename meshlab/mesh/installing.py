"""``meshlab mesh install|uninstall|status|proxy-status``: the control plane's life cycle, as ``istioctl`` does it.

Installing applies the same manifests a real cluster gets — the CRDs (``crds.yaml``), then the control plane
(``pilot.yaml``: namespace ``istio-system``, service account, Deployment and Service ``istiod``), plus
``pilot-rbac.yaml`` where the cluster serves RBAC — and waits for istiod to be Ready (its readiness probe
passes once Pilot has listed the cluster and set its injector webhook's ``caBundle``). It also writes the mesh
config ConfigMap ``istio-system/meshlab-mesh`` whose ``mode`` tells the injector how to intercept traffic:
``address`` in the embedded lab (detected by its nodes' ``containerRuntimeVersion`` ``meshlab-process://...``),
``iptables`` elsewhere (see :mod:`meshlab.mesh.injection`). ``proxy-status`` reads istiod's ``/debug/syncz`` through the
cluster (the lab's kube-proxy, or the API server's service proxy on a real cluster) and prints the table
``istioctl proxy-status`` prints (https://istio.io/latest/docs/ops/diagnostic-tools/proxy-cmd/): per proxy,
whether each xDS type is SYNCED (the proxy ACKed what Pilot holds), STALE (sent, not ACKed yet), NACKED
(rejected: the proxy runs its last good version) or NOT SENT. The functions take a :class:`meshlab.lab.Lab`
handle; the table building is pure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from meshlab.errors import LabError
from meshlab.mesh import manifests
from meshlab.mesh.citadel.settings import SecuritySettings, mesh_data
from meshlab.mesh.injection import MESH_CONFIGMAP, InjectionConfig, Mode, config_from_mesh, mesh_configmap

if TYPE_CHECKING:  # the mesh is driven through a Lab handle but never imports the lab machinery itself
    from meshlab.lab import Lab

MANIFESTS = Path(manifests.__file__).parent
CRDS = MANIFESTS / "crds.yaml"
SECURITY_CRDS = MANIFESTS / "crds-security.yaml"  # PeerAuthentication, AuthorizationPolicy
PILOT = MANIFESTS / "pilot.yaml"
PILOT_RBAC = MANIFESTS / "pilot-rbac.yaml"
CITADEL = MANIFESTS / "citadel.yaml"
CITADEL_RBAC = MANIFESTS / "citadel-rbac.yaml"
ZIPKIN = MANIFESTS / "zipkin.yaml"  # the trace collector (meshlab tracing-collector), Service zipkin:9411
CITADEL_NAME = "istio-citadel"
NAMESPACE = "istio-system"
ISTIOD = "istiod"
DEBUG_PORT = 8080
TYPES = ("CDS", "LDS", "EDS", "RDS")  # istioctl's column order


def serves_rbac(lab: Lab) -> bool:
    groups = client.ApisApi(lab.clients.api_client).get_api_versions().groups or []
    return any(g.name == "rbac.authorization.k8s.io" for g in groups)


LAB_RUNTIME = "meshlab-process://"  # the embedded lab kubelet's containerRuntimeVersion prefix


def detect_mode(nodes: list[dict[str, Any]]) -> Mode:
    """``address`` when the nodes are the embedded lab's (processes, no iptables), else ``iptables``."""
    runtimes = [str(((n.get("status") or {}).get("nodeInfo") or {}).get("containerRuntimeVersion") or "")
                for n in nodes]
    return "address" if runtimes and all(r.startswith(LAB_RUNTIME) for r in runtimes) else "iptables"


def cluster_mode(lab: Lab) -> Mode:
    plain = lab.clients.api_client.sanitize_for_serialization
    return detect_mode(list(plain(lab.clients.core.list_node()).get("items") or []))


def mesh_config(lab: Lab) -> InjectionConfig | None:
    """The installed mesh config, or None when the mesh is not installed."""
    try:
        data = lab.clients.core.read_namespaced_config_map(MESH_CONFIGMAP, NAMESPACE).data
    except ApiException as err:
        if err.status == 404:
            return None
        raise LabError(f"reading configmap {NAMESPACE}/{MESH_CONFIGMAP} failed: {err.status} {err.reason}") from err
    return config_from_mesh(data)


def install(lab: Lab, *, timeout: float = 60, mode: Mode | None = None,
            security: SecuritySettings | None = None, profile: str = "modern") -> list[str]:
    """Apply the CRDs, the mesh config (``mode``: detected from the nodes when None; ``security``: trust domain,
    workload certificate TTL and CA address, defaults when None) and the control plane (Pilot, then Citadel),
    wait until istiod and istio-citadel are Ready; returns ``kind/name`` applied."""
    pilot = [doc for doc in yaml.safe_load_all(PILOT.read_text()) if doc]
    config = mesh_configmap(InjectionConfig(mode=mode or cluster_mode(lab)))
    config["data"].update(mesh_data(security or SecuritySettings()))
    config["data"]["telemetryProfile"] = profile if profile == "classic" else "modern"
    # Right after the Namespace, so the injector reads it before it serves its first pod.
    at = next((i + 1 for i, doc in enumerate(pilot) if doc.get("kind") == "Namespace"), 0)
    applied = lab.apply(CRDS.read_text()) + lab.apply(SECURITY_CRDS.read_text())
    applied += lab.apply([*pilot[:at], config, *pilot[at:]])
    if serves_rbac(lab):
        applied += lab.apply(PILOT_RBAC.read_text()) + lab.apply(CITADEL_RBAC.read_text())
    applied += lab.apply(CITADEL.read_text()) + lab.apply(ZIPKIN.read_text())
    lab.wait_ready("deployment", ISTIOD, namespace=NAMESPACE, timeout=timeout)
    lab.wait_ready("deployment", CITADEL_NAME, namespace=NAMESPACE, timeout=timeout)
    lab.wait_ready("deployment", "zipkin", namespace=NAMESPACE, timeout=timeout)
    from meshlab.mesh.mixer.profile import set_profile  # the telemetry profile: Mixer deployed or removed

    set_profile(lab, profile, timeout=timeout)
    return [f"{o['kind'].lower()}/{o['metadata']['name']}" for o in applied]


def uninstall(lab: Lab, *, purge: bool = False, timeout: float = 60) -> list[str]:
    """Remove the control plane (its namespace, and its RBAC where served) and wait until the namespace is
    gone; with ``purge`` also the CRDs — which deletes every VirtualService and DestinationRule."""
    deleted = lab.delete(ZIPKIN.read_text()) + lab.delete(CITADEL.read_text()) + lab.delete(PILOT.read_text())
    if serves_rbac(lab):
        deleted += lab.delete(PILOT_RBAC.read_text()) + lab.delete(CITADEL_RBAC.read_text())
    if purge:
        deleted += lab.delete(CRDS.read_text()) + lab.delete(SECURITY_CRDS.read_text())
    lab.wait_gone("namespace", NAMESPACE, timeout=timeout)
    return deleted


def fetch_debug(lab: Lab, path: str) -> str:
    """GET ``path`` from istiod's debug port, through the cluster."""
    if lab.embedded is not None:
        return lab.get(ISTIOD, DEBUG_PORT, path, namespace=NAMESPACE)
    try:
        # The API server's service proxy: /api/v1/namespaces/istio-system/services/istiod:8080/proxy/<path>
        response: Any = lab.clients.core.connect_get_namespaced_service_proxy_with_path(
            f"{ISTIOD}:{DEBUG_PORT}", NAMESPACE, path.lstrip("/"), _preload_content=False)
        return str(response.data.decode("utf-8", errors="replace"))
    except ApiException as err:
        raise LabError(f"GET istiod{path} through the API server failed: {err.status} {err.reason}") from err


# -- proxy-status ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRow:
    name: str  # pod.namespace, as istioctl shows it
    status: dict[str, str]  # "CDS" -> "SYNCED", ...
    istiod: str
    version: str  # the configuration version Pilot holds for this proxy


def proxy_rows(syncz: list[dict[str, Any]]) -> list[ProxyRow]:
    """Rows from istiod's ``/debug/syncz`` JSON (see :func:`meshlab.mesh.pilot.main.syncz`)."""
    rows = []
    for entry in syncz:
        proxy_id = str(entry["proxy"])
        parts = proxy_id.split("~")
        types = entry.get("types") or {}
        latest = "".join(str(types.get(t, {}).get("latest", "")) for t in TYPES)
        rows.append(ProxyRow(
            name=parts[2] if len(parts) == 4 else proxy_id,
            status={t: _cell(types.get(t) or {}) for t in TYPES},
            istiod=str(entry.get("istiod") or ""),
            version=_short_version(latest)))
    return sorted(rows, key=lambda r: r.name)


def _cell(t: dict[str, Any]) -> str:
    return str(t.get("status") or "NOT SENT")


def _short_version(text: str) -> str:
    """A fingerprint of the four per-type versions: proxies showing the same one hold the same config."""
    return hashlib.sha256(text.encode()).hexdigest()[:8] if text else ""


def format_table(rows: list[ProxyRow]) -> str:
    """``istioctl proxy-status``'s table: NAME, CDS, LDS, EDS, RDS, ISTIOD, VERSION."""
    header = ["NAME", *TYPES, "ISTIOD", "VERSION"]
    lines = [header] + [[r.name, *(r.status[t] for t in TYPES), r.istiod, r.version] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def proxy_status(lab: Lab) -> list[ProxyRow]:
    text = fetch_debug(lab, "/debug/syncz")
    try:
        return proxy_rows(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        raise LabError(f"istiod's /debug/syncz is not what meshlab's Pilot serves: {text[:200]!r}") from err


# -- status -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One control-plane Deployment (istiod, istio-citadel) as ``mesh status`` shows it."""

    name: str
    deployment: str  # "1/1 ready", "not installed"
    pods: list[tuple[str, str, bool]]  # (name, pod IP, ready)

    @property
    def ready(self) -> bool:
        return any(ready for _, _, ready in self.pods)


@dataclass(frozen=True)
class ControlPlaneStatus:
    crds: dict[str, bool]  # CRD name -> installed
    components: list[Component]
    proxies: int | None  # connected proxies, None when istiod cannot be asked

    @property
    def healthy(self) -> bool:
        return all(self.crds.values()) and all(c.ready for c in self.components)


CRD_NAMES = ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io",
             "peerauthentications.security.istio.io", "authorizationpolicies.security.istio.io")
COMPONENTS = (ISTIOD, CITADEL_NAME, "zipkin")  # each Deployment's pods carry app=<its name>
OPTIONAL_COMPONENTS = ("istio-mixer",)  # the classic telemetry profile's: listed only when installed


def status(lab: Lab) -> ControlPlaneStatus:
    ext = lab.clients.apiextensions
    crds = {}
    for name in CRD_NAMES:
        try:
            ext.read_custom_resource_definition(name)
            crds[name] = True
        except ApiException as err:
            if err.status != 404:
                raise LabError(f"reading CRD {name} failed: {err.status} {err.reason}") from err
            crds[name] = False
    components = [_component(lab, name) for name in COMPONENTS]
    optional = (_component(lab, name) for name in OPTIONAL_COMPONENTS)
    components += [c for c in optional if c.deployment != "not installed"]
    proxies = None
    if components[0].ready:
        try:
            proxies = len(json.loads(fetch_debug(lab, "/debug/syncz")))
        except (LabError, ValueError):
            proxies = None
    return ControlPlaneStatus(crds, components, proxies)


def _component(lab: Lab, name: str) -> Component:
    plain = lab.clients.api_client.sanitize_for_serialization
    try:
        dep = plain(lab.clients.apps.read_namespaced_deployment(name, NAMESPACE))
    except ApiException as err:
        if err.status != 404:
            raise LabError(f"reading deployment {name} failed: {err.status} {err.reason}") from err
        return Component(name, "not installed", [])
    pods = []
    for pod in plain(lab.clients.core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}")).get("items") or []:
        pod_status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod_status.get("conditions") or [])
        pods.append((str(pod["metadata"]["name"]), str(pod_status.get("podIP") or ""), ready))
    replicas = f"{dep.get('status', {}).get('readyReplicas') or 0}/{dep['spec'].get('replicas', 1)} ready"
    return Component(name, replicas, pods)


def format_status(s: ControlPlaneStatus) -> str:
    lines = [f"CRD {name}: {'installed' if ok else 'missing'}" for name, ok in s.crds.items()]
    for c in s.components:
        lines.append(f"deployment {NAMESPACE}/{c.name}: {c.deployment}")
        lines += [f"  pod {name} {ip or '(no IP)'} {'Ready' if ready else 'not ready'}" for name, ip, ready in c.pods]
    if s.proxies is not None:
        lines.append(f"connected proxies: {s.proxies}")
    return "\n".join(lines)
