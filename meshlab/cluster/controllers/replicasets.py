"""The ReplicaSet controller: keep ``spec.replicas`` pods running from the template, and report them.

As kube-controller-manager's ``replicaset`` controller does it: the ReplicaSet claims the pods its selector
matches (adopting orphans, releasing pods it no longer selects), counts the *active* ones (not terminal,
not terminating), creates the missing ones from ``spec.template`` (``generateName: <rs>-`` and a controller
owner reference with ``blockOwnerDeletion``) and deletes the surplus, least valuable first (see
:func:`~meshlab.cluster.controllers.readiness.deletion_order`). Its status counts ``replicas``,
``fullyLabeledReplicas`` (pods carrying all the template's labels), ``readyReplicas`` and
``availableReplicas`` (ready for ``minReadySeconds``), with ``observedGeneration``. It records
``SuccessfulCreate``/``SuccessfulDelete`` events (``FailedCreate`` when the apiserver refuses a pod).
A ReplicaSet being deleted creates and deletes nothing: the garbage collector handles its pods.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import defaultdict
from typing import Any

from meshlab.cluster.controllers import ownership
from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.controllers.readiness import (
    deletion_order,
    pod_active,
    pod_ready,
    seconds_until_available,
)
from meshlab.cluster.controllers.reconciling import Reconciler, namespace_terminating, utcnow
from meshlab.errors import ApiError

Obj = dict[str, Any]

COMPONENT = "replicaset-controller"
# Pods created or deleted per ReplicaSet per sync (kube-controller-manager's burstReplicas).
BURST = 500


def pod_from_template(owner: Obj, template: Obj) -> Obj:
    """A new pod for ``owner`` (a ReplicaSet or DaemonSet) from its pod template."""
    tmeta = template.get("metadata") or {}
    metadata: Obj = {"generateName": f"{owner['metadata']['name']}-",
                     "namespace": owner["metadata"].get("namespace", ""),
                     "ownerReferences": [ownership.owner_reference(owner)]}
    for key in ("labels", "annotations", "finalizers"):
        if tmeta.get(key):
            metadata[key] = copy.deepcopy(tmeta[key])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": copy.deepcopy(template.get("spec") or {})}


def replica_diff(rs: Obj, active: list[Obj]) -> int:
    """Pods to create (positive) or delete (negative) to reach ``spec.replicas``."""
    return int((rs.get("spec") or {}).get("replicas", 1)) - len(active)


def replica_set_status(rs: Obj, active: list[Obj], now: dt.datetime) -> Obj:
    """The status the controller reports for ``rs`` given its active pods (zero counts omitted, as Go does)."""
    spec = rs.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    fully = sum(1 for p in active
                if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in template_labels.items()))
    status: Obj = {"replicas": len(active)}
    counts = {
        "fullyLabeledReplicas": fully,
        "readyReplicas": sum(1 for p in active if pod_ready(p)),
        "availableReplicas": sum(1 for p in active if seconds_until_available(p, min_ready, now) == 0.0),
    }
    status.update({k: v for k, v in counts.items() if v})
    status["observedGeneration"] = int((rs.get("metadata") or {}).get("generation") or 1)
    conditions = [c for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"]
    if conditions:
        status["conditions"] = conditions
    return status


def next_availability_check(rs: Obj, active: list[Obj], now: dt.datetime) -> float | None:
    """Seconds until a ready pod becomes available (when ``minReadySeconds`` makes one wait)."""
    min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
    waits = [w for p in active if (w := seconds_until_available(p, min_ready, now))]
    return min(waits) if waits else None


def _failure_condition(message: str, now: dt.datetime) -> Obj:
    return {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message,
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")}


class ReplicaSetController(Reconciler):
    watches = ("apps/replicasets", "/pods")
    user = "system:serviceaccount:kube-system:replicaset-controller"

    async def sync(self) -> None:
        now = utcnow()
        pods: dict[str, list[Obj]] = defaultdict(list)
        for pod in self.objects("/pods"):
            pods[pod["metadata"].get("namespace", "")].append(pod)
        for rs in self.objects("apps/replicasets"):
            ns = rs["metadata"].get("namespace", "")
            await self.guard(f"replicaset {ns}/{rs['metadata']['name']}", self.sync_one(rs, pods[ns], now))

    async def sync_one(self, rs: Obj, pods: list[Obj], now: dt.datetime) -> None:
        pod_rt = self.kind("", "v1", "pods")
        spec = rs.get("spec") or {}
        claims = ownership.claim(rs, spec.get("selector"), pods)
        mine = list(claims.owned)
        for pod in claims.adopt:
            adopted = await self.guard("adopt", self.rest.update(
                pod_rt, pod["metadata"]["namespace"], pod["metadata"]["name"],
                ownership.with_owner(pod, ownership.owner_reference(rs)), self.opts))
            if adopted is None:
                return  # a retry is queued; acting on a partial view would create pods it is adopting
            mine.append(adopted)
        for pod in claims.release:
            await self.guard("release", self.rest.update(
                pod_rt, pod["metadata"]["namespace"], pod["metadata"]["name"],
                ownership.without_owners(pod, [ownership.uid(rs)]), self.opts))
        active = [p for p in mine if pod_active(p)]
        failure = ""
        if not ownership.being_deleted(rs):
            failure = await self._manage(rs, active)
        status = replica_set_status(rs, active, now)
        if failure:
            status["conditions"] = [_failure_condition(failure, now)]
        elif status.get("conditions") and replica_diff(rs, active) == 0:
            status.pop("conditions")
        if status != rs.get("status"):
            updated = copy.deepcopy(rs)
            updated["status"] = status
            await self.rest.update(self.kind("apps", "v1", "replicasets"), rs["metadata"]["namespace"],
                                   rs["metadata"]["name"], updated, self.opts, subresource="status")
        wait = next_availability_check(rs, active, now)
        if wait is not None:
            self.requeue_after(wait + 0.01)

    async def _manage(self, rs: Obj, active: list[Obj]) -> str:
        """Create or delete pods; returns the apiserver's refusal message when a create failed."""
        pod_rt = self.kind("", "v1", "pods")
        ns = rs["metadata"]["namespace"]
        diff = replica_diff(rs, active)
        template = (rs.get("spec") or {}).get("template") or {}
        for _ in range(min(diff, BURST)):
            try:
                pod = await self.rest.create(pod_rt, ns, pod_from_template(rs, template), self.opts)
            except ApiError as err:
                if namespace_terminating(err):
                    return ""
                await record_event(self.rest, rs, type="Warning", reason="FailedCreate",
                                   message=f"Error creating: {err.message}", component=COMPONENT)
                self.requeue_after(1.0)
                return err.message
            await record_event(self.rest, rs, type="Normal", reason="SuccessfulCreate",
                               message=f"Created pod: {pod['metadata']['name']}", component=COMPONENT)
        for pod in deletion_order(active)[:min(max(-diff, 0), BURST)]:
            name = pod["metadata"]["name"]
            deleted = await self.guard(f"delete pod {name}", self.rest.delete(
                pod_rt, ns, name, {"preconditions": {"uid": ownership.uid(pod)}}, self.opts))
            if deleted is not None:
                await record_event(self.rest, rs, type="Normal", reason="SuccessfulDelete",
                                   message=f"Deleted pod: {name}", component=COMPONENT)
        return ""
