"""Patching as kube-apiserver does it: JSON patch, merge patch, strategic merge patch and server-side apply,
checked against the real Kubernetes 1.33 schemas that ``kubernetes-validate`` ships."""

from __future__ import annotations

import copy
import importlib.resources
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlab import errors
from meshlab.cluster.patching import (
    PatchNotApplied,
    PatchSchema,
    json_patch,
    merge_patch,
    server_side_apply,
    strategic_merge_patch,
    track_update,
)

_DEFS_FILE = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / "v1.33.0-local"
              / "_definitions.json")
DEFS: dict[str, Any] = json.loads(_DEFS_FILE.read_text())["$defs"]
DEPLOYMENT = PatchSchema(DEFS["io.k8s.api.apps.v1.Deployment"], DEFS)
POD = PatchSchema(DEFS["io.k8s.api.core.v1.Pod"], DEFS)
NO_SCHEMA = PatchSchema(None, {})
T0, T1, T2 = "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z", "2025-01-01T00:02:00Z"


def deployment(**spec_changes: Any) -> dict[str, Any]:
    """A small Deployment as a user writes it; keyword arguments replace top-level spec fields."""
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "log", "image": "busybox", "args": ["tail", "-f"]},
                ]},
            },
        },
    }
    obj["spec"].update(spec_changes)
    return obj


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(obj)["containers"] if c["name"] == name)


def directive_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [k for k in value if k.startswith("$")]
        return own + [d for v in value.values() for d in directive_keys(v)]
    if isinstance(value, list):
        return [d for v in value for d in directive_keys(v)]
    return []


def template(**pod: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": pod}}}


# -- PatchSchema ---------------------------------------------------------------------------------------

CONTAINERS = DEPLOYMENT.field("spec").field("template").field("spec").field("containers")


@pytest.mark.parametrize(
    ("schema", "merge_key", "strategy", "list_type", "keys"),
    [
        pytest.param(CONTAINERS, "name", "merge", "map", ("name",), id="containers by name"),
        pytest.param(CONTAINERS.items().field("ports"), "containerPort", "merge", "map",
                     ("containerPort", "protocol"), id="ports by containerPort"),
        pytest.param(CONTAINERS.items().field("volumeMounts"), "mountPath", "merge", "map", ("mountPath",),
                     id="volumeMounts by mountPath"),
        pytest.param(DEPLOYMENT.field("spec").field("template").field("spec").field("volumes"), "name",
                     "merge,retainKeys", "map", ("name",), id="volumes merge and retain keys"),
        pytest.param(DEPLOYMENT.field("metadata").field("finalizers"), None, "merge", "set", (),
                     id="finalizers a merged set"),
        pytest.param(CONTAINERS.items().field("args"), None, None, "atomic", (), id="args atomic"),
        pytest.param(DEPLOYMENT.field("spec").field("strategy"), None, "retainKeys", None, (),
                     id="strategy retains keys"),
        pytest.param(NO_SCHEMA.field("spec").field("anything"), None, None, None, (), id="no schema"),
    ],
)
def test_schema_exposes_patch_extensions(
    schema: PatchSchema, merge_key: str | None, strategy: str | None, list_type: str | None,
    keys: tuple[str, ...],
) -> None:
    assert (schema.merge_key, schema.strategy, schema.list_type, schema.list_map_keys) == (
        merge_key, strategy, list_type, keys)


def test_schema_follows_maps_and_knows_atomic_ones() -> None:
    labels = DEPLOYMENT.field("metadata").field("labels")
    app = labels.field("app").node
    assert app is not None and app["type"] == ["string", "null"]
    assert DEPLOYMENT.field("spec").field("selector").map_type == "atomic"
    assert not NO_SCHEMA.known


def test_custom_resource_metadata_is_object_meta() -> None:
    crd = PatchSchema({"type": "object", "properties": {"metadata": {"type": "object"}}}, DEFS)
    assert crd.field("metadata").field("finalizers").list_type == "set"


# -- strategic merge patch ---------------------------------------------------------------------------

STRATEGIC_CASES = [
    pytest.param(
        template(containers=[{"name": "web", "image": "nginx:1.26"}]),
        lambda d: container(d, "web").update(image="nginx:1.26"),
        id="container merged by name keeps the others",
    ),
    pytest.param(
        template(containers=[{"name": "sidecar", "image": "envoy"}]),
        lambda d: pod_spec(d)["containers"].insert(0, {"name": "sidecar", "image": "envoy"}),
        id="new container goes first, as kubectl patch docs show",
    ),
    pytest.param(
        template(containers=[{"name": "web",
                              "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]),
        lambda d: container(d, "web").update(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "20"},
                                                  {"name": "C", "value": "3"}]),
        id="env merged by name",
    ),
    pytest.param(
        template(containers=[{"name": "web", "ports": [{"containerPort": 80, "name": "http"},
                                                        {"containerPort": 443}]}]),
        lambda d: container(d, "web").update(ports=[{"containerPort": 80, "name": "http"},
                                                    {"containerPort": 443}]),
        id="ports merged by containerPort",
    ),
    pytest.param(
        template(containers=[{"name": "web", "volumeMounts": [{"mountPath": "/data", "name": "data"}]}],
                 volumes=[{"name": "data", "emptyDir": {}}]),
        lambda d: (container(d, "web").update(volumeMounts=[{"mountPath": "/data", "name": "data"}]),
                   pod_spec(d)["volumes"].insert(0, {"name": "data", "emptyDir": {}})),
        id="volumes and volumeMounts added",
    ),
    pytest.param(
        {"spec": {"replicas": None}, "metadata": {"labels": {"app": None, "tier": "front"}}},
        lambda d: (d["spec"].pop("replicas"), d["metadata"].update(labels={"tier": "front"})),
        id="null deletes a field and a label",
    ),
    pytest.param(
        template(containers=[{"name": "log", "$patch": "delete"}]),
        lambda d: pod_spec(d)["containers"].pop(),
        id="$patch delete removes a list item",
    ),
    pytest.param(
        template(containers=[{"name": "only", "image": "pause"}, {"$patch": "replace"}]),
        lambda d: pod_spec(d).update(containers=[{"name": "only", "image": "pause"}]),
        id="$patch replace in a list replaces the list",
    ),
    pytest.param(
        {"metadata": {"labels": {"$patch": "replace", "new": "x"}}},
        lambda d: d["metadata"].update(labels={"new": "x"}),
        id="$patch replace in a map replaces the map",
    ),
    pytest.param(
        {"spec": {"selector": {"$patch": "delete"}}},
        lambda d: d["spec"].update(selector={}),
        id="$patch delete in a map empties it",
    ),
    pytest.param(
        template(containers=[{"name": "log", "args": ["sleep"]}]),
        lambda d: container(d, "log").update(args=["sleep"]),
        id="list without merge strategy is replaced",
    ),
    pytest.param(
        {"metadata": {"finalizers": ["b", "c"]}},
        lambda d: d["metadata"].update(finalizers=["a", "b", "c"]),
        id="primitive merge list is unioned",
    ),
    pytest.param(
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
        lambda d: d["metadata"].update(finalizers=["b"]),
        id="$deleteFromPrimitiveList removes values",
    ),
    pytest.param(
        {"metadata": {"$setElementOrder/finalizers": ["b", "z", "a"], "finalizers": ["z"]}},
        lambda d: d["metadata"].update(finalizers=["b", "z", "a"]),
        id="$setElementOrder orders a primitive list",
    ),
    pytest.param(
        template(**{"$setElementOrder/containers": [{"name": "log"}, {"name": "web"}]}),
        lambda d: pod_spec(d).update(containers=pod_spec(d)["containers"][::-1]),
        id="$setElementOrder reorders containers",
    ),
    pytest.param(
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        lambda d: d["spec"].update(strategy={"type": "Recreate"}),
        id="$retainKeys clears the other keys",
    ),
    pytest.param(
        template(volumes=[{"name": "cfg", "$retainKeys": ["configMap", "name"], "configMap": {"name": "c"}}]),
        lambda d: pod_spec(d).update(volumes=[{"name": "cfg", "configMap": {"name": "c"}}]),
        id="$retainKeys inside a volume switches its source",
    ),
    pytest.param(
        template(nodeSelector={"disk": "ssd", "zone": None}, containers=[
            {"name": "new", "image": "x", "resources": None, "env": [{"name": "E", "value": None}]}]),
        lambda d: (pod_spec(d).update(nodeSelector={"disk": "ssd"}),
                   pod_spec(d)["containers"].insert(0, {"name": "new", "image": "x",
                                                         "env": [{"name": "E"}]})),
        id="nulls in new values are dropped",
    ),
    pytest.param({}, lambda d: None, id="empty patch changes nothing"),
]


@pytest.mark.parametrize(("patch", "edit"), STRATEGIC_CASES)
def test_strategic_merge_patch(patch: dict[str, Any], edit: Any) -> None:
    live = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}})
    live["metadata"]["finalizers"] = ["a", "b"]
    pod_spec(live)["volumes"] = [{"name": "cfg", "emptyDir": {}}]
    untouched_patch, untouched_live = copy.deepcopy(patch), copy.deepcopy(live)
    expected = copy.deepcopy(live)
    edit(expected)

    result = strategic_merge_patch(live, patch, DEPLOYMENT)

    assert result == expected
    assert directive_keys(result) == []
    assert (patch, live) == (untouched_patch, untouched_live)


def test_without_a_schema_maps_merge_and_lists_are_replaced() -> None:
    live = deployment()
    patch = {"metadata": {"labels": {"tier": "front"}}, **template(containers=[{"name": "only"}])}
    result = strategic_merge_patch(live, patch, NO_SCHEMA)
    assert result["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert pod_spec(result)["containers"] == [{"name": "only"}]


def test_second_kubectl_apply_of_a_changed_deployment() -> None:
    """What kubectl 1.32 ``apply`` sends when the file drops a container and an env var, adds another,
    reorders env and switches the strategy, on a Deployment whose pod also got an injected sidecar."""
    live = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}})
    pod_spec(live)["containers"].append({"name": "istio-proxy", "image": "proxyv2"})
    patch = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}\n"}},
        "spec": {
            "replicas": 3,
            "strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"},
            "template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [
                    {"$setElementOrder/env": [{"name": "C"}, {"name": "A"}],
                     "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                     "image": "nginx:1.26", "name": "web"},
                    {"$patch": "delete", "name": "log"},
                ],
            }},
        },
    }

    result = strategic_merge_patch(live, patch, DEPLOYMENT)

    assert result["spec"]["replicas"] == 3
    assert result["spec"]["strategy"] == {"type": "Recreate"}
    assert [c["name"] for c in pod_spec(result)["containers"]] == ["web", "istio-proxy"]
    assert container(result, "web")["env"] == [{"name": "C", "value": "3"}, {"name": "A", "value": "1"}]
    assert container(result, "web")["image"] == "nginx:1.26"
    assert container(result, "web")["ports"] == [{"containerPort": 80}]
    assert result["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/last-applied-configuration": "{...}\n"}
    assert directive_keys(result) == []


@pytest.mark.parametrize(
    ("patch", "error", "words"),
    [
        pytest.param({"metadata": {"labels": {"$patch": "merge"}}}, errors.InternalError,
                     "unknown patch type: merge", id="[Error] $patch merge on a map"),
        pytest.param(template(containers=[{"name": "web", "$patch": "merge"}]), errors.InternalError,
                     "merging lists cannot yet be specified", id="[Error] $patch merge on a list item"),
        pytest.param(template(containers=[{"name": "web", "$patch": "bogus"}]), errors.InternalError,
                     "unknown patch type: bogus", id="[Error] unknown $patch"),
        pytest.param(template(containers=[{"image": "x"}]), errors.InternalError,
                     "does not contain declared merge key: name", id="[Error] item without merge key"),
        pytest.param(template(**{"$setElementOrder/containers": [{"name": "web"}],
                                 "containers": [{"name": "new"}]}),
                     errors.InternalError, "doesn't match $setElementOrder list",
                     id="[Error] $setElementOrder disagrees with the patch"),
        pytest.param({"spec": {"strategy": {"$retainKeys": "type"}}}, errors.BadRequest,
                     "invalid patch format of retainKeys", id="[Error] $retainKeys not a list"),
        pytest.param({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}},
                     errors.BadRequest, "invalid patch format of retainKeys",
                     id="[Error] patched key missing from $retainKeys"),
        pytest.param({"metadata": {"$deleteFromPrimitiveList": ["a"]}}, errors.BadRequest,
                     "invalid patch format of primitive list", id="[Error] directive without field"),
        pytest.param({"metadata": {"finalizers": [["a"]]}}, PatchNotApplied,
                     "the server rejected our request", id="[Error] list of lists"),
        pytest.param(["not", "a", "map"], errors.BadRequest, "cannot unmarshal array",
                     id="[Error] patch not an object"),
    ],
)
def test_strategic_merge_patch_errors(patch: Any, error: type[errors.ApiError], words: str) -> None:
    live = deployment()
    live["metadata"]["finalizers"] = ["a"]
    with pytest.raises(error) as raised:
        strategic_merge_patch(live, patch, DEPLOYMENT)
    assert words in raised.value.message


# -- JSON patch --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        pytest.param([{"op": "add", "path": "/metadata/labels/tier", "value": "front"}],
                     {"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"replicas": 2}},
                     id="add"),
        pytest.param([{"op": "replace", "path": "/spec/replicas", "value": 5}],
                     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 5}}, id="replace"),
        pytest.param([{"op": "remove", "path": "/metadata/labels/app"}],
                     {"metadata": {"labels": {}}, "spec": {"replicas": 2}}, id="remove"),
        pytest.param([{"op": "test", "path": "/spec/replicas", "value": 2},
                      {"op": "replace", "path": "/spec/replicas", "value": 3}],
                     {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 3}},
                     id="test then replace"),
    ],
)
def test_json_patch(ops: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    obj = {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 2}}
    assert json_patch(obj, ops) == expected
    assert obj == {"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 2}}


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([{"op": "test", "path": "/spec/replicas", "value": 3}], id="[Error] failed test"),
        pytest.param([{"op": "test", "path": "/spec/replicas", "value": True}], id="[Error] true is not 1"),
        pytest.param([{"op": "remove", "path": "/metadata/labels/missing"}], id="[Error] remove missing"),
        pytest.param([{"op": "replace", "path": "/spec/paused", "value": True}],
                     id="[Error] replace missing"),
        pytest.param([{"op": "add", "path": "/status/phase", "value": "x"}], id="[Error] add under missing"),
        pytest.param([{"op": "frobnicate", "path": "/spec"}], id="[Error] unknown op"),
    ],
)
def test_json_patch_that_cannot_apply_is_422_like_kube(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(PatchNotApplied) as raised:
        json_patch({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1}}, ops)
    status = raised.value.to_status()
    assert (status["code"], status["reason"], status["message"]) == (
        422, "Invalid", "the server rejected our request due to an error in our request")
    assert isinstance(raised.value, errors.Invalid)


@pytest.mark.parametrize(
    ("ops", "error"),
    [
        pytest.param({"op": "add", "path": "/a", "value": 1}, errors.BadRequest,
                     id="[Error] object not list"),
        pytest.param(["add"], errors.BadRequest, id="[Error] list of strings"),
        pytest.param([{"op": "replace", "path": "", "value": [1]}], errors.Invalid,
                     id="[Error] result not object"),
    ],
)
def test_json_patch_bad_documents(ops: Any, error: type[errors.ApiError]) -> None:
    with pytest.raises(error):
        json_patch({"a": 1}, ops)


# -- merge patch (RFC 7386 appendix A, the object cases) ----------------------------------------------

@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
    ids=lambda v: json.dumps(v),
)
def test_merge_patch_rfc7386(target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge_patch(target, patch) == expected


@pytest.mark.parametrize("patch", [["c"], None, "bar"],
                         ids=["[Error] array", "[Error] null", "[Error] string"])
def test_merge_patch_must_be_an_object(patch: Any) -> None:
    with pytest.raises(errors.BadRequest):
        merge_patch({"a": "foo"}, patch)


# -- server-side apply -------------------------------------------------------------------------------

def applied(**spec: Any) -> dict[str, Any]:
    """What ``kubectl apply --server-side`` sends for a small Deployment."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                                              "ports": [{"containerPort": 80}]}]}},
        **spec}}


def apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str = "kubectl", *,
          force: bool = False, now: str = T1) -> dict[str, Any]:
    return server_side_apply(live, config, manager=manager, force=force, schema=DEPLOYMENT, now=now)


def owners(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["manager"]: m["fieldsV1"] for m in obj["metadata"].get("managedFields", [])}


def owns(fields: dict[str, Any], *path: str) -> bool:
    node: Any = fields
    for element in path:
        if element not in node:
            return False
        node = node[element]
    return True


def created_by_kubectl_create() -> dict[str, Any]:
    obj = deployment()
    return track_update(None, obj, manager="kubectl-client-side-apply", operation="Update", now=T0,
                        schema=DEPLOYMENT)


def test_apply_creates_with_fieldsv1_as_kube_writes_them() -> None:
    result = apply(None, applied(replicas=2))

    assert result["spec"]["replicas"] == 2
    [entry] = result["metadata"]["managedFields"]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "time", "fieldsType")} == {
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": T1,
        "fieldsType": "FieldsV1"}
    assert entry["fieldsV1"] == {"f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {'k:{"name":"web"}': {
                ".": {}, "f:image": {}, "f:name": {},
                "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
            }}},
        },
    }}


def test_update_records_what_the_writer_set() -> None:
    fields = owners(created_by_kubectl_create())["kubectl-client-side-apply"]
    assert fields["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}
    web = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert web["f:env"]['k:{"name":"A"}'] == {".": {}, "f:name": {}, "f:value": {}}
    log = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"log"}']
    assert log == {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}


def test_reapply_changes_own_fields_without_conflict() -> None:
    first = apply(None, applied(replicas=2))
    second = apply(first, applied(replicas=4), now=T2)
    assert second["spec"]["replicas"] == 4
    assert second["metadata"]["managedFields"][0]["time"] == T2


def test_noop_apply_changes_nothing() -> None:
    first = apply(None, applied(replicas=2))
    assert apply(first, applied(replicas=2), now=T2) == first


@pytest.mark.parametrize(
    ("second", "gone", "kept"),
    [
        pytest.param(applied(), ("spec", "replicas"), None, id="omitted field removed"),
        pytest.param(
            {**applied(), "metadata": {"name": "web"}},
            ("metadata", "labels", "tier"), ("metadata", "labels", "team"),
            id="omitted label removed, label of an updater kept",
        ),
    ],
)
def test_apply_removes_what_it_stops_applying(
    second: dict[str, Any], gone: tuple[str, ...], kept: tuple[str, ...] | None
) -> None:
    first_config = applied(replicas=3)
    first_config["metadata"]["labels"] = {"tier": "front"}
    live = apply(None, first_config)
    edited = copy.deepcopy(live)
    edited["metadata"]["labels"]["team"] = "blue"
    live = track_update(live, edited, manager="kubectl-label", operation="Update", now=T1, schema=DEPLOYMENT)

    result = apply(live, second, now=T2)

    def has(path: tuple[str, ...]) -> bool:
        node: Any = result
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    assert not has(gone)
    if kept:
        assert has(kept)


def test_apply_removes_an_omitted_container_but_keeps_others_containers() -> None:
    config = applied()
    pod_spec(config)["containers"].append({"name": "log", "image": "busybox"})
    live = apply(None, config)
    injected = copy.deepcopy(live)
    pod_spec(injected)["containers"].append({"name": "istio-proxy", "image": "proxyv2"})
    live = track_update(live, injected, manager="sidecar-injector", operation="Update", now=T1,
                        schema=DEPLOYMENT)

    result = apply(live, applied(), now=T2)

    assert [c["name"] for c in pod_spec(result)["containers"]] == ["web", "istio-proxy"]


def test_conflict_with_an_updater_is_409_like_kube() -> None:
    live = created_by_kubectl_create()
    with pytest.raises(errors.Conflict) as raised:
        apply(live, applied(replicas=3))
    status = raised.value.to_status()
    assert status["code"] == 409 and status["reason"] == "Conflict"
    who = '"kubectl-client-side-apply" using apps/v1'
    assert status["message"] == f"Apply failed with 1 conflict: conflict with {who}: .spec.replicas"
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": ".spec.replicas"}]


def test_several_conflicts_are_listed_per_manager() -> None:
    live = created_by_kubectl_create()
    config = applied(replicas=3)
    pod_spec(config)["containers"][0]["image"] = "nginx:2"
    with pytest.raises(errors.Conflict) as raised:
        apply(live, config)
    assert raised.value.message == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-client-side-apply" using apps/v1:\n'
        '- .spec.replicas\n'
        '- .spec.template.spec.containers[name="web"].image')


def test_conflict_between_appliers_names_the_applier() -> None:
    live = apply(None, applied(replicas=3), "alice")
    with pytest.raises(errors.Conflict, match=r'^Apply failed with 1 conflict: conflict with "alice": '
                                              r"\.spec\.replicas$"):
        apply(live, applied(replicas=4), "bob")


def test_force_takes_ownership() -> None:
    live = created_by_kubectl_create()
    result = apply(live, applied(replicas=3), force=True)
    assert result["spec"]["replicas"] == 3
    assert owns(owners(result)["kubectl"], "f:spec", "f:replicas")
    assert not owns(owners(result)["kubectl-client-side-apply"], "f:spec", "f:replicas")


def test_same_value_is_shared_and_survives_one_owner_leaving() -> None:
    live = apply(None, applied(replicas=3), "alice")
    live = apply(live, applied(replicas=3), "bob")
    assert all(owns(f, "f:spec", "f:replicas") for f in owners(live).values())

    alice_leaves = apply(live, applied(), "alice", now=T2)
    assert alice_leaves["spec"]["replicas"] == 3
    both_leave = apply(alice_leaves, applied(), "bob", now=T2)
    assert "replicas" not in both_leave["spec"]


def test_update_after_apply_takes_the_field_and_later_apply_conflicts() -> None:
    live = apply(None, applied(replicas=2))
    edited = copy.deepcopy(live)
    pod_spec(edited)["containers"][0]["image"] = "nginx:hotfix"
    live = track_update(live, edited, manager="kubectl-set", operation="Update", now=T1, schema=DEPLOYMENT)
    assert not owns(owners(live)["kubectl"], "f:spec", "f:template", "f:spec", "f:containers",
                    'k:{"name":"web"}', "f:image")

    config = applied(replicas=2)
    pod_spec(config)["containers"][0]["image"] = "nginx:1.27"
    with pytest.raises(errors.Conflict, match=r'"kubectl-set" using apps/v1: '
                                              r'\.spec\.template\.spec\.containers\[name="web"\]\.image'):
        apply(live, config, now=T2)


def test_conflict_names_the_subresource_a_writer_used() -> None:
    live = apply(None, applied(replicas=2))
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    live = track_update(live, scaled, manager="kubectl", operation="Update", now=T1, schema=DEPLOYMENT,
                        subresource="scale")
    who = '"kubectl" with subresource "scale" using apps/v1'
    with pytest.raises(errors.Conflict, match=f"conflict with {who}: "):
        apply(live, applied(replicas=2), now=T2)


def test_object_never_tracked_belongs_to_before_first_apply() -> None:
    with pytest.raises(errors.Conflict, match='conflict with "before-first-apply" using apps/v1'):
        apply(deployment(), applied(replicas=7))


@pytest.mark.parametrize(
    ("config", "error"),
    [
        pytest.param({**applied(), "metadata": {"name": "web", "managedFields": []}}, errors.BadRequest,
                     id="[Error] managedFields in the config"),
        pytest.param(applied(template={"spec": {"containers": [{"image": "x"}]}}), errors.InternalError,
                     id="[Error] container without its key"),
        pytest.param(applied(template={"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}),
                     errors.InternalError, id="[Error] two containers with one name"),
    ],
)
def test_apply_refuses(config: dict[str, Any], error: type[errors.ApiError]) -> None:
    with pytest.raises(error):
        apply(None, config)


def test_update_removing_a_field_drops_its_ownership_and_reset_clears_all() -> None:
    live = created_by_kubectl_create()
    edited = copy.deepcopy(live)
    del edited["spec"]["replicas"]
    live = track_update(live, edited, manager="kubectl-edit", operation="Update", now=T1, schema=DEPLOYMENT)
    assert not owns(owners(live)["kubectl-client-side-apply"], "f:spec", "f:replicas")
    assert "kubectl-edit" not in owners(live)  # it removed a field and set none

    reset = copy.deepcopy(live)
    reset["metadata"]["managedFields"] = [{}]
    assert "managedFields" not in track_update(live, reset, manager="x", operation="Update", now=T2,
                                               schema=DEPLOYMENT)["metadata"]


CRD_SCHEMA = PatchSchema({"type": "object", "properties": {
    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
    "spec": {"type": "object", "properties": {
        "hosts": {"type": "array", "items": {"type": "string"}},
        "http": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                 "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                            "timeout": {"type": "string"}}}},
    }},
}}, DEFS)


def test_custom_resource_lists_follow_their_list_type() -> None:
    def vs(hosts: list[str], http: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "r", "finalizers": ["x"]}, "spec": {"hosts": hosts, "http": http}}

    live = server_side_apply(None, vs(["a"], [{"name": "r1", "timeout": "1s"}]), manager="alice", force=False,
                             schema=CRD_SCHEMA, now=T0)
    live = server_side_apply(live, vs(["a"], [{"name": "r2"}]), manager="bob", force=False,
                             schema=CRD_SCHEMA, now=T1)

    assert live["spec"]["http"] == [{"name": "r1", "timeout": "1s"}, {"name": "r2"}]
    assert owners(live)["bob"]["f:spec"]["f:http"] == {'k:{"name":"r2"}': {".": {}, "f:name": {}}}
    assert owners(live)["alice"]["f:metadata"] == {"f:finalizers": {'v:"x"': {}}}
    assert owners(live)["alice"]["f:spec"]["f:hosts"] == {}
    with pytest.raises(errors.Conflict, match=r"\.spec\.hosts"):
        server_side_apply(live, vs(["b"], []), manager="bob", force=False, schema=CRD_SCHEMA, now=T2)


# -- properties --------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
plain_keys = st.text("abcmetadspnrl", min_size=1, max_size=8)
objects = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_keys, inner, max_size=4),
    max_leaves=20,
).map(lambda v: {"spec": v})


@settings(max_examples=150, deadline=None)
@given(obj=objects, schema=st.sampled_from([DEPLOYMENT, POD, NO_SCHEMA]))
def test_empty_strategic_patch_is_identity(obj: dict[str, Any], schema: PatchSchema) -> None:
    assert strategic_merge_patch(obj, {}, schema) == obj


@settings(max_examples=100, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=5), json_values, max_size=5),
       patch=st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_merge_patch_never_raises_and_is_idempotent(obj: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(obj, patch)
    assert merge_patch(once, patch) == once
    assert all(k not in once for k, v in patch.items() if v is None)
