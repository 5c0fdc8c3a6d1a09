"""API discovery documents: ``/version``, ``/api``, ``/apis`` and each group-version's resource list.

Clients learn every kind, verb, short name and category from these (``kubectl get po`` resolves ``po`` here,
``kubectl get all`` expands the ``all`` category here). This server answers the legacy (unaggregated)
discovery format; kubectl asks for the aggregated one first and falls back when the answer's Content-Type
does not carry the aggregated parameters, as the Kubernetes API conventions allow.
"""

from __future__ import annotations

import hashlib
from typing import Any

from meshlab.cluster.resources import Registry, ResourceType

KUBERNETES_VERSION = {"major": "1", "minor": "33"}
GIT_VERSION = "v1.33.0-meshlab"


def version_info() -> dict[str, str]:
    return {
        "major": KUBERNETES_VERSION["major"],
        "minor": KUBERNETES_VERSION["minor"],
        "emulationMajor": KUBERNETES_VERSION["major"],
        "emulationMinor": KUBERNETES_VERSION["minor"],
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "python",
        "compiler": "meshlab",
        "platform": "linux/amd64",
    }


def core_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_groups(registry: Registry) -> dict[str, Any]:
    groups = [_group_entry(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def _storage_hash(rt: ResourceType) -> str:
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def _resource_entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular_name,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.persisted:
        entry["storageVersionHash"] = _storage_hash(rt)
    return entry


_SUBRESOURCE_SHAPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name -> (group, kind, verbs)
    "status": ("", "", ("get", "patch", "update")),
    "scale": ("autoscaling", "Scale", ("get", "patch", "update")),
    "log": ("", "Pod", ("get",)),
    "exec": ("", "PodExecOptions", ("create", "get")),
    "binding": ("", "Binding", ("create",)),
    "token": ("authentication.k8s.io", "TokenRequest", ("create",)),
    "finalize": ("", "Namespace", ("update",)),
}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    kinds = registry.in_group_version(group, version)
    if not kinds:
        return None
    resources = []
    for rt in kinds:
        resources.append(_resource_entry(rt))
        for sub in rt.subresources:
            sub_group, sub_kind, verbs = _SUBRESOURCE_SHAPES.get(sub, ("", rt.kind, ("get",)))
            entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": sub_kind or rt.kind,
                "verbs": list(verbs),
            }
            if sub_group:
                entry["group"] = sub_group
                entry["version"] = "v1"
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
