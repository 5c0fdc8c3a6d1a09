"""Service-account tokens and the downward API in volumes: projected tokens verified with the lab's
signer, their rotation, the ``kube-api-access-*`` volume a real cluster injects, and pod metadata as files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from meshlab.cluster.kubelet.volumes import SERVICE_ACCOUNT_PATH, Mount, access_volume_name
from tests.cluster.kubelet.volume_lab import CONFIG, SECRET, Api, Env, new_env, no_token, open_api, user_files


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from open_api(tmp_path_factory)


@pytest.fixture()
def env(api: Api) -> Env:
    return new_env(api)


# -- downwardAPI -----------------------------------------------------------------------------------------------

DOWNWARD_CASES = [
    ("metadata.name", {"fieldRef": {"fieldPath": "metadata.name"}}, "{name}"),
    ("metadata.namespace", {"fieldRef": {"fieldPath": "metadata.namespace"}}, "{namespace}"),
    ("metadata.labels as key=\"value\" lines", {"fieldRef": {"fieldPath": "metadata.labels"}},
     'app="demo"\ntier="web \\"front\\""'),
    ("one annotation", {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}, "blue"),
    ("limits.cpu in millicores", {"resourceFieldRef": {"containerName": "app", "resource": "limits.cpu",
                                                        "divisor": "1m"}}, "500"),
    ("limits.cpu rounds up to whole cores", {"resourceFieldRef": {"containerName": "app",
                                                                  "resource": "limits.cpu"}}, "1"),
    ("requests.memory in Mi", {"resourceFieldRef": {"containerName": "app", "resource": "requests.memory",
                                                     "divisor": "1Mi"}}, "64"),
    ("unset memory limit: the node's memory", {"resourceFieldRef": {"containerName": "app",
                                                                    "resource": "limits.memory"}}, "{memory}"),
]


@pytest.mark.parametrize(("ref", "expected"), [c[1:] for c in DOWNWARD_CASES], ids=[c[0] for c in DOWNWARD_CASES])
def test_downward_api(env: Env, ref: dict[str, Any], expected: str) -> None:
    pod = env.pod([{"name": "info", "downwardAPI": {"items": [{"path": "value", **ref}]}}], **no_token(
        container={"resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "250m", "memory": "64Mi"}}}))
    pod["metadata"]["labels"]["tier"] = 'web "front"'
    pod["metadata"]["annotations"] = {"team": "blue"}
    root = env.setup(pod)["info"]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    want = expected.format(name=pod["metadata"]["name"], namespace=env.namespace, memory=memory)
    assert (root / "value").read_text() == want


def test_downward_api_refuses_env_only_fields(env: Env) -> None:
    pod = env.pod([{"name": "info", "downwardAPI": {"items": [
        {"path": "node", "fieldRef": {"fieldPath": "spec.nodeName"}}]}}], **no_token())
    failure = env.failure(pod)
    assert 'fieldPath "spec.nodeName" is not supported in a volume' in failure.message


# -- projected and service-account tokens ----------------------------------------------------------------------


def test_projected_volume_has_every_source(env: Env) -> None:
    env.create("configmaps", CONFIG)
    env.create("secrets", SECRET)
    pod = env.pod([{"name": "all", "projected": {"defaultMode": 0o640, "sources": [
        {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "vault/token"}},
        {"configMap": {"name": "settings", "items": [{"key": "a.conf", "path": "a.conf"}]}},
        {"secret": {"name": "creds", "items": [{"key": "user", "path": "user", "mode": 0o400}]}},
        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    ]}}], **no_token())
    root = env.setup(pod)["all"]
    files = user_files(root)
    token = files.pop("vault/token")
    assert files == {"a.conf": (b"alpha", 0o640), "user": (b"admin", 0o400), "labels": (b'app="demo"', 0o640)}
    assert token[1] == 0o640
    claims = env.api.signer.verify(token[0].decode(), audiences=["vault"])
    assert claims["sub"] == f"system:serviceaccount:{env.namespace}:default"
    assert claims["kubernetes.io"]["pod"] == {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 600


def test_projected_token_needs_its_service_account(env: Env) -> None:
    pod = env.pod([{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}],
                  **no_token(serviceAccountName="robot"))
    assert 'failed to fetch token: serviceaccounts "robot" not found' in env.failure(pod).message


def test_token_rotates_at_80_percent_of_its_life(env: Env) -> None:
    now = [1_900_000_000.0]
    env.manager.clock = lambda: now[0]
    pod = env.pod([{"name": "tok", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 1000}}]}}], **no_token())
    root = env.setup(pod)["tok"]
    first = (root / "token").read_text()
    now[0] += 799
    env.run(env.manager.refresh(pod, env.pod_dir))
    assert (root / "token").read_text() == first, "a token at 79.9% of its life is kept"
    now[0] += 2
    env.run(env.manager.refresh(pod, env.pod_dir))
    second = (root / "token").read_text()
    assert second != first
    claims = env.api.signer.verify(second, now=now[0])
    assert claims["iat"] == int(now[0]) and claims["exp"] == int(now[0]) + 1000


def test_default_token_volume_makes_in_cluster_config_work(env: Env) -> None:
    pod = env.pod([])
    paths = env.setup(pod)
    name = access_volume_name(pod)
    assert list(paths) == [name] and name.startswith("kube-api-access-")
    [mount] = env.manager.mounts_for(pod, pod["spec"]["containers"][0], paths)
    assert mount == Mount(paths[name], SERVICE_ACCOUNT_PATH, True)
    root = paths[name]
    assert (root / "namespace").read_text() == env.namespace
    assert (root / "ca.crt").read_bytes() == (env.api.lab_dir / "pki" / "ca.crt").read_bytes()
    claims = env.api.signer.verify((root / "token").read_text())
    assert claims["sub"] == f"system:serviceaccount:{env.namespace}:default"


def test_kube_root_ca_config_map_wins_over_the_lab_ca(env: Env) -> None:
    env.create("configmaps", {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "PUBLISHED"}})
    pod = env.pod([])
    paths = env.setup(pod)
    assert (paths[access_volume_name(pod)] / "ca.crt").read_text() == "PUBLISHED"


@pytest.mark.parametrize(("pod_spec", "sa_automount", "container_mounts", "injected"), [
    ({}, None, [], True),
    ({"automountServiceAccountToken": False}, None, [], False),
    ({}, False, [], False),
    ({"automountServiceAccountToken": True}, False, [], True),
    ({}, None, [{"name": "own", "mountPath": SERVICE_ACCOUNT_PATH}], False),
], ids=["by default", "pod opts out", "service account opts out", "pod overrides the service account",
        "container mounts its own"])
def test_when_the_token_volume_is_injected(env: Env, pod_spec: dict[str, Any], sa_automount: bool | None,
                                           container_mounts: list[dict[str, Any]], injected: bool) -> None:
    if sa_automount is not None:
        env.create("serviceaccounts", {"metadata": {"name": "robot"}, "automountServiceAccountToken": sa_automount})
        pod_spec = {**pod_spec, "serviceAccountName": "robot"}
    volumes = [{"name": "own", "emptyDir": {}}] if container_mounts else []
    pod = env.pod(volumes, container_mounts, **pod_spec)
    paths = env.setup(pod)
    assert (access_volume_name(pod) in paths) is injected
    targets = [m.target for m in env.manager.mounts_for(pod, pod["spec"]["containers"][0], paths)]
    assert targets.count(SERVICE_ACCOUNT_PATH) == (1 if injected or container_mounts else 0)


