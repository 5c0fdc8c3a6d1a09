"""The ``mixer`` HTTP filter Pilot puts in every HTTP connection manager of the ``classic`` profile.

Istio 0.8-1.4 configured the sidecar's Mixer client with an HTTP filter named ``mixer`` whose config was
``istio.mixer.v1.config.client.HttpClientConfig`` (istio/api ``mixer/v1/config/client/client_config.proto``),
carried here, as Envoy carries the config of an extension it has no compiled proto for, in an
``xds.type.v3.TypedStruct`` whose ``value`` is the config as a Struct. meshlab writes the fields it uses, in
Istio's names: ``transport`` (``check_cluster`` / ``report_cluster`` — Istio named Envoy clusters leading to
``istio-policy`` / ``istio-telemetry``; meshlab's proxy dials the Mixer *address* from the mesh config's
``mixerAddress`` directly —, ``network_fail_policy.policy`` ``FAIL_OPEN`` or ``FAIL_CLOSE`` from
``policyCheckFailOpen``, and the report batching ``report_batch_max_entries`` / ``report_batch_max_time``),
``mixer_attributes`` (the attributes Pilot knows about this workload: its name, namespace, labels and
principal as ``destination.*`` on the inbound side and ``source.*`` on the outbound side, plus
``context.reporter.kind``), and ``service_configs.default.disable_check_calls``: true on the outbound side,
as Istio 1.1+ did (policy is checked once, by the server's sidecar; both sides report).
"""

from __future__ import annotations

from typing import Literal

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from xds.type.v3 import typed_struct_pb2

from meshlab.mesh.pilot.model import MeshState, TelemetrySettings
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import pack

MIXER_FILTER = "mixer"
CLIENT_CONFIG_TYPE = "type.googleapis.com/istio.mixer.v1.config.client.HttpClientConfig"
PROFILE = "classic"
REPORT_BATCH_MAX_ENTRIES = 100  # Istio's default batch: 100 reports or 1 s, whichever comes first
REPORT_BATCH_MAX_TIME = "1s"
Direction = Literal["inbound", "outbound"]


def filters(state: MeshState, proxy: ProxyIdentity, direction: Direction) -> list[hcm_pb2.HttpFilter]:
    """The ``mixer`` filter for one connection manager of ``proxy``: none unless the profile is classic."""
    if state.telemetry.profile != PROFILE:
        return []
    return [mixer_filter(state.telemetry, proxy, inbound=direction == "inbound", trust_domain=state.trust_domain)]


def workload_attributes(proxy: ProxyIdentity, side: str, trust_domain: str) -> dict[str, str]:
    """What Pilot knows about ``proxy``'s workload, as ``<side>.*`` attributes (labels flattened)."""
    attributes = {
        f"{side}.uid": f"kubernetes://{proxy.pod}.{proxy.namespace}",
        f"{side}.workload.name": proxy.workload_name or proxy.pod,
        f"{side}.workload.namespace": proxy.namespace,
        f"{side}.principal": f"spiffe://{trust_domain}/ns/{proxy.namespace}/sa/{proxy.service_account or 'default'}",
    }
    attributes.update({f"{side}.labels.{key}": value for key, value in sorted(proxy.labels.items())})
    return attributes


def mixer_filter(settings: TelemetrySettings, proxy: ProxyIdentity, *, inbound: bool,
                 trust_domain: str = "cluster.local") -> hcm_pb2.HttpFilter:
    """The ``mixer`` filter of an inbound (``inbound=True``) or outbound connection manager."""
    attributes = {"context.reporter.kind": "inbound" if inbound else "outbound",
                  **workload_attributes(proxy, "destination" if inbound else "source", trust_domain)}
    typed = typed_struct_pb2.TypedStruct(type_url=CLIENT_CONFIG_TYPE)
    typed.value.update({
        "transport": {
            "check_cluster": settings.mixer_address,
            "report_cluster": settings.mixer_address,
            "network_fail_policy": {"policy": "FAIL_OPEN" if settings.fail_open else "FAIL_CLOSE"},
            "report_batch_max_entries": REPORT_BATCH_MAX_ENTRIES,
            "report_batch_max_time": REPORT_BATCH_MAX_TIME,
        },
        "mixer_attributes": {"attributes": {name: {"string_value": value} for name, value in attributes.items()}},
        "default_destination_service": "default",
        "service_configs": {"default": {"disable_check_calls": not inbound}},
    })
    return hcm_pb2.HttpFilter(name=MIXER_FILTER, typed_config=pack(typed))
