"""Bad input gets an exact Kubernetes Status and never a 500, and the server keeps serving."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningLab


def call(lab: RunningLab, method: str, path: str, body: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=lab.ca)
    req = urllib.request.Request(f"{lab.url}{path}", data=body, method=method,
                                 headers={"Authorization": f"Bearer {lab.token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, {"raw": raw.decode(errors="replace")}


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code", "reason"),
    [
        ("POST", "/api/v1/namespaces/default/configmaps", b"{not json", "application/json", 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps", b"a: [1,", "application/yaml", 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps", b"[1, 2]", "application/json", 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/configmaps",
         b'{"metadata": {"name": "Bad_Name"}}', "application/json", 422, "Invalid"),
        ("POST", "/apis/apps/v1/namespaces/default/deployments",
         b'{"metadata": {"name": "d"}, "spec": {"replicas": "many"}}', "application/json", 422, "Invalid"),
        ("GET", "/api/v1/namespaces/default/gizmos", None, "application/json", 404, "NotFound"),
        ("GET", "/apis/nosuch.group/v1/things", None, "application/json", 404, "NotFound"),
        ("POST", "/api/v1/namespaces/no-such-ns/configmaps",
         b'{"metadata": {"name": "x"}}', "application/json", 404, "NotFound"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/absent", b"{}",
         "application/merge-patch+json", 404, "NotFound"),
        ("PATCH", "/api/v1/namespaces/default/services/kubernetes", b"{}", "text/plain", 415,
         "UnsupportedMediaType"),
        ("POST", "/api/v1/namespaces/default/configmaps", b"k8s\x00\xff\xff\xff", "application/vnd.kubernetes.protobuf",
         400, "BadRequest"),
    ],
    ids=["malformed JSON", "malformed YAML", "not an object", "bad name", "wrong type", "unknown resource",
         "unknown group", "missing namespace", "patch missing object", "unknown patch type", "garbage protobuf"],
)
def test_bad_requests_get_exact_statuses(lab: RunningLab, method: str, path: str, body: bytes | None,
                                         content_type: str, code: int, reason: str) -> None:
    status, answer = call(lab, method, path, body, content_type)
    assert status == code, answer
    assert answer.get("kind") == "Status" and answer.get("reason") == reason, answer
    if code == 422:
        assert answer["details"]["causes"], answer


def test_invalid_lists_each_bad_field(lab: RunningLab) -> None:
    body = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "Bad Name"}]}}
    status, answer = call(lab, "POST", "/api/v1/namespaces/default/pods", json.dumps(body).encode())
    assert status == 422
    fields = {c["field"] for c in answer["details"]["causes"]}
    assert "spec.containers[0].name" in fields and "spec.containers[0].image" in fields


manifest_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
KINDS = [("/api/v1/namespaces/default/pods", "Pod"), ("/api/v1/namespaces/default/services", "Service"),
         ("/apis/apps/v1/namespaces/default/deployments", "Deployment"),
         ("/api/v1/namespaces/default/configmaps", "ConfigMap")]
FIELDS = ["metadata", "spec", "data", "status", "kind", "apiVersion"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), parts=st.dictionaries(st.sampled_from(FIELDS), manifest_values, max_size=4),
       name=st.text(min_size=0, max_size=20))
def test_random_manifests_never_get_a_500(lab: RunningLab, kind: tuple[str, str], parts: dict[str, Any],
                                          name: str) -> None:
    body = dict(parts)
    if isinstance(body.get("metadata"), dict) or "metadata" not in body:
        body["metadata"] = {**(body.get("metadata") or {}), "name": name}
    status, answer = call(lab, "POST", kind[0], json.dumps(body).encode())
    assert status < 500, answer
    if status >= 400:
        assert answer.get("kind") == "Status", answer
    else:
        path = f"{kind[0]}/{answer['metadata']['name']}"
        assert call(lab, "DELETE", path + "?gracePeriodSeconds=0")[0] == 200
    assert call(lab, "GET", "/api/v1/namespaces/default/configmaps")[0] == 200


VALID_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fuzz", "labels": {"app": "fuzz"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "fuzz"}},
             "template": {"metadata": {"labels": {"app": "fuzz"}},
                          "spec": {"containers": [{"name": "c", "image": "meshlab/echo:1",
                                                   "ports": [{"containerPort": 80}]}]}}},
}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


DEPLOYMENT_PATHS = [p for p in _paths(VALID_DEPLOYMENT) if p]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(DEPLOYMENT_PATHS), value=manifest_values)
def test_mutated_deployments_never_get_a_500(lab: RunningLab, path: tuple[Any, ...], value: Any) -> None:
    import copy

    body = copy.deepcopy(VALID_DEPLOYMENT)
    cur: Any = body
    for step in path[:-1]:
        cur = cur[step]
    cur[path[-1]] = value
    status, answer = call(lab, "POST", "/apis/apps/v1/namespaces/default/deployments", json.dumps(body).encode())
    assert status < 500, answer
    if status < 300:
        name = answer["metadata"]["name"]
        assert call(lab, "DELETE", f"/apis/apps/v1/namespaces/default/deployments/{name}")[0] == 200
    else:
        assert answer.get("kind") == "Status", answer
    assert call(lab, "GET", "/apis/apps/v1/namespaces/default/deployments")[0] == 200
