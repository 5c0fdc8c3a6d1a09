"""``/openapi/v3``: the documents ``kubectl create/apply -f``, ``explain`` and client-side apply read.

Kubernetes publishes one OpenAPI 3.0 document per group-version (KEP-2896 "OpenAPI v3"). The root,
``GET /openapi/v3``, lists them as ``{"paths": {"apis/apps/v1": {"serverRelativeURL":
"/openapi/v3/apis/apps/v1?hash=<hex>"}}}``; clients cache each document by that hash, so the hash changes
whenever the document does (a CRD is added or edited). kubectl looks in a document for a PATCH operation
whose ``x-kubernetes-group-version-kind`` names the kind and which accepts a ``fieldValidation`` parameter
(else it falls back to client-side validation with ``/openapi/v2``), uses the PATCH request body's content
types to decide whether it may send a strategic merge patch, and walks ``components.schemas`` (found by
their list-valued ``x-kubernetes-group-version-kind``) for ``explain`` and for the patch directives
(``x-kubernetes-patch-merge-key``/``-strategy``). Built-in schemas come from the JSON-schema definitions
(``#/$defs/`` references become ``#/components/schemas/``, ``["string", "null"]`` types become ``string``,
a reference with siblings becomes ``allOf: [{$ref}]`` as in the real documents); custom resources get
their CRD's ``openAPIV3Schema`` with ``apiVersion``, ``kind`` and ``metadata`` added.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from meshlab.cluster.resources import Registry, ResourceType
from meshlab.cluster.schemas import Schemas

_REF = "#/$defs/"
_COMPONENT = "#/components/schemas/"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_ALWAYS = tuple(_META + n for n in ("Status", "DeleteOptions", "Patch", "ObjectMeta", "ListMeta"))
_SCALE = "io.k8s.api.autoscaling.v1.Scale"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml")
_CACHE: OrderedDict[tuple[str, str, str, str], tuple[dict[str, Any], str]] = OrderedDict()
_CACHE_SIZE = 64


def openapi_root(registry: Registry, schemas: Schemas) -> dict[str, Any]:
    """The ``/openapi/v3`` discovery document: one entry per served group-version, with its hash."""
    paths: dict[str, Any] = {}
    for group, versions in sorted(registry.group_versions().items()):
        for version in versions:
            built = _built(registry, schemas, group, version)
            if built is not None:
                key = _gv_path(group, version)
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={built[1]}"}
    return {"paths": paths}


def openapi_group_version(registry: Registry, schemas: Schemas, group: str,
                          version: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group-version, or None when nothing is served there.

    The document is cached and shared: callers serialise it and must not modify it."""
    built = _built(registry, schemas, group, version)
    return None if built is None else built[0]


def openapi_hash(registry: Registry, schemas: Schemas, group: str, version: str) -> str | None:
    """The hash the root lists for a group-version (a server may redirect stale ``?hash=`` requests)."""
    built = _built(registry, schemas, group, version)
    return None if built is None else built[1]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _built(registry: Registry, schemas: Schemas, group: str,
           version: str) -> tuple[dict[str, Any], str] | None:
    kinds = registry.in_group_version(group, version)
    if not kinds:
        return None
    content = json.dumps([_fingerprint(rt) for rt in kinds], sort_keys=True, default=str)
    key = (schemas.k8s_minor, group, version, hashlib.sha256(content.encode()).hexdigest())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    doc = _document(schemas, group, version, kinds)
    digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()
    _CACHE[key] = (doc, digest)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return doc, digest


def _fingerprint(rt: ResourceType) -> list[Any]:
    return [rt.kind, rt.plural, rt.namespaced, rt.subresources, rt.verbs, rt.crd_schema, rt.is_custom]


# --- components.schemas -----------------------------------------------------------------------------------


def _document(schemas: Schemas, group: str, version: str, kinds: list[ResourceType]) -> dict[str, Any]:
    components: dict[str, Any] = {}
    wanted: list[str] = list(_ALWAYS)
    paths: dict[str, Any] = {}
    for rt in kinds:
        if rt.is_custom:
            kind_name = _custom_schema_name(rt.group, rt.version, rt.kind)
            components[kind_name] = _custom_schema(rt)
            components[kind_name + "List"] = _custom_list_schema(rt, kind_name)
            list_name: str | None = kind_name + "List"
        else:
            found = schemas.definition_name(rt.group, rt.version, rt.kind)
            if found is None:
                continue
            kind_name = found
            list_name = schemas.definition_name(rt.group, rt.version, rt.list_kind)
            wanted += [kind_name] + ([list_name] if list_name else [])
        if "scale" in rt.subresources:
            wanted.append(_SCALE)
        paths.update(_paths(rt, kind_name, list_name))
    _add_reachable(schemas.defs, wanted, components)
    title = "Kubernetes" if not any(rt.is_custom for rt in kinds) else "Kubernetes CRD Swagger"
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": f"v{schemas.k8s_minor}.0"},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items()))},
    }


def _add_reachable(defs: Mapping[str, Mapping[str, Any]], wanted: list[str], out: dict[str, Any]) -> None:
    """Convert ``wanted`` and every definition they reference, transitively, into ``out``."""
    todo = list(wanted) + [ref for schema in list(out.values()) for ref in _refs(schema, _COMPONENT)]
    while todo:
        name = todo.pop()
        if name in out or name not in defs:
            continue
        out[name] = _definition(name, defs[name])
        todo += _refs(defs[name], _REF)


def _refs(node: Any, prefix: str) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"][len(prefix):]] if isinstance(node.get("$ref"), str) and \
            node["$ref"].startswith(prefix) else []
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                # Property names are not keywords: JSONSchemaProps has properties called "default" and "enum".
                found += [ref for sub in value.values() for ref in _refs(sub, prefix)]
            elif key not in ("enum", "default", "example", "x-kubernetes-group-version-kind"):
                found += _refs(value, prefix)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item, prefix)]
    return []


def _definition(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    converted = to_openapi3(schema)
    if name == _INT_OR_STRING:
        converted["format"] = "int-or-string"  # as the real v3 document has it, next to the oneOf
    props = converted.get("properties")
    if schema.get("x-kubernetes-group-version-kind") and isinstance(props, dict):
        for key in ("apiVersion", "kind"):  # kubernetes-validate adds these enums; the apiserver has none
            if isinstance(props.get(key), dict):
                props[key].pop("enum", None)
    return converted


def to_openapi3(node: Any) -> Any:
    """One JSON-schema (draft 2020-12) node rewritten as an OpenAPI 3.0 schema object."""
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if kinds:
                out["type"] = kinds[0]
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {name: to_openapi3(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_openapi3(sub) for sub in value]
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = to_openapi3(value)
        else:
            out[key] = value  # description, format, required, enum, default, every x-kubernetes-* extension
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = {"$ref": _COMPONENT + ref.rsplit("/", 1)[-1]}
        # OpenAPI 3.0 ignores siblings of $ref, so the real documents wrap it to keep the description.
        return {"allOf": [target], **out} if out else target
    return out


def _custom_schema_name(group: str, version: str, kind: str) -> str:
    """``networking.istio.io/v1 VirtualService`` -> ``io.istio.networking.v1.VirtualService``."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _gvk(rt: ResourceType, kind: str) -> list[dict[str, str]]:
    return [{"group": rt.group, "kind": kind, "version": rt.version}]


def _custom_schema(rt: ResourceType) -> dict[str, Any]:
    schema = dict(rt.crd_schema or {})
    props = dict(schema.get("properties") or {})
    props.setdefault("apiVersion", {"description": "APIVersion defines the versioned schema of this "
                                    "representation of an object.", "type": "string"})
    props.setdefault("kind", {"description": "Kind is a string value representing the REST resource this "
                              "object represents.", "type": "string"})
    props["metadata"] = {"allOf": [{"$ref": _COMPONENT + _META + "ObjectMeta"}],
                         "description": "Standard object's metadata."}
    schema.update(type="object", properties=props)
    schema["x-kubernetes-group-version-kind"] = _gvk(rt, rt.kind)
    return schema


def _custom_list_schema(rt: ResourceType, kind_name: str) -> dict[str, Any]:
    return {
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": _COMPONENT + kind_name}},
            "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": _COMPONENT + _META + "ListMeta"}]},
        },
        "x-kubernetes-group-version-kind": _gvk(rt, rt.list_kind),
    }


# --- paths ------------------------------------------------------------------------------------------------


def _param(name: str, where: str = "query", kind: str = "string", required: bool = False,
           description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "schema": {"type": kind, "uniqueItems": True}}
    if description:
        param["description"] = description
    if required:
        param["required"] = True
    return param


_FIELD_VALIDATION = _param("fieldValidation", description=(
    "fieldValidation instructs the server on how to handle objects in the request containing unknown or "
    "duplicate fields. Valid values are: - Ignore - Warn - Strict (the default)."))
_WRITE = [_param("dryRun"), _param("fieldManager"), _FIELD_VALIDATION]
_LIST = [_param(n, kind=k) for n, k in (("allowWatchBookmarks", "boolean"), ("continue", "string"),
                                         ("fieldSelector", "string"), ("labelSelector", "string"),
                                         ("limit", "integer"), ("resourceVersion", "string"),
                                         ("resourceVersionMatch", "string"), ("timeoutSeconds", "integer"),
                                         ("watch", "boolean"))]
_DELETE = [_param("dryRun"), _param("gracePeriodSeconds", kind="integer"), _param("propagationPolicy")]


def _content(ref: str, types: tuple[str, ...] = ("application/json", "application/yaml")) -> dict[str, Any]:
    return {t: {"schema": {"$ref": _COMPONENT + ref}} for t in types}


def _operation(rt: ResourceType, action: str, op_id: str, kind: str, gvk: Mapping[str, str], body: str | None,
               response: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    codes = {"post": ("200", "201", "202"), "put": ("200", "201"),
             "delete": ("200", "202")}.get(action, ("200",))
    op: dict[str, Any] = {
        "tags": [_tag(rt.group, rt.version)],
        "description": f"{action} {kind}",
        "operationId": op_id,
        "parameters": parameters,
        "responses": {code: {"description": "OK", "content": _content(response)} for code in codes},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(gvk),
    }
    if body is not None:
        patch_types = [t for t in _PATCH_TYPES if not (rt.is_custom and "strategic" in t)]
        types = tuple(patch_types) if action == "patch" else ("*/*",)
        op["requestBody"] = {"content": _content(body, types), "required": True}
    return op


def _tag(group: str, version: str) -> str:
    if not group:
        return f"core_{version}"
    words = group.removesuffix(".k8s.io").split(".")
    return words[0] + "".join(w.capitalize() for w in words[1:]) + f"_{version}"


def _paths(rt: ResourceType, kind_name: str, list_name: str | None) -> dict[str, Any]:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    scope = "Namespaced" if rt.namespaced else ""
    # operationIds read like the real ones: readCoreV1NamespacedPod, patchAppsV1NamespacedDeployment.
    words = rt.group.removesuffix(".k8s.io").split(".") if rt.group else ["core"]
    suffix = "".join(w.capitalize() for w in words) + f"{rt.version.capitalize()}{scope}{rt.kind}"
    gvk = {"group": rt.group, "kind": rt.kind, "version": rt.version}
    base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
    name_param = _param("name", "path", required=True, description=f"name of the {rt.kind}")
    scoped = ([_param("namespace", "path", required=True, description="object name and auth scope")]
              if rt.namespaced else [])
    verbs = set(rt.verbs)
    paths: dict[str, Any] = {}
    collection: dict[str, Any] = {"parameters": [*scoped, _param("pretty")]}
    if "list" in verbs and list_name:
        collection["get"] = _operation(rt, "list", f"list{suffix}", rt.kind, gvk, None, list_name, _LIST)
    if "create" in verbs:
        collection["post"] = _operation(rt, "post", f"create{suffix}", rt.kind, gvk, kind_name, kind_name,
                                        _WRITE)
    if "deletecollection" in verbs:
        collection["delete"] = _operation(rt, "deletecollection", f"deleteCollection{suffix}", rt.kind, gvk,
                                          None, _META + "Status", _DELETE + _LIST)
    paths[base] = collection
    if rt.namespaced and "list" in verbs and list_name:
        every: dict[str, Any] = {"parameters": [_param("pretty")]}
        all_id = f"list{suffix.replace('Namespaced', '')}ForAllNamespaces"
        every["get"] = _operation(rt, "list", all_id, rt.kind, gvk, None, list_name, _LIST)
        paths[f"{prefix}/{rt.plural}"] = every
    if verbs & {"get", "update", "patch", "delete"}:
        paths[f"{base}/{{name}}"] = _item_operations(rt, suffix, gvk, kind_name, verbs, [name_param, *scoped])
    for sub in ("status", "scale"):
        if sub in rt.subresources:
            target, sub_gvk = (kind_name, gvk) if sub == "status" else \
                (_SCALE, {"group": "autoscaling", "kind": "Scale", "version": "v1"})
            paths[f"{base}/{{name}}/{sub}"] = _item_operations(
                rt, f"{suffix}{sub.capitalize()}", sub_gvk, target, verbs - {"delete"}, [name_param, *scoped])
    return paths


def _item_operations(rt: ResourceType, suffix: str, gvk: Mapping[str, str], schema: str, verbs: set[str],
                     parameters: list[dict[str, Any]]) -> dict[str, Any]:
    item: dict[str, Any] = {"parameters": [*parameters, _param("pretty")]}
    kind = gvk["kind"]
    if "get" in verbs:
        item["get"] = _operation(rt, "get", f"read{suffix}", kind, gvk, None, schema, [])
    if "update" in verbs:
        item["put"] = _operation(rt, "put", f"replace{suffix}", kind, gvk, schema, schema, _WRITE)
    if "patch" in verbs:
        item["patch"] = _operation(rt, "patch", f"patch{suffix}", kind, gvk, _META + "Patch", schema,
                                   [*_WRITE, _param("force", kind="boolean")])
    if "delete" in verbs:
        item["delete"] = _operation(rt, "delete", f"delete{suffix}", kind, gvk, _META + "DeleteOptions",
                                    _META + "Status", _DELETE)
    return item
