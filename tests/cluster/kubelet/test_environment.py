"""A container's environment: $(VAR) expansion, downward API, ConfigMaps/Secrets, Service variables."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from meshlab.cluster.kubelet import environment
from meshlab.cluster.kubelet.environment import ConfigError, Sources

Obj = dict[str, Any]

CONFIGMAPS = {"settings": {"data": {"mode": "fast", "level": "3"}}}
SECRETS = {"creds": {"data": {"password": base64.b64encode(b"s3cret").decode()}}}
SERVICES = [
    {"metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
    {"metadata": {"name": "redis-primary", "namespace": "shop"},
     "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}]}},
    {"metadata": {"name": "headless", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
    {"metadata": {"name": "elsewhere", "namespace": "other"},
     "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}},
]
SOURCES = Sources(configmap=CONFIGMAPS.get, secret=SECRETS.get, services=SERVICES)


def pod(env: list[Obj] | None = None, env_from: list[Obj] | None = None, links: bool = True) -> Obj:
    container: Obj = {"name": "app", "image": "meshlab/echo", "env": env or [], "envFrom": env_from or [],
                      "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}
    return {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"},
                         "annotations": {"note": "hi"}},
            "spec": {"nodeName": "lab-node", "serviceAccountName": "builder", "enableServiceLinks": links,
                     "containers": [container]}}


def env_of(p: Obj) -> dict[str, str]:
    return environment.container_environment(p, p["spec"]["containers"][0], sources=SOURCES, pod_ip="127.10.0.4",
                                             host_ip="127.0.0.1", apiserver=("127.0.0.1", 6443),
                                             allocatable={"cpu": "2", "memory": "4Gi"})


@pytest.mark.parametrize(("text", "expected"), [
    ("$(A)-$(B)", "1-2"),
    ("$$(A)", "$(A)"),
    ("$(MISSING)", "$(MISSING)"),
    ("$(A", "$(A"),
    ("cost: $5", "cost: $5"),
    ("$", "$"),
    ("$$$(A)", "$1"),
    ("$(B)$(A)", "21"),
], ids=["two", "escaped", "unknown", "unterminated", "dollar", "lone-dollar", "escape-then-ref", "adjacent"])
def test_expansion(text: str, expected: str) -> None:
    assert environment.expand(text, {"A": "1"}, {"B": "2"}) == expected


@pytest.mark.parametrize(("path", "value"), [
    ("metadata.name", "web-1"), ("metadata.namespace", "shop"), ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"), ("metadata.annotations['note']", "hi"), ("metadata.labels['nope']", ""),
    ("metadata.labels", 'app="web"'), ("spec.nodeName", "lab-node"), ("spec.serviceAccountName", "builder"),
    ("status.podIP", "127.10.0.4"), ("status.hostIP", "127.0.0.1"),
])
def test_field_refs(path: str, value: str) -> None:
    env = env_of(pod([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": path}}}]))
    assert env["X"] == value


@pytest.mark.parametrize(("resource", "divisor", "value"), [
    ("limits.memory", "1Mi", "64"), ("requests.cpu", "1m", "250"), ("requests.cpu", "1", "1"),
    ("limits.cpu", "1", "2"),  # no limit: the node's allocatable
])
def test_resource_field_refs(resource: str, divisor: str, value: str) -> None:
    ref = {"resource": resource, "divisor": divisor}
    assert env_of(pod([{"name": "X", "valueFrom": {"resourceFieldRef": ref}}]))["X"] == value


def test_order_precedence_and_references() -> None:
    env = env_of(pod(
        env=[{"name": "MODE", "value": "slow"}, {"name": "URL", "value": "http://$(REDIS_PRIMARY_SERVICE_HOST)/$(MODE)"},
             {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
             {"name": "EMPTY"}],
        env_from=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"configMapRef": {"name": "settings"}}],
    ))
    assert env["URL"] == "http://10.96.0.20/slow"
    assert (env["MODE"], env["CFG_mode"], env["level"], env["PASSWORD"], env["EMPTY"]) == (
        "slow", "fast", "3", "s3cret", "")


def test_service_variables_and_the_lab_apiserver() -> None:
    env = env_of(pod())
    assert env["REDIS_PRIMARY_SERVICE_HOST"] == "10.96.0.20"
    assert env["REDIS_PRIMARY_SERVICE_PORT"] == env["REDIS_PRIMARY_SERVICE_PORT_REDIS"] == "6379"
    assert env["REDIS_PRIMARY_PORT"] == "tcp://10.96.0.20:6379"
    assert env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"] == "10.96.0.20"
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "6443")
    assert not any(k.startswith(("HEADLESS_", "ELSEWHERE_")) for k in env)


def test_without_service_links_only_the_apiserver_is_announced() -> None:
    env = env_of(pod(links=False))
    assert "KUBERNETES_SERVICE_HOST" in env and not any(k.startswith("REDIS") for k in env)


@pytest.mark.parametrize(("var", "message"), [
    ({"configMapKeyRef": {"name": "missing", "key": "k"}}, 'configmap "missing" not found'),
    ({"configMapKeyRef": {"name": "settings", "key": "nope"}}, "couldn't find key nope in ConfigMap shop/settings"),
    ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
    ({"secretKeyRef": {"name": "creds", "key": "nope"}}, "couldn't find key nope in Secret shop/creds"),
    ({"fieldRef": {"fieldPath": "spec.bogus"}}, "unsupported fieldPath: spec.bogus"),
])
def test_configuration_errors_carry_kubernetes_messages(var: Obj, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        env_of(pod([{"name": "X", "valueFrom": var}]))
    assert str(caught.value) == message


@pytest.mark.parametrize("var", [
    {"configMapKeyRef": {"name": "missing", "key": "k", "optional": True}},
    {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}},
])
def test_optional_sources_that_are_absent_define_nothing(var: Obj) -> None:
    assert "X" not in env_of(pod([{"name": "X", "valueFrom": var}]))


def test_command_expansion_uses_the_final_environment() -> None:
    assert environment.expand_command(["serve", "--bind", "$(POD_IP)", "$$(POD_IP)"], {"POD_IP": "127.10.0.4"}) == [
        "serve", "--bind", "127.10.0.4", "$(POD_IP)"]


# -- the lab's pod variables: defined before the container's own list ------------------------------------------

POD_VARIABLES = {"MESHLAB_POD_IP": "127.10.0.4", "MESHLAB_POD_LOCALHOST": "127.10.0.5"}


def lab_env_of(p: Obj) -> dict[str, str]:
    return environment.container_environment(p, p["spec"]["containers"][0], sources=SOURCES, pod_ip="127.10.0.4",
                                             host_ip="127.0.0.1", apiserver=("127.0.0.1", 6443),
                                             pod_variables=POD_VARIABLES)


@pytest.mark.parametrize(("env", "expected"), [
    ([{"name": "UPSTREAM", "value": "http://$(MESHLAB_POD_LOCALHOST):8080"}],
     {"UPSTREAM": "http://127.10.0.5:8080", "MESHLAB_POD_LOCALHOST": "127.10.0.5"}),
    ([{"name": "BIND", "value": "$(MESHLAB_POD_IP):80"}], {"BIND": "127.10.0.4:80", "MESHLAB_POD_IP": "127.10.0.4"}),
    ([{"name": "MESHLAB_POD_IP", "value": "0.0.0.0"}, {"name": "BIND", "value": "$(MESHLAB_POD_IP):80"}],
     {"MESHLAB_POD_IP": "0.0.0.0", "BIND": "0.0.0.0:80"}),
    ([{"name": "BIND", "value": "$(MESHLAB_POD_IP):80"}, {"name": "MESHLAB_POD_IP", "value": "0.0.0.0"}],
     {"MESHLAB_POD_IP": "0.0.0.0", "BIND": "127.10.0.4:80"}),
    ([{"name": "MESHLAB_POD_LOCALHOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
     {"MESHLAB_POD_LOCALHOST": "127.10.0.4"}),
    ([{"name": "ESCAPED", "value": "$$(MESHLAB_POD_LOCALHOST)"}], {"ESCAPED": "$(MESHLAB_POD_LOCALHOST)"}),
], ids=["localhost-expands", "pod-ip-expands", "override-then-reference", "reference-then-override",
        "override-from-downward-api", "escaped"])
def test_pod_variables_come_before_the_containers_list(env: list[Obj], expected: dict[str, str]) -> None:
    got = lab_env_of(pod(env))
    assert {k: got[k] for k in expected} == expected


def test_env_from_may_override_a_pod_variable() -> None:
    p = pod(env_from=[{"configMapRef": {"name": "ip"}, "prefix": "MESHLAB_POD_"}])
    sources = Sources(configmap={"ip": {"data": {"IP": "10.1.2.3"}}}.get, secret=SECRETS.get)
    env = environment.container_environment(p, p["spec"]["containers"][0], sources=sources, pod_ip="127.10.0.4",
                                            host_ip="127.0.0.1", apiserver=("127.0.0.1", 6443),
                                            pod_variables=POD_VARIABLES)
    assert (env["MESHLAB_POD_IP"], env["MESHLAB_POD_LOCALHOST"]) == ("10.1.2.3", "127.10.0.5")
