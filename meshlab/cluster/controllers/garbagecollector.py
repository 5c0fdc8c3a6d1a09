"""The garbage collector: delete dependents whose owners are gone, and carry out cascading deletion.

Every object with ``metadata.ownerReferences`` is checked against its owners, as kube-controller-manager's
``garbagecollector`` does: an owner is *absent* when no object of that kind, namespace and name has the
referenced uid; *waiting* when it is being deleted in the foreground (finalizer ``foregroundDeletion``);
otherwise *solid*. An object with a solid owner stays (references to absent or waiting owners are removed
from it); one whose owners are all absent or waiting is deleted — in the foreground itself if a waiting
owner needs it gone and it has dependents of its own, else in the background (or as its own finalizers
ask). The apiserver turns ``propagationPolicy=Foreground`` into the ``foregroundDeletion`` finalizer and
``Orphan`` into ``orphan``: for the first, the collector removes the finalizer once no dependent with
``blockOwnerDeletion: true`` remains, which lets the owner go; for the second it strips the owner's
references from every dependent first. Owners of kinds the lab does not serve are assumed present.
See "Garbage Collection" and "Use Cascading Deletion" in the Kubernetes docs.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from typing import Any

from meshlab.cluster.controllers import ownership
from meshlab.cluster.controllers.reconciling import Reconciler
from meshlab.cluster.resources import ResourceType
from meshlab.cluster.rest import kind_key

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
# Events have no dependents and are never owners; skipping them keeps a sync cheap.
_SKIPPED = {"events"}


class OwnerState(Enum):
    SOLID = "solid"
    ABSENT = "absent"
    WAITING = "waiting"


@dataclass(frozen=True)
class Verdict:
    """What to do with one dependent: nothing, drop some owner references, or delete it with a policy."""

    strip: tuple[str, ...] = ()
    delete_policy: str = ""


def verdict(obj: Obj, states: dict[str, OwnerState], *, has_dependents: bool) -> Verdict:
    """``attemptToDeleteItem`` for an object not yet being deleted, given the state of each owner (by uid)."""
    refs = ownership.owner_references(obj)
    if not refs:
        return Verdict()
    solid = [r for r in refs if states.get(r.get("uid", "")) is OwnerState.SOLID]
    absent = [r["uid"] for r in refs if states.get(r.get("uid", "")) is OwnerState.ABSENT]
    waiting = [r["uid"] for r in refs if states.get(r.get("uid", "")) is OwnerState.WAITING]
    if solid:
        return Verdict(strip=tuple(absent + waiting))
    if waiting and has_dependents:
        return Verdict(delete_policy="Foreground")
    finalizers = ownership.meta(obj).get("finalizers") or []
    if ORPHAN in finalizers:
        return Verdict(delete_policy="Orphan")
    if FOREGROUND in finalizers:
        return Verdict(delete_policy="Foreground")
    return Verdict(delete_policy="Background")


def blocking(owner: Obj, dependents: list[Obj]) -> list[Obj]:
    """The dependents a foreground deletion of ``owner`` waits for."""
    owner_uid = ownership.uid(owner)
    return [d for d in dependents
            if any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion") for r in ownership.owner_references(d))]


class GarbageCollector(Reconciler):
    # Any kind may own or depend: writes are noticed through the apiserver's after-store hook instead.
    watches = ()
    period = 2.0
    user = "system:serviceaccount:kube-system:generic-garbage-collector"

    def start(self) -> None:
        self.rest.after_store.append(self._noticed)
        super().start()

    async def stop(self) -> None:
        if self._noticed in self.rest.after_store:
            self.rest.after_store.remove(self._noticed)
        await super().stop()

    def _noticed(self, operation: str, rt: ResourceType, old: Obj | None, new: Obj | None) -> None:
        if rt.plural in _SKIPPED:
            return
        if (operation == "DELETE" or (new is not None and ownership.being_deleted(new))
                or ownership.owner_references(old or {}) != ownership.owner_references(new or {})):
            self.poke()

    def _kinds(self) -> list[ResourceType]:
        seen: dict[str, ResourceType] = {}
        for rt in self.rest.registry:
            if rt.persisted and rt.plural not in _SKIPPED:
                seen.setdefault(kind_key(rt), rt)
        return list(seen.values())

    def owner_state(self, ref: Obj, namespace: str) -> OwnerState:
        rt = self.rest.registry.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        if rt is None:
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            rt = next((r for r in self.rest.registry if r.group == group and r.kind == ref.get("kind")), None)
        if rt is None or (rt.namespaced and not namespace):
            # Unknown kinds, and namespaced owners of cluster-scoped objects, cannot be checked: keep.
            return OwnerState.SOLID
        found = self.rest.store.get(self.rest.key(rt, namespace, str(ref.get("name", ""))))
        if found is None or ownership.uid(found[1]) != ref.get("uid"):
            return OwnerState.ABSENT
        owner = found[1]
        if ownership.being_deleted(owner) and FOREGROUND in (ownership.meta(owner).get("finalizers") or []):
            return OwnerState.WAITING
        return OwnerState.SOLID

    async def sync(self) -> None:
        everything: list[tuple[ResourceType, Obj]] = []
        for rt in self._kinds():
            everything.extend((rt, obj) for obj in self.objects(kind_key(rt)))
        dependents: dict[str, list[tuple[ResourceType, Obj]]] = defaultdict(list)
        for rt, obj in everything:
            for ref in ownership.owner_references(obj):
                dependents[str(ref.get("uid", ""))].append((rt, obj))
        for rt, obj in everything:
            finalizers = ownership.meta(obj).get("finalizers") or []
            if ownership.being_deleted(obj) and (ORPHAN in finalizers or FOREGROUND in finalizers):
                await self.guard(f"finalize {self._name(obj)}", self._finish_owner(rt, obj, dependents))
        for rt, obj in everything:
            if ownership.owner_references(obj) and not ownership.being_deleted(obj):
                await self.guard(f"collect {self._name(obj)}", self._collect(rt, obj, dependents))

    async def _finish_owner(self, rt: ResourceType, owner: Obj, dependents: dict[str, list[tuple[ResourceType, Obj]]]
                            ) -> None:
        deps = dependents.get(ownership.uid(owner), [])
        finalizers = ownership.meta(owner).get("finalizers") or []
        if ORPHAN in finalizers:
            for dep_rt, dep in deps:
                await self._update(dep_rt, ownership.without_owners(dep, [ownership.uid(owner)]))
            await self._drop_finalizer(rt, owner, ORPHAN)
        elif not blocking(owner, [d for _, d in deps]):
            await self._drop_finalizer(rt, owner, FOREGROUND)

    async def _collect(self, rt: ResourceType, obj: Obj, dependents: dict[str, list[tuple[ResourceType, Obj]]]
                       ) -> None:
        namespace = ownership.meta(obj).get("namespace", "")
        # Decide on the latest copy: earlier steps of this sync (an orphaning) may have changed it.
        found = self.rest.store.get(self.rest.key(rt, namespace, ownership.meta(obj)["name"]))
        if found is None or ownership.uid(found[1]) != ownership.uid(obj) or ownership.being_deleted(found[1]):
            return
        obj = found[1]
        states = {str(r.get("uid", "")): self.owner_state(r, namespace) for r in ownership.owner_references(obj)}
        decision = verdict(obj, states, has_dependents=bool(dependents.get(ownership.uid(obj))))
        if decision.strip:
            await self._update(rt, ownership.without_owners(obj, decision.strip))
        elif decision.delete_policy:
            await self.rest.delete(rt, namespace, ownership.meta(obj)["name"],
                                   {"propagationPolicy": decision.delete_policy,
                                    "preconditions": {"uid": ownership.uid(obj)}}, self.opts)

    async def _drop_finalizer(self, rt: ResourceType, obj: Obj, finalizer: str) -> None:
        updated = copy.deepcopy(obj)
        updated["metadata"]["finalizers"] = [f for f in ownership.meta(obj).get("finalizers") or [] if f != finalizer]
        if not updated["metadata"]["finalizers"]:
            del updated["metadata"]["finalizers"]
        await self._update(rt, updated)

    async def _update(self, rt: ResourceType, obj: Obj) -> None:
        meta = ownership.meta(obj)
        await self.rest.update(rt, meta.get("namespace", ""), meta["name"], obj, self.opts)

    @staticmethod
    def _name(obj: Obj) -> str:
        meta = ownership.meta(obj)
        return f"{obj.get('kind', '')} {meta.get('namespace', '')}/{meta.get('name', '')}"
