"""Who a proxy is, as it tells the management server in the ``node`` of its first ``DiscoveryRequest``.

Istio's sidecars identify themselves with a node id ``sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local``
and node metadata (``NAMESPACE``, ``SERVICE_ACCOUNT``, ``LABELS``, ``WORKLOAD_NAME``, ...); Pilot builds each
proxy's configuration from that identity (its namespace decides which short names resolve, its IP which
inbound ports it serves). meshlab adds ``APP_ADDRESS``: where the sidecar reaches its application
(``host`` or ``host:port``). See Envoy's ``config.core.v3.Node`` and Istio's ``pkg/model/proxy`` ("ServiceNode").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from meshlab.errors import XdsError


@dataclass(frozen=True)
class ProxyIdentity:
    """A sidecar as Pilot sees it."""

    ip: str
    pod: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    workload_name: str = ""
    app_address: str = ""

    @property
    def node_id(self) -> str:
        return node_id(self.ip, self.pod, self.namespace)

    def to_node(self) -> base_pb2.Node:
        """The ``Node`` a proxy with this identity sends."""
        node = base_pb2.Node(id=self.node_id, cluster=self.workload_name or self.pod)
        metadata: dict[str, object] = {
            "NAMESPACE": self.namespace,
            "SERVICE_ACCOUNT": self.service_account,
            "LABELS": dict(self.labels),
            "WORKLOAD_NAME": self.workload_name,
        }
        if self.app_address:
            metadata["APP_ADDRESS"] = self.app_address
        node.metadata.update(metadata)
        return node


def node_id(ip: str, pod: str, namespace: str) -> str:
    return f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


def from_node(node: base_pb2.Node) -> ProxyIdentity:
    """Parse a proxy's ``Node``; an ``XdsError`` names what is wrong with an id that is not Istio's format."""
    parts = node.id.split("~")
    if len(parts) != 4 or parts[0] != "sidecar":
        raise XdsError(f"node id {node.id!r} is not 'sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local'")
    _, ip, pod_dot_ns, _domain = parts
    pod, _, namespace = pod_dot_ns.rpartition(".")
    if not ip or not pod or not namespace:
        raise XdsError(f"node id {node.id!r} lacks the pod IP, name or namespace")
    metadata = json_format.MessageToDict(node.metadata)
    labels = metadata.get("LABELS") or {}
    if not isinstance(labels, dict):
        raise XdsError(f"node metadata LABELS of {node.id!r} is not a struct")
    return ProxyIdentity(
        ip=ip, pod=pod, namespace=str(metadata.get("NAMESPACE") or namespace),
        labels={str(k): str(v) for k, v in labels.items()},
        service_account=str(metadata.get("SERVICE_ACCOUNT") or "default"),
        workload_name=str(metadata.get("WORKLOAD_NAME") or ""),
        app_address=str(metadata.get("APP_ADDRESS") or ""),
    )
