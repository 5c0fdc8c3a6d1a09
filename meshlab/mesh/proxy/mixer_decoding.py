"""Decoding the ``mixer`` HTTP filter (Pilot's :mod:`meshlab.mesh.pilot.mixer_filter`, the classic profile).

The config is an ``xds.type.v3.TypedStruct`` whose ``type_url`` must be
``type.googleapis.com/istio.mixer.v1.config.client.HttpClientConfig`` and whose ``value`` holds Istio's Mixer
client config as a Struct. As for every filter this proxy reads, what it cannot honour is refused (a NACK
naming the field): Check and Report must go to one Mixer address, the fail policy must be ``FAIL_OPEN`` or
``FAIL_CLOSE``, attributes must be strings, and only the ``default`` service config exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict
from xds.type.v3 import typed_struct_pb2

from meshlab.mesh.proxy.decoding import ResourceError

MIXER_FILTER = "mixer"
TYPED_STRUCT_TYPE = "type.googleapis.com/xds.type.v3.TypedStruct"
CLIENT_CONFIG_TYPE = "type.googleapis.com/istio.mixer.v1.config.client.HttpClientConfig"
_ACCEPTED = {"transport", "mixer_attributes", "default_destination_service", "service_configs"}
_TRANSPORT = {"check_cluster", "report_cluster", "network_fail_policy", "report_batch_max_entries",
              "report_batch_max_time"}


@dataclass(frozen=True)
class MixerConfig:
    """What the proxy keeps of a ``mixer`` filter."""

    address: str
    fail_open: bool = False
    check: bool = True  # false on the outbound side: the server's sidecar checks
    batch_entries: int = 100
    batch_time: float = 1.0  # seconds
    attributes: Mapping[str, str] = field(default_factory=dict)  # Pilot's: this workload, the reporter kind

    @property
    def inbound(self) -> bool:
        return self.attributes.get("context.reporter.kind", "inbound") != "outbound"


def _seconds(text: str, where: str) -> float:
    if not text.endswith("s"):
        raise ResourceError(f"{where}: report_batch_max_time {text!r} is not a duration in seconds like 1s")
    try:
        return float(text[:-1])
    except ValueError:
        raise ResourceError(f"{where}: report_batch_max_time {text!r} is not a duration like 1s") from None


def decode_mixer_filter(config: Any, where: str) -> MixerConfig:
    """The ``typed_config`` (an ``Any``) of a ``mixer`` filter → :class:`MixerConfig`."""
    typed = typed_struct_pb2.TypedStruct()
    if config.type_url != TYPED_STRUCT_TYPE or not config.Unpack(typed):
        raise ResourceError(f"{where}: {MIXER_FILTER} config must be a TypedStruct, got {config.type_url}")
    if typed.type_url != CLIENT_CONFIG_TYPE:
        raise ResourceError(f"{where}: {MIXER_FILTER} TypedStruct carries {typed.type_url or '(nothing)'}, "
                            f"not {CLIENT_CONFIG_TYPE}")
    value = MessageToDict(typed.value)
    unknown = sorted(set(value) - _ACCEPTED)
    transport = value.get("transport") or {}
    unknown += sorted(f"transport.{k}" for k in set(transport) - _TRANSPORT)
    if unknown:
        raise ResourceError(f"{where}: {MIXER_FILTER} field(s) {', '.join(unknown)} are not supported")
    address = str(transport.get("check_cluster") or "")
    if not address or str(transport.get("report_cluster") or address) != address:
        raise ResourceError(f"{where}: {MIXER_FILTER} needs one Mixer address in check_cluster and report_cluster")
    policy = str((transport.get("network_fail_policy") or {}).get("policy") or "FAIL_CLOSE")
    if policy not in ("FAIL_OPEN", "FAIL_CLOSE"):
        raise ResourceError(f"{where}: {MIXER_FILTER} network_fail_policy {policy} is not FAIL_OPEN or FAIL_CLOSE")
    services = value.get("service_configs") or {}
    if set(services) - {str(value.get("default_destination_service") or "default")}:
        raise ResourceError(f"{where}: {MIXER_FILTER} supports one service config, the default")
    service: dict[str, Any] = next(iter(services.values()), {})
    attributes: dict[str, str] = {}
    for name, attribute in ((value.get("mixer_attributes") or {}).get("attributes") or {}).items():
        if not isinstance(attribute, dict) or set(attribute) != {"string_value"}:
            raise ResourceError(f"{where}: {MIXER_FILTER} attribute {name} must be a string_value")
        attributes[str(name)] = str(attribute["string_value"])
    return MixerConfig(address=address, fail_open=policy == "FAIL_OPEN",
                       check=not bool(service.get("disable_check_calls", False)),
                       batch_entries=max(1, int(transport.get("report_batch_max_entries") or 100)),
                       batch_time=_seconds(str(transport.get("report_batch_max_time") or "1s"), where),
                       attributes=attributes)
