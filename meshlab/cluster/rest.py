"""The verbs of the Kubernetes REST API over the store: create, get, list, update, patch, delete.

This is the part of kube-apiserver that its generic registry (``k8s.io/apiserver/pkg/registry/generic``)
and each kind's strategy implement: decoding has happened already; here a write is normalised and
validated against the schema, defaulted, passed through mutating admission, validated again, through
validating admission, and stored under optimistic concurrency. Deletion honours finalizers and graceful
deletion (``deletionTimestamp``), and ``dryRun=All`` does everything except store. No HTTP here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from meshlab.cluster import objectmeta
from meshlab.cluster.admission import AdmissionAttributes, AdmissionChain
from meshlab.cluster.patching import (
    PatchSchema,
    json_patch,
    merge_patch,
    server_side_apply,
    strategic_merge_patch,
    track_update,
)
from meshlab.cluster.resources import Registry, ResourceType, from_crd
from meshlab.cluster.schemas import Schemas, prepare
from meshlab.cluster.selectors import field_matcher, label_matcher
from meshlab.cluster.store import Key, Store
from meshlab.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    UnsupportedMediaType,
    already_exists,
    conflict,
    not_found,
)

# Kinds whose delete answers with the deleted object rather than a Status (the typed client expects it).
_RETURNS_OBJECT = {"pods", "services", "persistentvolumeclaims", "persistentvolumes", "storageclasses",
                   "csidrivers", "csinodes", "namespaces"}
# Writes to these kinds never go through admission webhooks, as in Kubernetes (no lock-out by a webhook).
_NO_ADMISSION = {"mutatingwebhookconfigurations", "validatingwebhookconfigurations", "tokenreviews",
                 "selfsubjectaccessreviews", "events", "leases"}

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}

Hook = Callable[[str, ResourceType, dict[str, Any] | None, dict[str, Any] | None], None]


@dataclass
class WriteOptions:
    user: dict[str, Any] = field(default_factory=lambda: {"username": "admin", "groups": ["system:masters"]})
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Strict"
    force: bool = False
    warnings: list[str] = field(default_factory=list)


def kind_key(rt: ResourceType) -> str:
    return f"{rt.group}/{rt.plural}"


class RestStorage:
    """CRUD for every registered kind, with the semantics clients rely on."""

    def __init__(self, store: Store, registry: Registry, schemas: Schemas, admission: AdmissionChain) -> None:
        self.store = store
        self.registry = registry
        self.schemas = schemas
        self.admission = admission
        # Kind-specific behaviour plugged in by the apiserver (service IPs, CRD status ...): called before
        # a write is stored with (operation, rt, old, new) and may change ``new`` in place.
        self.before_store: list[Hook] = []
        # Called after a write is stored (controllers that react synchronously, e.g. CRD registration).
        self.after_store: list[Hook] = []
        self.load_crds()

    # -- helpers -----------------------------------------------------------------------------------------

    def load_crds(self) -> None:
        crd_rt = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crd_rt is not None
        for crd, _ in self.store.scan(kind_key(crd_rt)):
            self.registry.set_crd(crd["metadata"]["name"], from_crd(crd))

    def key(self, rt: ResourceType, namespace: str, name: str) -> Key:
        return (kind_key(rt), namespace if rt.namespaced else "", name)

    def patch_schema(self, rt: ResourceType) -> PatchSchema:
        return PatchSchema(self.schemas.root_schema(rt), self.schemas.defs)

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        found = self.store.get(self.key(rt, namespace, name))
        if found is None:
            raise not_found(rt.plural, name, rt.group)
        return _as_version(found[1], rt)

    def select(
        self, rt: ResourceType, namespace: str, *, label_selector: str = "", field_selector: str = ""
    ) -> Iterator[tuple[dict[str, Any], str]]:
        labels = label_matcher(label_selector)
        fields = field_matcher(field_selector)
        for obj, raw in self.store.scan(kind_key(rt), namespace if rt.namespaced else ""):
            if labels(obj) and fields(obj):
                if obj.get("apiVersion") != rt.api_version:
                    obj = _as_version(obj, rt)
                    raw = ""
                yield obj, raw

    def _require_namespace(self, rt: ResourceType, namespace: str, operation: str) -> dict[str, Any] | None:
        if not rt.namespaced:
            return None
        ns_rt = self.registry.lookup("", "v1", "namespaces")
        assert ns_rt is not None
        found = self.store.get(self.key(ns_rt, "", namespace))
        if found is None:
            raise not_found("namespaces", namespace)
        ns = found[1]
        if operation == "CREATE" and (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise Forbidden(
                f'{rt.plural} "{rt.kind}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                {"kind": rt.plural, "causes": [{"reason": "NamespaceTerminating",
                                                "message": f"namespace {namespace} is being terminated",
                                                "field": "metadata.namespace"}]},
            )
        return ns

    async def _admit(
        self, operation: str, rt: ResourceType, subresource: str, namespace: str, name: str,
        obj: dict[str, Any] | None, old: dict[str, Any] | None, opts: WriteOptions,
        ns_obj: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        if rt.plural in _NO_ADMISSION:
            return obj
        mutating = [o for o, _ in self.store.scan("admissionregistration.k8s.io/mutatingwebhookconfigurations")]
        validating = [
            o for o, _ in self.store.scan("admissionregistration.k8s.io/validatingwebhookconfigurations")
        ]
        if not mutating and not validating:
            return obj
        ns_labels = ((ns_obj or {}).get("metadata") or {}).get("labels") or {}
        if rt.plural == "namespaces" and obj is not None:
            ns_labels = (obj.get("metadata") or {}).get("labels") or {}
        attrs = AdmissionAttributes(
            operation=operation, rt=rt, subresource=subresource, namespace=namespace if rt.namespaced else "",
            name=name, obj=obj, old_obj=old, user=opts.user, dry_run=opts.dry_run,
        )
        if mutating and obj is not None:
            mutated = await self.admission.mutate(mutating, attrs, ns_labels, warnings=opts.warnings)
            if mutated is not None and mutated != obj:
                obj = self._validated(rt, mutated, opts)
                attrs = AdmissionAttributes(
                    operation=operation, rt=rt, subresource=subresource, namespace=attrs.namespace,
                    name=name, obj=obj, old_obj=old, user=opts.user, dry_run=opts.dry_run,
                )
        if validating:
            await self.admission.validate(validating, attrs, ns_labels, warnings=opts.warnings)
        return obj

    def _validated(self, rt: ResourceType, obj: dict[str, Any], opts: WriteOptions) -> dict[str, Any]:
        normalised, warnings = prepare(self.schemas, rt, obj, field_validation=opts.field_validation)
        opts.warnings.extend(w for w in warnings if w not in opts.warnings)
        return normalised  # prepare() has applied Kubernetes' defaults too

    def _run_hooks(
        self, hooks: list[Hook], operation: str, rt: ResourceType, old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
        for hook in hooks:
            hook(operation, rt, old, new)

    # -- create ------------------------------------------------------------------------------------------

    async def create(
        self, rt: ResourceType, namespace: str, body: dict[str, Any], opts: WriteOptions
    ) -> dict[str, Any]:
        objectmeta.require_shape(rt, body)
        ns_obj = self._require_namespace(rt, namespace, "CREATE")
        obj = objectmeta.prepare_create(rt, body, namespace)
        if rt.plural == "namespaces":
            obj.setdefault("status", {})["phase"] = "Active"
        elif "status" in rt.subresources:
            obj.pop("status", None)
        obj = self._validated(rt, obj, opts)
        name = obj["metadata"]["name"]
        key = self.key(rt, namespace, name)
        if self.store.get(key) is not None:
            raise already_exists(rt.plural, name, rt.group)
        obj = await self._admit("CREATE", rt, "", namespace, name, obj, None, opts, ns_obj) or obj
        if opts.field_manager:
            obj = track_update(None, obj, manager=opts.field_manager, operation="Update",
                               now=objectmeta.now_rfc3339(), schema=self.patch_schema(rt))
        self._run_hooks(self.before_store, "CREATE", rt, None, obj)
        if opts.dry_run:
            return obj
        stored = self.store.put(key, obj, created=True)
        self._run_hooks(self.after_store, "CREATE", rt, None, stored)
        return stored

    # -- update and patch --------------------------------------------------------------------------------

    async def update(
        self, rt: ResourceType, namespace: str, name: str, body: dict[str, Any], opts: WriteOptions,
        *, subresource: str = "",
    ) -> dict[str, Any]:
        objectmeta.require_shape(rt, body)
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise BadRequest(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        found = self.store.get(self.key(rt, namespace, name))
        if found is None:
            raise not_found(rt.plural, name, rt.group)
        stored_rv, old = found
        objectmeta.check_resource_version(rt, name, body, stored_rv)
        return await self._write_update(rt, namespace, name, old, body, opts, subresource, "Update")

    async def _write_update(
        self, rt: ResourceType, namespace: str, name: str, old: dict[str, Any], new: dict[str, Any],
        opts: WriteOptions, subresource: str, operation: str,
    ) -> dict[str, Any]:
        objectmeta.require_shape(rt, new)
        ns_obj = self._require_namespace(rt, namespace, "UPDATE")
        if subresource == "status":
            new = objectmeta.take_status(old, new)
        elif "status" in rt.subresources and rt.plural != "namespaces":
            new = objectmeta.keep_status(old, new)
        new = objectmeta.prepare_update(rt, old, new)
        new = self._validated(rt, new, opts)
        new = await self._admit("UPDATE", rt, subresource, namespace, name, new, old, opts, ns_obj) or new
        if opts.field_manager and operation == "Update":
            new = track_update(old, new, manager=opts.field_manager, operation="Update",
                               now=objectmeta.now_rfc3339(), schema=self.patch_schema(rt), subresource=subresource)
        self._run_hooks(self.before_store, "UPDATE", rt, old, new)
        if _without_rv(new) == _without_rv(old):
            return old  # a no-op write does not bump resourceVersion, as in Kubernetes
        meta = new.get("metadata") or {}
        # A terminating namespace is held by spec.finalizers too: only the finalize subresource removes it.
        held_by_spec = rt.plural == "namespaces" and bool((new.get("spec") or {}).get("finalizers"))
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not held_by_spec:
            return await self._remove(rt, namespace, name, new, opts)
        if opts.dry_run:
            return new
        stored = self.store.put(self.key(rt, namespace, name), new, created=False)
        self._run_hooks(self.after_store, "UPDATE", rt, old, stored)
        return stored

    async def patch(
        self, rt: ResourceType, namespace: str, name: str, content_type: str, patch: Any,
        opts: WriteOptions, *, subresource: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """Apply a patch; returns the result and whether it created the object (server-side apply)."""
        kind = PATCH_TYPES.get(content_type)
        if kind is None or kind == "apply-cbor":
            raise UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(t for t in PATCH_TYPES if not t.endswith('cbor'))}"
            )
        if kind == "strategic" and rt.is_custom:
            raise UnsupportedMediaType(
                "the body of the request was in an unknown format - strategic merge patch is not supported "
                "for custom resources; use application/merge-patch+json"
            )
        found = self.store.get(self.key(rt, namespace, name))
        schema = self.patch_schema(rt)
        if kind == "apply":
            if not opts.field_manager:
                raise BadRequest("PATCH with apply requires the fieldManager query parameter")
            if not isinstance(patch, dict):
                raise BadRequest("apply patches must be a single object")
            live = _as_version(found[1], rt) if found else None
            if "status" in rt.subresources and subresource != "status":
                # status is not the main resource's to set: it is neither applied nor owned from here
                patch = {k: v for k, v in patch.items() if k != "status"}
            applied = server_side_apply(live, patch, manager=opts.field_manager, force=opts.force,
                                        schema=schema, now=objectmeta.now_rfc3339(), subresource=subresource)
            if found is None:
                return await self.create(rt, namespace, applied, _no_manager(opts)), True
            return await self._write_update(rt, namespace, name, found[1], applied, opts, subresource,
                                            "Apply"), False
        if found is None:
            raise not_found(rt.plural, name, rt.group)
        stored_rv, old = found
        current = copy.deepcopy(_as_version(old, rt))
        if kind == "json":
            new = json_patch(current, patch)
        elif kind == "merge":
            new = merge_patch(current, patch)
        else:
            new = strategic_merge_patch(current, patch, schema)
        objectmeta.check_resource_version(rt, name, new if _sets_rv(patch) else {}, stored_rv)
        return await self._write_update(rt, namespace, name, old, new, opts, subresource, "Update"), False

    # -- delete ------------------------------------------------------------------------------------------

    async def delete(
        self, rt: ResourceType, namespace: str, name: str, options: dict[str, Any], opts: WriteOptions
    ) -> dict[str, Any]:
        """Delete (or begin deleting) an object; returns what the API answers (object or Status)."""
        found = self.store.get(self.key(rt, namespace, name))
        if found is None:
            raise not_found(rt.plural, name, rt.group)
        stored_rv, old = found
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
            raise conflict(rt.plural, name, rt.group,
                                      f"Precondition failed: UID in precondition: {pre['uid']}, "
                                      f"UID in object meta: {old['metadata'].get('uid')}")
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != str(stored_rv):
            raise conflict(rt.plural, name, rt.group)
        ns_obj = self._require_namespace(rt, namespace, "DELETE") if rt.plural != "namespaces" else None
        await self._admit("DELETE", rt, "", namespace, name, None, old, opts, ns_obj)
        obj = copy.deepcopy(old)
        meta = obj["metadata"]
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "")
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        elif policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        graceful = self._grace_period(rt, obj, options)
        if meta.get("deletionTimestamp"):
            # Already being deleted: only a final, immediate delete (the kubelet's grace-period-0 delete
            # once the containers have stopped) removes it now; otherwise finalizers still hold it.
            if not meta.get("finalizers") and graceful is None and rt.plural != "namespaces":
                return await self._remove(rt, namespace, name, obj, opts)
            return self._deleted_answer(rt, obj)
        if finalizers or graceful is not None or rt.plural == "namespaces":
            meta["finalizers"] = finalizers
            if not finalizers:
                meta.pop("finalizers")
            meta["deletionTimestamp"] = objectmeta.now_rfc3339()
            meta["deletionGracePeriodSeconds"] = graceful or 0
            if rt.plural == "namespaces":
                obj.setdefault("status", {})["phase"] = "Terminating"
            if opts.dry_run:
                return self._deleted_answer(rt, obj)
            stored = self.store.put(self.key(rt, namespace, name), obj, created=False)
            self._run_hooks(self.after_store, "UPDATE", rt, old, stored)
            return self._deleted_answer(rt, stored)
        return await self._remove(rt, namespace, name, obj, opts)

    def _grace_period(self, rt: ResourceType, pod: dict[str, Any], options: dict[str, Any]) -> int | None:
        """Pods bound to a node are deleted gracefully: the kubelet stops them, then removes the object."""
        if rt.plural != "pods":
            return None
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        phase = (pod.get("status") or {}).get("phase")
        if int(grace) <= 0 or not (pod.get("spec") or {}).get("nodeName") or phase in ("Succeeded", "Failed"):
            return None
        return int(grace)

    async def _remove(
        self, rt: ResourceType, namespace: str, name: str, obj: dict[str, Any], opts: WriteOptions
    ) -> dict[str, Any]:
        if opts.dry_run:
            return self._deleted_answer(rt, obj)
        old = self.store.get(self.key(rt, namespace, name))
        final = self.store.delete(self.key(rt, namespace, name), obj)
        self._run_hooks(self.after_store, "DELETE", rt, old[1] if old else None, None)
        return self._deleted_answer(rt, final, gone=True)

    def _deleted_answer(self, rt: ResourceType, obj: dict[str, Any], gone: bool = False) -> dict[str, Any]:
        if rt.plural in _RETURNS_OBJECT or not gone:
            return obj
        meta = obj.get("metadata") or {}
        details = {"name": meta.get("name", ""), "kind": rt.plural, "uid": meta.get("uid", "")}
        if rt.group:
            details["group"] = rt.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details}

    async def delete_collection(
        self, rt: ResourceType, namespace: str, options: dict[str, Any], opts: WriteOptions, *,
        label_selector: str = "", field_selector: str = "",
    ) -> list[dict[str, Any]]:
        if "deletecollection" not in rt.verbs:
            raise MethodNotAllowed(f"deletecollection is not supported on {rt.qualified()}")
        names = [(o["metadata"].get("namespace", ""), o["metadata"]["name"])
                 for o, _ in self.select(rt, namespace, label_selector=label_selector,
                                       field_selector=field_selector)]
        out = []
        for ns, name in names:
            out.append(await self.delete(rt, ns, name, options, opts))
        return out

    async def finalize_removal(self, rt: ResourceType, namespace: str, name: str) -> None:
        """Remove an object whose deletion was pending, once its finalizers are gone (controllers)."""
        found = self.store.get(self.key(rt, namespace, name))
        if found is not None:
            await self._remove(rt, namespace, name, found[1], WriteOptions())


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _sets_rv(patch: Any) -> bool:
    if isinstance(patch, dict):
        return bool((patch.get("metadata") or {}).get("resourceVersion"))
    if isinstance(patch, list):
        return any(isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in patch)
    return False


def _no_manager(opts: WriteOptions) -> WriteOptions:
    # The apply result already carries its managedFields; creating must not add an Update entry too.
    return WriteOptions(user=opts.user, dry_run=opts.dry_run, field_manager="",
                        field_validation=opts.field_validation, warnings=opts.warnings)


def _as_version(obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    """Objects are stored once per group/plural; custom resources may be read at any served version."""
    if obj.get("apiVersion") == rt.api_version:
        return obj
    out = dict(obj)
    out["apiVersion"] = rt.api_version
    return out

