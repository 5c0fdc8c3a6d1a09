"""Kubernetes resource types described as data.

A :class:`ResourceType` is everything the apiserver needs to route, store, discover and validate one kind:
its group/version, kind, plural, scope, short names, categories and subresources. Built-in kinds are listed
here; custom resources are added at run time from CustomResourceDefinitions (:func:`from_crd`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    singular: str = ""
    # For custom resources: the CRD's openAPIV3Schema for this version (None for built-ins).
    crd_schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # Columns a CRD asks `kubectl get` to show (additionalPrinterColumns).
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def is_custom(self) -> bool:
        return self.crd_schema is not None or bool(self.printer_columns)

    @property
    def persisted(self) -> bool:
        """Review kinds (TokenReview, SelfSubjectAccessReview) are answered, never stored."""
        return self.verbs != CREATE_ONLY

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _rt(group: str, version: str, kind: str, plural: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, **kw)


BUILTIN: tuple[ResourceType, ...] = (
    # core/v1
    _rt("", "v1", "Namespace", "namespaces", False, short_names=("ns",), subresources=("status", "finalize")),
    _rt("", "v1", "Pod", "pods", True, short_names=("po",), categories=("all",),
        subresources=("status", "log", "exec", "binding")),
    _rt("", "v1", "Service", "services", True, short_names=("svc",), categories=("all",),
        subresources=("status",)),
    _rt("", "v1", "Endpoints", "endpoints", True, short_names=("ep",), singular="endpoints"),
    _rt("", "v1", "ConfigMap", "configmaps", True, short_names=("cm",)),
    _rt("", "v1", "Secret", "secrets", True),
    _rt("", "v1", "ServiceAccount", "serviceaccounts", True, short_names=("sa",), subresources=("token",)),
    _rt("", "v1", "Event", "events", True, short_names=("ev",)),
    _rt("", "v1", "PersistentVolume", "persistentvolumes", False, short_names=("pv",),
        subresources=("status",)),
    _rt("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, short_names=("pvc",),
        subresources=("status",)),
    _rt("", "v1", "Node", "nodes", False, short_names=("no",), subresources=("status",)),
    # apps/v1
    _rt("apps", "v1", "Deployment", "deployments", True, short_names=("deploy",), categories=("all",),
        subresources=("scale", "status")),
    _rt("apps", "v1", "ReplicaSet", "replicasets", True, short_names=("rs",), categories=("all",),
        subresources=("scale", "status")),
    _rt("apps", "v1", "DaemonSet", "daemonsets", True, short_names=("ds",), categories=("all",),
        subresources=("status",)),
    # storage.k8s.io/v1
    _rt("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, short_names=("sc",)),
    _rt("storage.k8s.io", "v1", "CSIDriver", "csidrivers", False),
    _rt("storage.k8s.io", "v1", "CSINode", "csinodes", False),
    # discovery.k8s.io/v1
    _rt("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    # apiextensions.k8s.io/v1
    _rt("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
        short_names=("crd", "crds"), subresources=("status",)),
    # authentication / authorization (answered, not stored)
    _rt("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False, verbs=CREATE_ONLY),
    _rt("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
        verbs=CREATE_ONLY),
    # admissionregistration.k8s.io/v1
    _rt("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations", False),
    _rt("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations", False),
    # coordination.k8s.io/v1: leases, which controllers and kubelets use for heartbeats
    _rt("coordination.k8s.io", "v1", "Lease", "leases", True),
)


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of one CustomResourceDefinition as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        sub = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        out.append(
            ResourceType(
                group=spec.get("group", ""),
                version=version.get("name", "v1"),
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(k for k in ("status", "scale") if k in sub),
                singular=names.get("singular", ""),
                crd_schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            )
        )
    return out


class Registry:
    """The kinds the server knows: built-ins plus those added from CRDs."""

    def __init__(self, types: Iterable[ResourceType] = BUILTIN) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}
        for rt in types:
            self._add(rt)

    def _add(self, rt: ResourceType) -> None:
        self._by_path[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._by_path.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def set_crd(self, crd_name: str, types: list[ResourceType]) -> None:
        """Register (or replace) the kinds a CRD defines."""
        self.remove_crd(crd_name)
        self._crd_types[crd_name] = types
        for rt in types:
            self._add(rt)

    def remove_crd(self, crd_name: str) -> None:
        for rt in self._crd_types.pop(crd_name, []):
            self._by_path.pop((rt.group, rt.version, rt.plural), None)

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(sorted(self._by_path.values(), key=lambda r: (r.group, r.version, r.plural)))

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions (preferred first); the core group is ``""``."""
        out: dict[str, list[str]] = {}
        for rt in self:
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        for versions in out.values():
            versions.sort(key=_version_priority)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self if rt.group == group and rt.version == version]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA before beta before alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor)
