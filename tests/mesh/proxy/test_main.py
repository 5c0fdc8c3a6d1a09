"""``meshlab proxy``'s identity, read from the environment Istio's injector gives istio-proxy."""

from __future__ import annotations

import pytest

from meshlab.errors import XdsError
from meshlab.mesh.proxy.main import identity_from_env

INJECTED = {"POD_NAME": "reviews-v1-abc", "POD_NAMESPACE": "default", "INSTANCE_IP": "127.1.0.7",
            "SERVICE_ACCOUNT": "bookinfo-reviews", "ISTIO_META_WORKLOAD_NAME": "reviews-v1",
            "ISTIO_METAJSON_LABELS": '{"app": "reviews", "version": "v1"}', "APP_ADDRESS": "127.1.0.7:19080"}


def test_injected_environment_gives_istios_node_id_and_metadata() -> None:
    identity = identity_from_env(INJECTED)
    assert identity.node_id == "sidecar~127.1.0.7~reviews-v1-abc.default~default.svc.cluster.local"
    assert identity.labels == {"app": "reviews", "version": "v1"}
    assert (identity.service_account, identity.workload_name, identity.app_address) == (
        "bookinfo-reviews", "reviews-v1", "127.1.0.7:19080")


@pytest.mark.parametrize(("env", "pod_ip", "message"), [
    ({k: v for k, v in INJECTED.items() if k != "POD_NAME"}, None, "POD_NAME"),
    ({k: v for k, v in INJECTED.items() if k != "INSTANCE_IP"}, None, "INSTANCE_IP"),
    ({**INJECTED, "ISTIO_METAJSON_LABELS": "app=reviews"}, None, "not JSON"),
    ({**INJECTED, "ISTIO_METAJSON_LABELS": '["app"]'}, None, "JSON object"),
], ids=["no-pod-name", "no-pod-ip", "labels-not-json", "labels-not-an-object"])
def test_missing_or_bad_identity_is_named(env: dict[str, str], pod_ip: str | None, message: str) -> None:
    with pytest.raises(XdsError, match=message):
        identity_from_env(env, pod_ip=pod_ip)


def test_pod_ip_flag_wins_over_the_environment() -> None:
    assert identity_from_env(INJECTED, pod_ip="127.1.0.9").ip == "127.1.0.9"
