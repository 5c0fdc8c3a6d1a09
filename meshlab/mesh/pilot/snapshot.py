"""An immutable, versioned set of Envoy resources for one proxy, as go-control-plane's ``cache.Snapshot``.

A management server must never hand a proxy half an update: a cluster whose endpoints are not there yet,
or a listener naming a route configuration that does not exist, drops traffic while the proxy waits. So
translation produces the whole configuration at once, ``consistent()`` checks those references before the
snapshot is published, and the version is a hash of the content: the same state always gives the same
version (a restarted Pilot recognises what a proxy already has), and any change gives a new one, per type,
so only the types that changed are pushed. Problems met while translating (a route to an undefined
subset, ...) travel with the snapshot, as Istio logs them and carries on without the bad route.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf.message import Message

from meshlab.errors import XdsError
from meshlab.mesh.xds.resources import CLUSTER, ENDPOINTS, LISTENER, ORDER, ROUTE, resource_name

_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """``resources`` maps each type URL of :data:`ORDER` to its resources, sorted by name."""

    resources: Mapping[str, tuple[Message, ...]]
    problems: tuple[XdsError, ...] = ()
    versions: Mapping[str, str] = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.resources) - set(ORDER)
        if unknown:
            raise XdsError(f"a snapshot holds only {', '.join(ORDER)}; not {', '.join(sorted(unknown))}")
        ordered = {t: tuple(sorted(self.resources.get(t, ()), key=resource_name)) for t in ORDER}
        # deterministic=True: map fields serialise in key order, so equal content gives equal bytes.
        versions = {t: _digest(m.SerializeToString(deterministic=True) for m in ordered[t]) for t in ORDER}
        object.__setattr__(self, "resources", ordered)
        object.__setattr__(self, "versions", versions)
        object.__setattr__(self, "version", _digest(versions[t].encode() for t in ORDER))

    @classmethod
    def of(cls, messages: Iterable[Message], problems: Iterable[XdsError] = ()) -> Snapshot:
        """A snapshot of ``messages`` of any of the four types, sorted into their types."""
        by_type: dict[str, list[Message]] = {t: [] for t in ORDER}
        for message in messages:
            by_type["type.googleapis.com/" + message.DESCRIPTOR.full_name].append(message)
        return cls({t: tuple(ms) for t, ms in by_type.items()}, tuple(problems))

    def names(self, type_url: str) -> list[str]:
        return [resource_name(m) for m in self.resources.get(type_url, ())]

    def inconsistencies(self) -> list[str]:
        """Every reference that points nowhere: an EDS cluster without its ClusterLoadAssignment, a listener's
        RDS name without its RouteConfiguration."""
        problems: list[str] = []
        eds_clusters = {
            c.eds_cluster_config.service_name or c.name
            for c in self.resources[CLUSTER]
            if isinstance(c, cluster_pb2.Cluster) and c.type == cluster_pb2.Cluster.EDS
        }
        assignments = set(self.names(ENDPOINTS))
        problems += [f"cluster {n!r} has no ClusterLoadAssignment" for n in sorted(eds_clusters - assignments)]
        rds_names = {n for listener in self.resources[LISTENER] for n in _rds_names(listener)}
        routes = set(self.names(ROUTE))
        problems += [f"listener route config {n!r} does not exist" for n in sorted(rds_names - routes)]
        return problems

    def consistent(self) -> bool:
        return not self.inconsistencies()


def _rds_names(listener: Message) -> list[str]:
    if not isinstance(listener, listener_pb2.Listener):
        return []
    names = []
    for chain in listener.filter_chains:
        for flt in chain.filters:
            if flt.typed_config.type_url == _HCM_TYPE:
                hcm = hcm_pb2.HttpConnectionManager()
                flt.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    names.append(hcm.rds.route_config_name)
    return names
