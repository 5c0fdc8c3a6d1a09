"""/openapi/v3 documents: what kubectl create/apply -f, explain and client-side apply look for."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from meshlab.cluster.openapi import openapi_group_version, openapi_hash, openapi_root, to_openapi3
from meshlab.cluster.resources import Registry, from_crd
from meshlab.cluster.schemas import Schemas

SCHEMAS = Schemas()
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "virtualservices.networking.istio.io"},
    "spec": {"group": "networking.istio.io", "scope": "Namespaced",
             "names": {"plural": "virtualservices", "singular": "virtualservice", "kind": "VirtualService"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "hosts": {"type": "array", "items": {"type": "string"}},
                     "port": {"x-kubernetes-int-or-string": True}}}}}}}]},
}


def registry_with_crd(crd: dict[str, Any] = CRD) -> Registry:
    registry = Registry()
    registry.set_crd(crd["metadata"]["name"], from_crd(crd))
    return registry


def doc(group: str, version: str, registry: Registry | None = None) -> dict[str, Any]:
    found = openapi_group_version(registry or Registry(), SCHEMAS, group, version)
    assert found is not None
    return found


def test_root_lists_every_group_version_with_its_hash() -> None:
    registry = registry_with_crd()
    paths = openapi_root(registry, SCHEMAS)["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/storage.k8s.io/v1", "apis/apiextensions.k8s.io/v1",
            "apis/networking.istio.io/v1"} <= set(paths)
    for key, entry in paths.items():
        group, version = ("", key.split("/")[1]) if key.startswith("api/") else key.split("/")[1:]
        digest = openapi_hash(registry, SCHEMAS, group, version)
        assert entry["serverRelativeURL"] == f"/openapi/v3/{key}?hash={digest}"


@pytest.mark.parametrize(
    ("group", "version", "path", "kind"),
    [("", "v1", "/api/v1/namespaces/{namespace}/pods/{name}", "Pod"),
     ("", "v1", "/api/v1/namespaces/{name}", "Namespace"),
     ("apps", "v1", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "Deployment"),
     ("storage.k8s.io", "v1", "/apis/storage.k8s.io/v1/storageclasses/{name}", "StorageClass")],
    ids=["namespaced core", "cluster-scoped core", "apps", "storage"],
)
def test_patch_operations_let_kubectl_validate_server_side(group: str, version: str, path: str,
                                                           kind: str) -> None:
    patch = doc(group, version)["paths"][path]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": group, "kind": kind, "version": version}
    assert patch["x-kubernetes-action"] == "patch"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert list(patch["requestBody"]["content"]) == PATCH_TYPES


def test_item_and_collection_operations_carry_their_actions() -> None:
    paths = doc("apps", "v1")["paths"]
    item = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    collection = paths["/apis/apps/v1/namespaces/{namespace}/deployments"]
    assert {verb: op["x-kubernetes-action"] for verb, op in item.items() if verb != "parameters"} == {
        "get": "get", "put": "put", "patch": "patch", "delete": "delete"}
    assert {verb: op["x-kubernetes-action"] for verb, op in collection.items() if verb != "parameters"} == {
        "get": "list", "post": "post", "delete": "deletecollection"}
    assert item["get"]["operationId"] == "readAppsV1NamespacedDeployment"
    scale = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale",
                                                        "version": "v1"}


def test_custom_resources_are_patched_without_strategic_merge() -> None:
    patch = doc("networking.istio.io", "v1", registry_with_crd())["paths"][
        "/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "VirtualService"
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]


@pytest.mark.parametrize(
    ("group", "version", "schema", "gvk"),
    [("apps", "v1", "io.k8s.api.apps.v1.Deployment",
      {"group": "apps", "kind": "Deployment", "version": "v1"}),
     ("", "v1", "io.k8s.api.core.v1.PodList", {"group": "", "kind": "PodList", "version": "v1"}),
     ("networking.istio.io", "v1", "io.istio.networking.v1.VirtualService",
      {"group": "networking.istio.io", "kind": "VirtualService", "version": "v1"})],
    ids=["built-in kind", "built-in list", "custom resource"],
)
def test_kind_schemas_carry_a_list_of_gvks_for_explain(group: str, version: str, schema: str,
                                                       gvk: dict[str, str]) -> None:
    schemas = doc(group, version, registry_with_crd())["components"]["schemas"]
    assert gvk in schemas[schema]["x-kubernetes-group-version-kind"]


def test_custom_resource_schema_is_the_crds_with_object_metadata() -> None:
    schema = doc("networking.istio.io", "v1", registry_with_crd())["components"]["schemas"][
        "io.istio.networking.v1.VirtualService"]
    assert schema["properties"]["spec"]["properties"]["port"] == {"x-kubernetes-int-or-string": True}
    assert schema["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node] + [n for value in node.values() for n in _walk(value)]
    if isinstance(node, list):
        return [n for value in node for n in _walk(value)]
    return []


@pytest.mark.parametrize(("group", "version"), [("", "v1"), ("apps", "v1"), ("apiextensions.k8s.io", "v1"),
                                                ("networking.istio.io", "v1")],
                         ids=["core", "apps", "apiextensions", "custom"])
def test_documents_are_self_contained_openapi_3_0(group: str, version: str) -> None:
    document = doc(group, version, registry_with_crd())
    assert document["openapi"] == "3.0.0" and document["info"]["title"]
    components = document["components"]["schemas"]
    for node in _walk(document):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    for schema in components.values():
        for node in _walk(schema):
            assert not isinstance(node.get("type"), list), node


def test_only_reachable_definitions_are_included() -> None:
    names = set(doc("apps", "v1")["components"]["schemas"])
    assert {"io.k8s.api.apps.v1.Deployment", "io.k8s.api.core.v1.PodSpec",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status", "io.k8s.api.autoscaling.v1.Scale"} <= names
    assert "io.k8s.api.core.v1.Service" not in names and "io.k8s.api.batch.v1.Job" not in names


def test_patch_directives_survive_for_client_side_apply() -> None:
    schemas = doc("", "v1")["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert (containers["x-kubernetes-patch-merge-key"], containers["x-kubernetes-patch-strategy"]) == (
        "name", "merge")
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"


@pytest.mark.parametrize(
    ("schema", "converted"),
    [({"type": ["string", "null"]}, {"type": "string"}),
     ({"$ref": "#/$defs/io.k8s.api.core.v1.PodSpec"},
      {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}),
     ({"$ref": "#/$defs/a.B", "description": "d"}, {"allOf": [{"$ref": "#/components/schemas/a.B"}],
                                                    "description": "d"}),
     ({"type": ["object", "null"], "additionalProperties": {"type": ["string", "null"]}},
      {"type": "object", "additionalProperties": {"type": "string"}}),
     ({"type": ["array", "null"], "items": {"type": "integer"}, "x-kubernetes-list-type": "set"},
      {"type": "array", "items": {"type": "integer"}, "x-kubernetes-list-type": "set"})],
    ids=["nullable collapsed", "bare ref", "ref with siblings", "map", "list keeps extensions"],
)
def test_json_schema_nodes_become_openapi_3_0(schema: dict[str, Any], converted: dict[str, Any]) -> None:
    assert to_openapi3(schema) == converted


def test_hash_changes_with_the_crd_and_documents_are_cached() -> None:
    registry = registry_with_crd()
    before = openapi_hash(registry, SCHEMAS, "networking.istio.io", "v1")
    assert openapi_group_version(registry_with_crd(), SCHEMAS, "networking.istio.io", "v1") is \
        openapi_group_version(registry, SCHEMAS, "networking.istio.io", "v1")
    edited = copy.deepcopy(CRD)
    spec_schema = edited["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["gateways"] = {"type": "array", "items": {"type": "string"}}
    after = openapi_hash(registry_with_crd(edited), SCHEMAS, "networking.istio.io", "v1")
    assert before and after and before != after
    assert openapi_hash(registry, SCHEMAS, "apps", "v1") == openapi_hash(Registry(), SCHEMAS, "apps", "v1")


def test_unknown_group_versions_have_no_document() -> None:
    assert openapi_group_version(Registry(), SCHEMAS, "networking.istio.io", "v1") is None
    assert "apis/networking.istio.io/v1" not in openapi_root(Registry(), SCHEMAS)["paths"]


def test_documents_serialise_to_json() -> None:
    assert json.loads(json.dumps(doc("", "v1")))["paths"]
