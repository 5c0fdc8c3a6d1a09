"""Namespace deletion, as kube-controller-manager's namespace controller does it.

Deleting a namespace only marks it (``deletionTimestamp``, phase ``Terminating``, finalizer ``kubernetes``
in ``spec.finalizers``). This controller then deletes every namespaced object in it, waits until they are
all gone (their own finalizers, or a kubelet stopping pods gracefully, may hold them), reporting what
remains in the namespace's ``NamespaceContentRemaining`` and ``NamespaceFinalizersRemaining`` conditions
(``kubectl describe namespace`` shows them), and finally removes the ``kubernetes`` finalizer through the
``finalize`` subresource, which removes the namespace.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from typing import Any

from meshlab.cluster import subresources
from meshlab.cluster.controllers.reconciling import Reconciler, utcnow
from meshlab.cluster.rest import RestStorage
from meshlab.errors import ApiError

Obj = dict[str, Any]


def remaining_conditions(resources: Counter[str], finalizers: Counter[str], now: str) -> list[Obj]:
    """The conditions a draining namespace reports (``pkg/controller/namespace/deletion``'s wording)."""
    content = ", ".join(f"{name} has {count} resource instances" for name, count in sorted(resources.items()))
    held = ", ".join(f"{name} in {count} resource instances" for name, count in sorted(finalizers.items()))
    rows = [
        ("NamespaceContentRemaining", ("SomeResourcesRemain", f"Some resources are remaining: {content}")
         if resources else ("ContentRemoved", "All content successfully removed")),
        ("NamespaceFinalizersRemaining",
         ("SomeFinalizersRemain", f"Some content in the namespace has finalizers remaining: {held}")
         if finalizers else ("ContentHasNoFinalizers", "All content-preserving finalizers finished")),
    ]
    return [{"type": kind, "status": "True" if reason.startswith("Some") else "False", "lastTransitionTime": now,
             "reason": reason, "message": message} for kind, (reason, message) in rows]


def same_conditions(old: list[Obj], new: list[Obj]) -> bool:
    def strip(conds: list[Obj]) -> list[Obj]:
        return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds]

    return strip(old) == strip(new)


class NamespaceController(Reconciler):
    watches = ("/namespaces",)
    user = "system:serviceaccount:kube-system:namespace-controller"

    def __init__(self, rest: RestStorage, *, interval: float = 0.2) -> None:
        super().__init__(rest)
        self.interval = interval

    async def sync(self) -> None:
        for ns in self.objects("/namespaces"):
            if (ns.get("metadata") or {}).get("deletionTimestamp"):
                name = ns["metadata"]["name"]
                if not await self.guard(f"namespace {name}", self.drain(name)):
                    # Content is still going away (pods stopping, finalizers): look again soon.
                    self.requeue_after(self.interval)

    async def drain(self, name: str) -> bool:
        """Delete what is left in namespace ``name``; finalize it (and return True) once it is empty."""
        resources: Counter[str] = Counter()
        finalizers: Counter[str] = Counter()
        for rt in list(self.rest.registry):
            if not rt.namespaced or not rt.persisted:
                continue
            for obj, _ in list(self.rest.select(rt, name)):
                resources[rt.qualified()] += 1
                for finalizer in obj["metadata"].get("finalizers") or []:
                    finalizers[finalizer] += 1
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                with contextlib.suppress(ApiError):
                    await self.rest.delete(rt, name, obj["metadata"]["name"], {"propagationPolicy": "Background"},
                                           self.opts)
        if resources:
            await self._report(name, resources, finalizers)
            return False
        await subresources.finalize_namespace(self.rest, name, {"spec": {"finalizers": []}}, self.opts)
        return True

    async def _report(self, name: str, resources: Counter[str], finalizers: Counter[str]) -> None:
        ns_rt = self.kind("", "v1", "namespaces")
        current = self.rest.get(ns_rt, "", name)
        conditions = remaining_conditions(resources, finalizers, utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
        if same_conditions((current.get("status") or {}).get("conditions") or [], conditions):
            return
        updated = copy.deepcopy(current)
        updated.setdefault("status", {})["conditions"] = conditions
        await self.rest.update(ns_rt, "", name, updated, self.opts, subresource="status")
