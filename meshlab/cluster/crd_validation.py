"""Validation of CustomResourceDefinitions, as ``apiextensions-apiserver`` does it.

A CRD is refused when its name is not ``<spec.names.plural>.<spec.group>``, its group is not a DNS
subdomain with a dot, its names are missing or not DNS-1035 labels, its scope is neither ``Namespaced`` nor
``Cluster``, it has no versions or not exactly one ``storage: true`` version, or a version lacks a
structural ``openAPIV3Schema`` (every specified field needs a ``type``, the root must be an object). See
``apiextensions-apiserver/pkg/apis/apiextensions/validation`` and "Specifying a structural schema" in the
CustomResourceDefinition documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlab.cluster import fielderrors as fe
from meshlab.errors import Cause

Obj = Mapping[str, Any]


def _d(value: Any) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Obj]:
    return [v if isinstance(v, Mapping) else {} for v in value] if isinstance(value, list) else []


def _enum(obj: Obj, key: str, path: str, valid: tuple[str, ...]) -> list[Cause]:
    value = obj.get(key)
    if not value:
        return [fe.required(fe.child(path, key))]
    return [] if value in valid else [fe.not_supported(fe.child(path, key), value, valid)]


def validate_crd(obj: Obj) -> list[Cause]:
    """The checks ``ValidateCustomResourceDefinition`` makes that a hand-written CRD usually fails."""
    spec = _d(obj.get("spec"))
    causes: list[Cause] = []
    group, names = spec.get("group") or "", _d(spec.get("names"))
    plural, name = names.get("plural") or "", _d(obj.get("metadata")).get("name") or ""
    if name and name != f"{plural}.{group}":
        causes.append(fe.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if not group:
        causes.append(fe.required("spec.group"))
    elif fe.dns1123_subdomain(group):
        causes.append(fe.invalid("spec.group", group, ",".join(fe.dns1123_subdomain(group))))
    elif "." not in group:
        causes.append(fe.invalid("spec.group", group, "should be a domain with at least one dot"))
    for key in ("plural", "singular"):
        if names.get(key) and fe.dns1035_label(names[key]):
            causes.append(fe.invalid(f"spec.names.{key}", names[key], ",".join(fe.dns1035_label(names[key]))))
    kind = names.get("kind") or ""
    if kind and fe.dns1035_label(kind.lower()):
        causes.append(fe.invalid("spec.names.kind", kind, "may have mixed case, but should otherwise match: "
                                 + ",".join(fe.dns1035_label(kind.lower()))))
    causes += [fe.required(f"spec.names.{key}") for key in ("plural", "singular", "kind", "listKind")
               if not names.get(key)]
    causes += _enum(spec, "scope", "spec", ("Cluster", "Namespaced"))
    versions = _items(spec.get("versions"))
    if not versions:
        causes.append(fe.required("spec.versions", "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage") is True) != 1:
        causes.append(fe.invalid("spec.versions", [v.get("name", "") for v in versions],
                                 "must have exactly one version marked as storage version"))
    seen: set[str] = set()
    for i, version in enumerate(versions):
        where, version_name = f"spec.versions[{i}]", version.get("name") or ""
        if not version_name:
            causes.append(fe.required(f"{where}.name"))
        else:
            causes += [fe.invalid(f"{where}.name", version_name, m) for m in fe.dns1035_label(version_name)]
            if version_name in seen:
                causes.append(fe.invalid(f"{where}.name", version_name, "must be unique"))
            seen.add(version_name)
        schema = _d(version.get("schema")).get("openAPIV3Schema")
        if not isinstance(schema, Mapping):
            causes.append(fe.required(f"{where}.schema.openAPIV3Schema", "schemas are required"))
        else:
            causes += _structural(schema, f"{where}.schema.openAPIV3Schema", root=True)
    return causes


def _structural(schema: Obj, path: str, *, root: bool = False, field: str = "object fields") -> list[Cause]:
    """The structural-schema rule learners hit first: every specified field needs a ``type``."""
    causes: list[Cause] = []
    untyped_ok = schema.get("x-kubernetes-int-or-string") or \
        schema.get("x-kubernetes-preserve-unknown-fields")
    if root and schema.get("type") not in (None, "object"):
        causes.append(fe.invalid(f"{path}.type", schema.get("type"), "must be object at the root"))
    elif not schema.get("type") and not untyped_ok:
        where = "at the root" if root else f"for specified {field}"
        causes.append(fe.required(f"{path}.type", f"must not be empty {where}"))
    for key, sub in _d(schema.get("properties")).items():
        causes += _structural(_d(sub), f"{path}.properties[{key}]")
    if isinstance(schema.get("items"), Mapping):
        causes += _structural(schema["items"], f"{path}.items", field="array items")
    if isinstance(schema.get("additionalProperties"), Mapping):
        causes += _structural(schema["additionalProperties"], f"{path}.additionalProperties")
    return causes
