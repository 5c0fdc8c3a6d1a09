"""The ObjectMeta rules every write follows, as the Kubernetes API conventions define them.

uid and creationTimestamp are set once and never change; ``generateName`` gets five random characters from
the apiserver's alphabet; ``metadata.generation`` starts at 1 and grows only when the desired state (anything
but metadata and status) changes; a write that carries a ``resourceVersion`` other than the stored one is a
409 Conflict (optimistic concurrency).
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from meshlab.cluster.resources import ResourceType
from meshlab.errors import BadRequest, conflict

# Kubernetes' utilrand alphabet: no vowels (no words) and no confusable characters.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# Kinds whose registry strategies maintain metadata.generation (custom resources always do).
_GENERATION_KINDS = {
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "DaemonSet"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
}

_MANAGED = ("uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp",
            "deletionGracePeriodSeconds", "selfLink")


def require_shape(rt: ResourceType, obj: Any) -> dict[str, Any]:
    """The body must be an object whose ``metadata`` (when present) is an object, as Go's decoder insists."""
    if not isinstance(obj, dict):
        raise BadRequest(f"the body of the request was in an unknown format: expected a {rt.kind} object, "
                         f"got {type(obj).__name__}")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest(f"json: cannot unmarshal {_json_type(meta)} into Go struct field {rt.kind}.metadata "
                         "of type v1.ObjectMeta")
    return obj


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def now_rfc3339(now: dt.datetime | None = None) -> str:
    moment = now or dt.datetime.now(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def tracks_generation(rt: ResourceType) -> bool:
    return rt.is_custom or (rt.group, rt.kind) in _GENERATION_KINDS


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(length))


def desired_state(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def prepare_create(rt: ResourceType, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Fill the server-owned metadata of a new object."""
    meta = dict(obj.get("metadata") or {})
    if rt.namespaced:
        body_ns = meta.get("namespace")
        if body_ns and body_ns != namespace:
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = f"{meta['generateName']}{random_suffix()}"
    for field in _MANAGED:
        meta.pop(field, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    if tracks_generation(rt):
        meta["generation"] = 1
    out = dict(obj)
    out["metadata"] = meta
    out["apiVersion"] = rt.api_version
    out["kind"] = rt.kind
    return out


def check_resource_version(rt: ResourceType, name: str, body: dict[str, Any], stored_rv: int) -> None:
    sent = (body.get("metadata") or {}).get("resourceVersion")
    if sent not in (None, "") and str(sent) != str(stored_rv):
        raise conflict(rt.plural, name, rt.group)


def prepare_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Carry immutable metadata over from ``old`` and bump generation when the desired state changed."""
    old_meta = old.get("metadata") or {}
    meta = dict(new.get("metadata") or {})
    for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
        if field in old_meta:
            meta[field] = old_meta[field]
        else:
            meta.pop(field, None)
    meta.pop("selfLink", None)
    if tracks_generation(rt):
        generation = int(old_meta.get("generation") or 1)
        if desired_state(new) != desired_state(old):
            generation += 1
        meta["generation"] = generation
    else:
        meta.pop("generation", None)
    out = dict(new)
    out["metadata"] = meta
    out["apiVersion"] = rt.api_version
    out["kind"] = rt.kind
    return out


def keep_status(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A write to the main resource of a kind with a status subresource cannot change status."""
    out = dict(new)
    if old is not None and "status" in old:
        out["status"] = old["status"]
    else:
        out.pop("status", None)
    return out


def take_status(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A write to ``/status`` changes only status (and keeps everything else as stored)."""
    out = dict(old)
    if "status" in new:
        out["status"] = new["status"]
    else:
        out.pop("status", None)
    meta = dict(old.get("metadata") or {})
    out["metadata"] = meta
    return out
