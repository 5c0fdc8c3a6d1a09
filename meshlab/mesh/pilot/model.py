"""What Pilot knows about the mesh: Services, their endpoints, and the Istio routing and security resources.

A ``MeshState`` is an immutable picture of the cluster, built by ``watching`` from the Kubernetes API
(Services, Endpoints, VirtualServices, DestinationRules, PeerAuthentications, AuthorizationPolicies) and
handed to ``translation.translate``. It holds only what translation needs, in the shape Kubernetes gives it:
a Service's ports with their names, and per Service the endpoints (pod IP, target port by Service-port name,
pod labels, service account, whether the pod has a sidecar) as the Endpoints controller computes them. Istio
resources are kept as their ``spec`` dicts; the CRD schema has already refused fields meshlab does not
implement. Host names follow Istio's rule: a short name is relative to the namespace of the resource that
writes it (https://istio.io/latest/docs/reference/config/networking/virtual-service/#VirtualService).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlab.errors import XdsError
from meshlab.mesh.xds.resources import CLUSTER_DOMAIN, fqdn


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str | None
    ports: tuple[ServicePort, ...]

    @property
    def fqdn(self) -> str:
        return fqdn(self.name, self.namespace)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Endpoint:
    """One pod behind a Service: ``port_by_name`` maps the Service port's name to the pod's target port."""

    ip: str
    port_by_name: Mapping[str, int]
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    pod: str = ""
    namespace: str = ""
    service_account: str = ""  # the pod's spec.serviceAccountName: its SPIFFE identity when it has a sidecar
    sidecar: bool = False  # the pod was injected (Istio's label security.istio.io/tlsMode=istio)


@dataclass(frozen=True)
class VirtualService:
    name: str
    namespace: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class DestinationRule:
    name: str
    namespace: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class PeerAuthentication:
    name: str
    namespace: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    spec: Mapping[str, Any]


#: Istio's defaults: the mesh's trust domain and the root namespace whose selector-less policies are mesh-wide.
TRUST_DOMAIN = "cluster.local"
ROOT_NAMESPACE = "istio-system"


#: Where sidecars find Mixer in the ``classic`` telemetry profile (Istio 1.0-1.4's ``istio-telemetry`` /
#: ``istio-policy`` listened on gRPC port 9091; meshlab runs one ``istio-mixer`` for both roles).
MIXER_ADDRESS = "istio-mixer.istio-system.svc:9091"
TELEMETRY_PROFILES = ("modern", "classic")


@dataclass(frozen=True)
class TelemetrySettings:
    """The mesh config's telemetry keys: ``telemetryProfile`` (``modern``: in-proxy ``istio.stats``;
    ``classic``: the ``mixer`` filter calling Mixer's Check and Report), ``mixerAddress`` and
    ``policyCheckFailOpen`` (what a proxy does when Mixer cannot be reached: let the request through, or refuse
    it). Istio's mesh config defaulted ``policyCheckFailOpen`` to false (fail closed); so does meshlab."""

    profile: str = "modern"
    mixer_address: str = MIXER_ADDRESS
    fail_open: bool = False


def telemetry_from_mesh(data: Mapping[str, str] | None) -> TelemetrySettings:
    """The telemetry settings in the ``meshlab-mesh`` ConfigMap's ``data`` (defaults where absent or unknown)."""
    data = data or {}
    profile = str(data.get("telemetryProfile") or "modern")
    return TelemetrySettings(
        profile=profile if profile in TELEMETRY_PROFILES else "modern",
        mixer_address=str(data.get("mixerAddress") or MIXER_ADDRESS),
        fail_open=str(data.get("policyCheckFailOpen") or "false").strip().lower() == "true")


@dataclass(frozen=True)
class MeshState:
    """Everything translation reads. ``endpoints`` is keyed by ``(namespace, service name)``."""

    services: tuple[Service, ...] = ()
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]] = field(default_factory=dict)
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    trust_domain: str = TRUST_DOMAIN
    root_namespace: str = ROOT_NAMESPACE
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    def service(self, host: str) -> Service | None:
        """The Service whose FQDN is ``host``."""
        for service in self.services:
            if service.fqdn == host:
                return service
        return None

    def endpoints_of(self, service: Service) -> tuple[Endpoint, ...]:
        return self.endpoints.get(service.key, ())

    def virtual_service_for(self, host: str, proxy_namespace: str) -> VirtualService | None:
        """The VirtualService that routes ``host`` (a FQDN) for sidecars in ``proxy_namespace``.

        Only VirtualServices for sidecars count (no ``gateways``, or ``mesh`` among them). When several
        name the host, Istio uses one; meshlab prefers the proxy's namespace, then the service's, then the
        first by namespace and name, so the choice is stable.
        """
        candidates = [vs for vs in self.virtual_services
                      if host in {resolve_host(h, vs.namespace) for h in vs.spec.get("hosts") or ()}
                      and (not vs.spec.get("gateways") or "mesh" in vs.spec["gateways"])]
        return _preferred(candidates, host, proxy_namespace)

    def destination_rule_for(self, host: str, proxy_namespace: str) -> DestinationRule | None:
        """The DestinationRule for ``host`` (a FQDN), chosen among several as ``virtual_service_for`` does."""
        candidates = [dr for dr in self.destination_rules
                      if resolve_host(str(dr.spec.get("host") or ""), dr.namespace) == host]
        return _preferred(candidates, host, proxy_namespace)


def _preferred(candidates: list[Any], host: str, proxy_namespace: str) -> Any:
    service_namespace = host.split(".")[1] if host.count(".") >= 2 else ""

    def rank(resource: VirtualService | DestinationRule) -> tuple[int, str, str]:
        near = 0 if resource.namespace == proxy_namespace else 1 if resource.namespace == service_namespace else 2
        return (near, resource.namespace, resource.name)

    return min(candidates, key=rank, default=None)


def resolve_host(host: str, namespace: str) -> str:
    """Istio's reading of a host written in a resource of ``namespace``: ``reviews`` →
    ``reviews.<namespace>.svc.cluster.local``; ``reviews.prod`` → ``reviews.prod.svc.cluster.local``;
    ``reviews.prod.svc`` gets the cluster domain; a FQDN stays as it is."""
    if host.endswith("." + CLUSTER_DOMAIN) or host == "*":
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return fqdn(host, namespace)
    if len(parts) == 2:
        return fqdn(parts[0], parts[1])
    if len(parts) == 3 and parts[2] == "svc":
        return fqdn(parts[0], parts[1])
    return host


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float:
    """A protobuf/Go duration string as Istio writes them (``7s``, ``500ms``, ``1m30s``) in seconds."""
    text = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise XdsError(f"{text!r} is not a duration (write it like 10s, 500ms or 1m30s)")
    return total
