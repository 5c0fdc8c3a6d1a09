"""Envoy v3 resource types as the aggregated discovery service (ADS) carries them, and Istio's names for them.

Every xDS resource travels inside a ``google.protobuf.Any`` whose type URL names its message; a
``DiscoveryRequest``/``DiscoveryResponse`` is about one type URL at a time. Over one ADS stream the
management server sends clusters (CDS) before their endpoints (EDS) and listeners (LDS) before their
routes (RDS), CDS and EDS before LDS and RDS — the order Envoy's xDS protocol documentation gives to avoid
traffic drops during updates ("Eventual consistency considerations",
https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol). Cluster names follow Istio's
``direction|port|subset|host`` convention so that ``config_dump`` reads like Istio's.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshlab.errors import XdsError

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

#: The order in which one ADS stream delivers the types.
ORDER: tuple[str, ...] = (CLUSTER, ENDPOINTS, LISTENER, ROUTE)

MESSAGE_BY_TYPE: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINTS: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


class XdsType(Enum):
    """The four discovery services by their usual short names (for status tables and logs)."""

    CDS = CLUSTER
    EDS = ENDPOINTS
    LDS = LISTENER
    RDS = ROUTE

    @classmethod
    def short(cls, type_url: str) -> str:
        return cls(type_url).name


#: Istio's listener names, ports and route-configuration name for the sidecar.
OUTBOUND_LISTENER = "virtualOutbound"
INBOUND_LISTENER = "virtualInbound"
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
OUTBOUND_ROUTE = "outbound"

CLUSTER_DOMAIN = "svc.cluster.local"


def fqdn(name: str, namespace: str) -> str:
    """``reviews``, ``default`` → ``reviews.default.svc.cluster.local``."""
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


def outbound_cluster(port: int, subset: str, host: str) -> str:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` (subset empty for the whole service)."""
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    """``inbound|9080||``: the local application behind this sidecar's port 9080."""
    return f"inbound|{port}||"


def inbound_route(port: int) -> str:
    return f"inbound|{port}"


def resource_name(message: Message) -> str:
    """The name a resource is known by in requests (``cluster_name`` for a ClusterLoadAssignment)."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return str(message.cluster_name)
    return str(getattr(message, "name"))  # noqa: B009 - every other xDS resource has a ``name``


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


M = TypeVar("M", bound=Message)


def unpack(packed: any_pb2.Any, message_type: type[M]) -> M:
    """The resource inside ``packed``; an ``XdsError`` when it holds another type."""
    message = message_type()
    if not packed.Unpack(message):
        raise XdsError(f"expected {message_type.DESCRIPTOR.full_name}, got {packed.type_url}")
    return message
