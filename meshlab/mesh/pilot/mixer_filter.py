"""Pilot's ``mixer`` HTTP filter (the ``classic`` telemetry profile): placeholder, filled in next."""

from __future__ import annotations

from typing import Literal

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshlab.mesh.pilot.model import MeshState
from meshlab.mesh.xds.node import ProxyIdentity

Direction = Literal["inbound", "outbound"]


def filters(state: MeshState, proxy: ProxyIdentity, direction: Direction) -> list[hcm_pb2.HttpFilter]:
    """The Mixer filter for one HTTP connection manager of ``proxy`` (none unless the profile is classic)."""
    return []
