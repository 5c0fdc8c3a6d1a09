"""Decoding the ``istio.stats`` HTTP filter (Pilot's :mod:`meshlab.mesh.pilot.stats_filter`).

The filter's config is an ``xds.type.v3.TypedStruct`` whose ``type_url`` must be
``type.googleapis.com/stats.PluginConfig`` and whose ``value`` holds Istio's plugin config as a Struct. As for
every filter this proxy reads, what it cannot honour is refused (a NACK naming the field) rather than ignored:
custom ``metrics``/``definitions`` (Istio's metric customization), a gateway ``reporter``, a ``stat_prefix``
other than ``istio`` (the metric names would change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from xds.type.v3 import typed_struct_pb2

from meshlab.mesh.proxy.decoding import ResourceError

STATS_FILTER = "istio.stats"
TYPED_STRUCT_TYPE = "type.googleapis.com/xds.type.v3.TypedStruct"
PLUGIN_CONFIG_TYPE = "type.googleapis.com/stats.PluginConfig"
_ACCEPTED = {"reporter", "disable_host_header_fallback", "stat_prefix", "debug"}


@dataclass(frozen=True)
class StatsConfig:
    """What the proxy keeps of an ``istio.stats`` filter: that it is there, and its one honoured switch."""

    disable_host_header_fallback: bool = False


def decode_stats_filter(config: Any, where: str) -> StatsConfig:
    """The ``typed_config`` (an ``Any``) of an ``istio.stats`` filter → :class:`StatsConfig`."""
    typed = typed_struct_pb2.TypedStruct()
    if config.type_url != TYPED_STRUCT_TYPE or not config.Unpack(typed):
        raise ResourceError(f"{where}: {STATS_FILTER} config must be a TypedStruct, got {config.type_url}")
    if typed.type_url != PLUGIN_CONFIG_TYPE:
        raise ResourceError(f"{where}: {STATS_FILTER} TypedStruct carries {typed.type_url or '(nothing)'}, "
                            f"not {PLUGIN_CONFIG_TYPE}")
    value = MessageToDict(typed.value)
    unknown = sorted(set(value) - _ACCEPTED)
    if unknown:
        raise ResourceError(f"{where}: {STATS_FILTER} field(s) {', '.join(unknown)} are not supported")
    if value.get("reporter", "UNSPECIFIED") != "UNSPECIFIED":
        raise ResourceError(f"{where}: {STATS_FILTER} reporter {value['reporter']} is not supported (sidecars only)")
    if value.get("stat_prefix", "istio") != "istio":
        raise ResourceError(f"{where}: {STATS_FILTER} stat_prefix must be istio")
    return StatsConfig(disable_host_header_fallback=bool(value.get("disable_host_header_fallback", False)))
