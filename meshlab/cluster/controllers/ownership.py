"""Owner references: who controls an object, and how a controller claims the objects it selects.

Every object a controller creates names its creator in ``metadata.ownerReferences``; exactly one reference
may say ``controller: true`` (the *controller reference*), and ``blockOwnerDeletion: true`` makes a
foreground deletion of the owner wait for this dependent. A controller that selects objects by label
(a ReplicaSet its pods, a Deployment its ReplicaSets) *claims* them as kube-controller-manager's
``ControllerRefManager`` does: objects it controls and still selects are its own; orphans it selects are
adopted (unless it or they are being deleted); objects it controls but no longer selects are released.
Objects controlled by someone else are never touched. See "Owners and Dependents" in the Kubernetes docs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshlab.cluster.selectors import match_label_selector

Obj = dict[str, Any]


def meta(obj: Obj) -> Obj:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def uid(obj: Obj) -> str:
    return str(meta(obj).get("uid") or "")


def being_deleted(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def owner_references(obj: Obj) -> list[Obj]:
    return [ref for ref in meta(obj).get("ownerReferences") or [] if isinstance(ref, dict)]


def controller_ref(obj: Obj) -> Obj | None:
    for ref in owner_references(obj):
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid(owner)


def owner_reference(owner: Obj, *, controller: bool = True, block: bool = True) -> Obj:
    """The reference a controller puts on what it creates (``metav1.NewControllerRef``)."""
    return {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""), "name": meta(owner)["name"],
            "uid": uid(owner), "controller": controller, "blockOwnerDeletion": block}


def with_owner(obj: Obj, ref: Obj) -> Obj:
    out = copy.deepcopy(obj)
    refs = [r for r in owner_references(out) if r.get("uid") != ref.get("uid")]
    out["metadata"]["ownerReferences"] = [*refs, ref]
    return out


def without_owners(obj: Obj, uids: Iterable[str]) -> Obj:
    """A copy of ``obj`` without the references to ``uids`` (the field goes when it empties)."""
    drop = set(uids)
    out = copy.deepcopy(obj)
    refs = [r for r in owner_references(out) if r.get("uid") not in drop]
    if refs:
        out["metadata"]["ownerReferences"] = refs
    else:
        out["metadata"].pop("ownerReferences", None)
    return out


@dataclass
class Claims:
    owned: list[Obj] = field(default_factory=list)
    adopt: list[Obj] = field(default_factory=list)
    release: list[Obj] = field(default_factory=list)


def claim(owner: Obj, selector: Obj | None, candidates: Iterable[Obj]) -> Claims:
    """Sort ``candidates`` (same namespace) into what ``owner`` owns, should adopt and should release."""
    out = Claims()
    owner_uid = uid(owner)
    for obj in candidates:
        matches = bool(selector) and match_label_selector(selector, meta(obj).get("labels") or {})
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != owner_uid:
                continue
            if matches or being_deleted(owner):
                # An owner being deleted keeps what it has: releasing now would orphan it mid-deletion.
                out.owned.append(obj)
            elif not being_deleted(obj):
                out.release.append(obj)
        elif matches and not being_deleted(owner) and not being_deleted(obj):
            out.adopt.append(obj)
    return out
