"""Sidecar injection as data: both interception modes, idempotence, opt-out, the app moved to the
pod-localhost address, probes untouched, manifests of every workload kind, and patches that reproduce the
injected pod."""

from __future__ import annotations

import copy
import json
import shlex
from typing import Any

import jsonpatch
import pytest

from meshlab.errors import MeshlabError
from meshlab.mesh.injection import (
    InjectionConfig,
    config_from_mesh,
    inject_manifest,
    inject_pod,
    inject_pod_spec,
    iptables_rules,
    jsonpatch_for,
    workload_name,
)

ADDRESS = InjectionConfig(mode="address")
IPTABLES = InjectionConfig(mode="iptables")
PROBE = {"httpGet": {"path": "/health", "port": 9080}, "periodSeconds": 2}


def app_spec(**extra: Any) -> dict[str, Any]:
    return {"serviceAccountName": "bookstore-details", "containers": [{
        "name": "details", "image": "meshlab/details:1", "command": ["meshlab", "app", "details"],
        "ports": [{"containerPort": 9080}], "readinessProbe": copy.deepcopy(PROBE), **extra}]}


META = {"labels": {"app": "details", "version": "v1"}}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v.get("value", v.get("valueFrom")) for v in container.get("env") or []}


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in spec["containers"] if c["name"] == name)


@pytest.mark.parametrize(("config", "init_containers", "app_address"), [
    (ADDRESS, [], "$(MESHLAB_POD_LOCALHOST)"),
    (IPTABLES, ["istio-init"], "127.0.0.1"),
], ids=["address", "iptables"])
def test_the_sidecar_is_added_with_its_identity(config: InjectionConfig, init_containers: list[str],
                                                app_address: str) -> None:
    spec = inject_pod_spec(app_spec(), META, config=config)
    assert [c["name"] for c in spec["containers"]] == ["details", "istio-proxy"]
    assert [c["name"] for c in spec.get("initContainers") or []] == init_containers
    proxy = container(spec, "istio-proxy")
    assert proxy["image"] == "meshlab/proxyv2:1"
    assert proxy["command"][:4] == ["meshlab", "proxy", "--xds-address", "istiod.istio-system.svc:15010"]
    env = env_of(proxy)
    assert env["INSTANCE_IP"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}
    assert env["POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["SERVICE_ACCOUNT"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    assert json.loads(env["ISTIO_METAJSON_LABELS"]) == {"app": "details", "version": "v1"}
    assert env["APP_ADDRESS"] == app_address
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15000}


def test_the_proxy_reads_the_identity_the_injector_wrote() -> None:
    from meshlab.mesh.proxy.main import identity_from_env

    proxy = container(inject_pod_spec(app_spec(), META, config=ADDRESS), "istio-proxy")
    # What the kubelet would resolve: the downward-API fields, $(MESHLAB_POD_LOCALHOST) expanded.
    resolved = {k: v for k, v in env_of(proxy).items() if isinstance(v, str)}
    resolved.update(POD_NAME="details-v1-abc", POD_NAMESPACE="shop", INSTANCE_IP="127.3.0.7",
                    APP_ADDRESS="127.131.0.7")
    identity = identity_from_env(resolved)
    assert (identity.ip, identity.pod, identity.namespace, identity.app_address) == (
        "127.3.0.7", "details-v1-abc", "shop", "127.131.0.7")
    assert identity.labels == {"app": "details", "version": "v1"}


@pytest.mark.parametrize(("app_env", "expected"), [
    ([], {}),
    ([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
     {"POD_IP": "$(MESHLAB_POD_LOCALHOST)"}),
    ([{"name": "POD_IP", "value": "10.0.0.1"}], {"POD_IP": "10.0.0.1"}),  # not the downward API: left alone
    ([{"name": "HTTP_PROXY", "value": "http://elsewhere:3128"}], {"HTTP_PROXY": "http://$(INSTANCE_IP):15001"}),
], ids=["no-env", "downward-pod-ip-rewritten", "literal-pod-ip-kept", "own-http-proxy-replaced"])
def test_address_mode_moves_the_app_to_pod_localhost(app_env: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    spec = inject_pod_spec(app_spec(env=app_env), META, config=ADDRESS)
    app = container(spec, "details")
    names = [v["name"] for v in app["env"]]
    assert names[0] == "INSTANCE_IP", "INSTANCE_IP must come first: $(INSTANCE_IP) expands only earlier variables"
    assert len(names) == len(set(names))
    env = env_of(app)
    assert env["MESHLAB_POD_IP"] == "$(MESHLAB_POD_LOCALHOST)"
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://$(INSTANCE_IP):15001"
    assert env["NO_PROXY"].split(",")[:3] == ["$(MESHLAB_POD_LOCALHOST)", "$(INSTANCE_IP)", "127.0.0.1"]
    for name, value in expected.items():
        assert env[name] == value


@pytest.mark.parametrize("config", [ADDRESS, IPTABLES], ids=["address", "iptables"])
def test_probes_and_ports_are_untouched(config: InjectionConfig) -> None:
    app = container(inject_pod_spec(app_spec(livenessProbe=copy.deepcopy(PROBE)), META, config=config), "details")
    assert app["readinessProbe"] == PROBE and app["livenessProbe"] == PROBE
    assert app["ports"] == [{"containerPort": 9080}]


def test_iptables_mode_leaves_the_app_alone() -> None:
    spec = inject_pod_spec(app_spec(), META, config=IPTABLES)
    assert container(spec, "details") == app_spec()["containers"][0]
    assert container(spec, "istio-proxy")["securityContext"]["runAsUser"] == 1337


def test_iptables_init_container_redirects_as_istio_iptables_does() -> None:
    init = inject_pod_spec(app_spec(initContainers=None), META, config=IPTABLES)["initContainers"][0]
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert init["securityContext"]["runAsUser"] == 0
    script = init["command"][2]
    rules = [" ".join(r) for r in iptables_rules()]
    assert [shlex.join(shlex.split(line)) for line in script.splitlines()[1:]] == [
        shlex.join(r) for r in iptables_rules()]
    assert "iptables -t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in rules
    assert "iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    # The proxy's own traffic returns before the catch-all redirect, or it would loop into itself.
    own = rules.index("iptables -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN")
    assert own < rules.index("iptables -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    # The readiness probe on the admin port is not captured.
    assert rules.index("iptables -t nat -A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN") < rules.index(
        "iptables -t nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")


@pytest.mark.parametrize("config", [ADDRESS, IPTABLES], ids=["address", "iptables"])
def test_injecting_twice_changes_nothing(config: InjectionConfig) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": copy.deepcopy(META), "spec": app_spec()}
    once = inject_pod(pod, config=config)
    assert json.loads(once["metadata"]["annotations"]["sidecar.istio.io/status"])["containers"] == ["istio-proxy"]
    assert inject_pod(once, config=config) == once
    assert jsonpatch_for(once, inject_pod(once, config=config)) == []


@pytest.mark.parametrize("metadata", [
    {"annotations": {"sidecar.istio.io/inject": "false"}},
    {"labels": {"sidecar.istio.io/inject": "false"}},
], ids=["annotation", "label"])
def test_opted_out_pods_are_not_injected(metadata: dict[str, Any]) -> None:
    assert inject_pod_spec(app_spec(), metadata, config=ADDRESS) == app_spec()


def test_host_network_pods_are_not_injected() -> None:
    spec = {**app_spec(), "hostNetwork": True}
    assert inject_pod_spec(spec, META, config=ADDRESS) == spec


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"labels": {"pod-template-hash": "5d8f7"}, "generateName": "details-v1-5d8f7-",
      "ownerReferences": [{"kind": "ReplicaSet", "name": "details-v1-5d8f7", "controller": True}]}, "details-v1"),
    ({"ownerReferences": [{"kind": "DaemonSet", "name": "agent", "controller": True}]}, "agent"),
    ({"name": "debug"}, "debug"),
    ({"generateName": "job-"}, "job"),
], ids=["deployment-via-replicaset", "daemonset", "bare-pod", "generate-name"])
def test_workload_name_as_istio_derives_it(metadata: dict[str, Any], expected: str) -> None:
    assert workload_name(metadata) == expected


def test_a_manifest_gets_sidecars_in_every_pod_template() -> None:
    template = {"metadata": copy.deepcopy(META), "spec": app_spec()}
    opted_out = {"name": "rs", "annotations": {"sidecar.istio.io/inject": "false"}}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details"}, "spec": {"ports": [{"port": 9080}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "details-v1"},
         "spec": {"template": copy.deepcopy(template)}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"template": copy.deepcopy(template)}},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": opted_out,
         "spec": {"template": copy.deepcopy(template)}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **copy.deepcopy(META)}, "spec": app_spec()},
    ]
    out = inject_manifest([d for d in docs if d is not None] + [{}], config=ADDRESS)
    assert [d["kind"] for d in out] == ["Service", "Deployment", "DaemonSet", "ReplicaSet", "Pod"]
    assert out[0] == docs[0]
    names = [[c["name"] for c in (d["spec"].get("template") or d)["spec"]["containers"]] for d in out[1:]]
    assert names == [["details", "istio-proxy"], ["details", "istio-proxy"], ["details"], ["details", "istio-proxy"]]
    workload = env_of(container(out[1]["spec"]["template"]["spec"], "istio-proxy"))["ISTIO_META_WORKLOAD_NAME"]
    assert workload == "details-v1"
    assert docs[1] == {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "details-v1"},
                       "spec": {"template": template}}, "the input is not modified"


@pytest.mark.parametrize("config", [ADDRESS, IPTABLES], ids=["address", "iptables"])
def test_the_patch_turns_the_pod_into_the_injected_pod(config: InjectionConfig) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "details-", **copy.deepcopy(META)},
           "spec": app_spec(env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])}
    injected = inject_pod(pod, config=config)
    assert jsonpatch.apply_patch(pod, jsonpatch_for(pod, injected)) == injected


@pytest.mark.parametrize(("data", "expected"), [
    (None, InjectionConfig()),
    ({"mode": "iptables"}, IPTABLES),
    ({"mode": "address", "proxyImage": "me/proxy:2"}, InjectionConfig(image="me/proxy:2")),
], ids=["defaults", "iptables", "image"])
def test_mesh_config(data: dict[str, str] | None, expected: InjectionConfig) -> None:
    assert config_from_mesh(data) == expected


def test_mesh_config_refuses_an_unknown_mode() -> None:
    with pytest.raises(MeshlabError, match="mode must be one of address, iptables"):
        config_from_mesh({"mode": "tproxy"})


@pytest.mark.parametrize(("mode", "init_containers"), [("address", None), ("iptables", ["istio-init"])],
                         ids=["address", "iptables"])
def test_meshlab_inject_writes_the_injected_manifest(tmp_path: Any, capsys: pytest.CaptureFixture[str], mode: str,
                                                     init_containers: list[str] | None) -> None:
    import yaml

    from meshlab import cli

    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "details-v1"},
         "spec": {"template": {"metadata": META, "spec": app_spec()}}}]))
    assert cli.main(["inject", "-f", str(manifest), "--mode", mode]) == 0
    service, deployment = yaml.safe_load_all(capsys.readouterr().out)
    assert service == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details"}}
    spec = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["details", "istio-proxy"]
    assert [c["name"] for c in spec.get("initContainers") or []] == (init_containers or [])
