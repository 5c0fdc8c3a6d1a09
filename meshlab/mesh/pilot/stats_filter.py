"""The ``istio.stats`` HTTP filter Pilot puts in every HTTP connection manager of the ``modern`` profile.

Istio 1.5+ ("telemetry v2") configures in-proxy metrics with an HTTP filter named ``istio.stats`` whose typed
config is an ``xds.type.v3.TypedStruct`` (Envoy's way of carrying the config of an extension it has no
compiled proto for) with ``type_url: type.googleapis.com/stats.PluginConfig`` (istio/proxy
``extensions/stats/config.proto``) and the plugin config as a ``google.protobuf.Struct``. Istio's generated
config sets few fields; meshlab writes the same shape: ``disable_host_header_fallback`` (Istio sets it on the
inbound side, where the destination service comes from the listener, not the Host header) and
``reporter``: ``UNSPECIFIED`` (a sidecar: ``source`` on the outbound listener, ``destination`` on the inbound
one). The filter sits before the router, so it sees every request the connection manager answers, the RBAC
denials and fault aborts included — as Istio's does.
"""

from __future__ import annotations

from typing import Literal

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from xds.type.v3 import typed_struct_pb2

from meshlab.mesh.pilot.model import MeshState
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import pack

STATS_FILTER = "istio.stats"
PLUGIN_CONFIG_TYPE = "type.googleapis.com/stats.PluginConfig"
PROFILE = "modern"
Direction = Literal["inbound", "outbound"]


def filters(state: MeshState, proxy: ProxyIdentity, direction: Direction) -> list[hcm_pb2.HttpFilter]:
    """The ``istio.stats`` filter for one connection manager of ``proxy``: none unless the profile is modern."""
    del proxy  # every sidecar gets the same config; the proxy knows who it is
    if state.telemetry.profile != PROFILE:
        return []
    return [stats_filter(inbound=direction == "inbound")]


def stats_filter(*, inbound: bool) -> hcm_pb2.HttpFilter:
    """The ``istio.stats`` filter for an inbound (``inbound=True``) or outbound connection manager."""
    typed = typed_struct_pb2.TypedStruct(type_url=PLUGIN_CONFIG_TYPE)
    typed.value.update({"reporter": "UNSPECIFIED", "disable_host_header_fallback": inbound})
    return hcm_pb2.HttpFilter(name=STATS_FILTER, typed_config=pack(typed))
