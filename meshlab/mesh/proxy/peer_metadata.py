"""Peer metadata exchange: how two sidecars learn who is at the other end of a request.

Istio's telemetry v2 (the ``istio.metadata_exchange`` and ``istio.stats`` filters, istio/proxy
``extensions/common/metadata_object``) has the client sidecar add two request headers,
``x-envoy-peer-metadata-id`` (its node id) and ``x-envoy-peer-metadata`` (its node metadata), and the server
sidecar add its own two to the response; each side removes the peer's pair before the application sees it,
and labels its metrics with what it learnt (``source_workload`` at the server, ``destination_workload`` at the
client). Istio encodes the metadata as a serialized ``google.protobuf.Struct`` in base64; meshlab encodes the
same fields (``WORKLOAD_NAME``, ``NAMESPACE``, ``SERVICE_ACCOUNT``, ``LABELS``, ``NAME``) as JSON in base64,
which a learner can decode with ``base64 -d``. A header that does not decode is ignored (the peer stays
``unknown``), as Istio does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshlab.mesh.xds.node import ProxyIdentity

PEER_ID = "x-envoy-peer-metadata-id"
PEER_METADATA = "x-envoy-peer-metadata"
HEADERS = (PEER_ID, PEER_METADATA)
UNKNOWN = "unknown"
DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class PeerMetadata:
    """One workload's identity as the exchange carries it."""

    node_id: str = ""
    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    service_account: str = ""
    pod: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def app(self) -> str:
        return self.labels.get("app") or UNKNOWN

    @property
    def version(self) -> str:
        return self.labels.get("version") or UNKNOWN

    def principal(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
        """The SPIFFE ID this workload's certificate carries (Istio's ``spiffe://<td>/ns/<ns>/sa/<sa>``)."""
        if not self.service_account or self.namespace == UNKNOWN:
            return UNKNOWN
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def of_identity(identity: ProxyIdentity) -> PeerMetadata:
    """This sidecar's own metadata; a workload without a name is named after its pod, as Istio falls back."""
    return PeerMetadata(node_id=identity.node_id, workload=identity.workload_name or identity.pod or UNKNOWN,
                        namespace=identity.namespace, service_account=identity.service_account,
                        pod=identity.pod, labels=dict(identity.labels))


def encode(peer: PeerMetadata) -> list[tuple[str, str]]:
    """The two header fields announcing ``peer``."""
    body = {"NAME": peer.pod, "NAMESPACE": peer.namespace, "WORKLOAD_NAME": peer.workload,
            "SERVICE_ACCOUNT": peer.service_account, "LABELS": dict(peer.labels)}
    blob = base64.b64encode(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).decode()
    return [(PEER_ID, peer.node_id), (PEER_METADATA, blob)]


def decode(headers: Iterable[tuple[str, str]]) -> PeerMetadata | None:
    """The peer announced in ``headers``, or None when absent or undecodable."""
    found = {k.lower(): v for k, v in headers if k.lower() in HEADERS}
    blob = found.get(PEER_METADATA)
    if not blob:
        return None
    try:
        body = json.loads(base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    raw_labels = body.get("LABELS")
    labels: dict[str, object] = raw_labels if isinstance(raw_labels, dict) else {}
    return PeerMetadata(node_id=found.get(PEER_ID, ""), workload=str(body.get("WORKLOAD_NAME") or UNKNOWN),
                        namespace=str(body.get("NAMESPACE") or UNKNOWN),
                        service_account=str(body.get("SERVICE_ACCOUNT") or ""), pod=str(body.get("NAME") or ""),
                        labels={str(k): str(v) for k, v in labels.items()})


def strip(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without the exchange's fields (the application never sees them)."""
    return [(k, v) for k, v in headers if k.lower() not in HEADERS]
