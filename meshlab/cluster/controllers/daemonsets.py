"""The DaemonSet controller: one pod per eligible node, replaced node by node when the template changes.

A node is eligible when it is Ready and matches the template's ``nodeSelector`` and required node
affinity, and the pod tolerates its taints. As in kube-controller-manager's ``daemon`` controller, each
pod is created for one node (required node affinity ``matchFields metadata.name In [node]``, which the
scheduler honours) with the DaemonSet's extra tolerations, and labelled ``controller-revision-hash``
(a hash of the template) and ``pod-template-generation``. Duplicate pods on a node, failed pods and pods on
nodes that are no longer eligible are deleted. ``RollingUpdate`` replaces old pods while at most
``maxUnavailable`` nodes (rounded up from a percentage of the eligible nodes) lack an available new pod,
or, with ``maxSurge``, starts the new pod first and deletes the old one once the new one is available;
``OnDelete`` replaces a pod only when someone deletes it. Status reports what ``kubectl get ds`` shows:
desired, current, ready, up-to-date and available counts, misscheduled pods and ``observedGeneration``.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from meshlab.cluster.controllers import ownership, rollouts
from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.controllers.readiness import pod_active, pod_available, pod_ready, seconds_until_available
from meshlab.cluster.controllers.reconciling import Reconciler, utcnow
from meshlab.cluster.controllers.replicasets import pod_from_template
from meshlab.cluster.controllers.scheduling import node_ready, unfit_reason

Obj = dict[str, Any]

COMPONENT = "daemonset-controller"
HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
# Tolerations every daemon pod gets (``util.AddOrUpdateDaemonPodTolerations``): a node under pressure or
# cordoned still runs its daemons.
DAEMON_TOLERATIONS = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)


def daemon_pod_spec(ds: Obj, node_name: str) -> Obj:
    """The template's pod spec pinned to ``node_name``, with the daemon tolerations."""
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    tolerations = spec.setdefault("tolerations", [])
    for key, effect in DAEMON_TOLERATIONS:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": effect})
    affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}
    return spec


def should_run(ds: Obj, node: Obj) -> bool:
    if not node_ready(node):
        return False
    template_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    probe = daemon_pod_spec(ds, node["metadata"]["name"])
    probe["affinity"] = template_spec.get("affinity") or {}
    return unfit_reason(probe, node) is None


def target_node(pod: Obj) -> str:
    """The node a daemon pod runs on, or is meant for (its ``matchFields`` affinity) before binding."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchFields") or []:
            if expr.get("key") == "metadata.name" and expr.get("operator") == "In" and expr.get("values"):
                return str(expr["values"][0])
    return ""


def current_hash(ds: Obj) -> str:
    return rollouts.template_hash((ds.get("spec") or {}).get("template") or {})


def is_updated(pod: Obj, pod_hash: str) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) == pod_hash


@dataclass
class DaemonPlan:
    create_on: list[str] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)


def plan(ds: Obj, nodes: list[Obj], pods: list[Obj], now: dt.datetime) -> DaemonPlan:
    """What to create and delete (``manage`` and ``rollingUpdate`` of the daemon controller)."""
    out = DaemonPlan()
    pod_hash = current_hash(ds)
    spec = ds.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    by_node: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        if not (pod.get("metadata") or {}).get("deletionTimestamp"):
            by_node[target_node(pod)].append(pod)
    eligible = [n["metadata"]["name"] for n in nodes if should_run(ds, n)]
    for node_name, node_pods in by_node.items():
        if node_name not in eligible:
            out.delete.extend(node_pods)
    strategy = spec.get("updateStrategy") or {}
    rolling = ((strategy.get("rollingUpdate") or {}) if strategy.get("type", "RollingUpdate") == "RollingUpdate"
               else None)
    max_unavailable = max_surge = 0
    if rolling is not None:
        max_surge = rollouts.scaled_value(rolling.get("maxSurge"), len(eligible), round_up=True)
        max_unavailable = rollouts.scaled_value(rolling.get("maxUnavailable", 1), len(eligible), round_up=True)
        if max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1
    unavailable, candidates = 0, []
    for node_name in eligible:
        node_pods = by_node.get(node_name, [])
        failed = [p for p in node_pods if (p.get("status") or {}).get("phase") == "Failed"]
        out.delete.extend(failed)
        running = sorted((p for p in node_pods if p not in failed),
                         key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
        new = [p for p in running if is_updated(p, pod_hash)]
        old = [p for p in running if not is_updated(p, pod_hash)]
        if not running:
            out.create_on.append(node_name)
            unavailable += 1
            continue
        # One daemon pod per node: the oldest new pod (or the oldest pod) stays, extras go.
        keep_new, keep_old = new[:1], ([] if new and rolling is None else old[:1])
        out.delete.extend(new[1:] + old[len(keep_old):])
        if rolling is None:
            continue
        if keep_new and keep_old:
            if pod_available(keep_new[0], min_ready, now):
                out.delete.append(keep_old[0])  # the surge pod took over
            else:
                unavailable += 1
        elif keep_new:
            if not pod_available(keep_new[0], min_ready, now):
                unavailable += 1
        elif not pod_available(keep_old[0], min_ready, now):
            out.delete.append(keep_old[0])  # an unavailable old pod costs nothing to replace
        else:
            candidates.append((node_name, keep_old[0]))
    room = max(max_unavailable - unavailable, 0)
    if max_surge:
        surging = sum(1 for n in eligible if any(is_updated(p, pod_hash) for p in by_node.get(n, []))
                      and any(not is_updated(p, pod_hash) for p in by_node.get(n, [])))
        for node_name, _old in candidates[:max(max_surge - surging, 0)]:
            out.create_on.append(node_name)
    else:
        out.delete.extend(old_pod for _node, old_pod in candidates[:room])
    return out


def daemon_set_status(ds: Obj, nodes: list[Obj], pods: list[Obj], now: dt.datetime) -> Obj:
    pod_hash = current_hash(ds)
    min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
    eligible = {n["metadata"]["name"] for n in nodes if should_run(ds, n)}
    by_node: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        if pod_active(pod):
            by_node[target_node(pod)].append(pod)
    scheduled = [n for n in eligible if by_node.get(n)]
    ready = sum(1 for n in scheduled if any(pod_ready(p) for p in by_node[n]))
    available = sum(1 for n in scheduled if any(pod_available(p, min_ready, now) for p in by_node[n]))
    updated = sum(1 for n in scheduled if any(is_updated(p, pod_hash) for p in by_node[n]))
    status: Obj = {
        "currentNumberScheduled": len(scheduled),
        "numberMisscheduled": sum(1 for n in by_node if n not in eligible),
        "desiredNumberScheduled": len(eligible),
        "numberReady": ready,
        "observedGeneration": int((ds.get("metadata") or {}).get("generation") or 1),
    }
    optional = {"updatedNumberScheduled": updated, "numberAvailable": available,
                "numberUnavailable": len(eligible) - available}
    status.update({k: v for k, v in optional.items() if v})
    return status


class DaemonSetController(Reconciler):
    watches = ("apps/daemonsets", "/pods", "/nodes")
    user = "system:serviceaccount:kube-system:daemon-set-controller"

    async def sync(self) -> None:
        now = utcnow()
        nodes = self.objects("/nodes")
        pods: dict[str, list[Obj]] = defaultdict(list)
        for pod in self.objects("/pods"):
            pods[pod["metadata"].get("namespace", "")].append(pod)
        for ds in self.objects("apps/daemonsets"):
            ns = ds["metadata"].get("namespace", "")
            await self.guard(f"daemonset {ns}/{ds['metadata']['name']}", self.sync_one(ds, nodes, pods[ns], now))

    async def sync_one(self, ds: Obj, nodes: list[Obj], pods: list[Obj], now: dt.datetime) -> None:
        pod_rt = self.kind("", "v1", "pods")
        ns = ds["metadata"]["namespace"]
        claims = ownership.claim(ds, (ds.get("spec") or {}).get("selector"), pods)
        mine = list(claims.owned)
        for pod in claims.adopt:
            adopted = await self.guard("adopt", self.rest.update(
                pod_rt, ns, pod["metadata"]["name"], ownership.with_owner(pod, ownership.owner_reference(ds)),
                self.opts))
            if adopted is None:
                return  # a retry is queued; acting on a partial view would create pods it is adopting
            mine.append(adopted)
        if not ownership.being_deleted(ds):
            steps = plan(ds, nodes, mine, now)
            for node_name in steps.create_on:
                await self._create(ds, node_name)
            for pod in {ownership.uid(p): p for p in steps.delete}.values():
                await self._delete(ds, pod)
        status = daemon_set_status(ds, nodes, mine, now)
        if status != ds.get("status"):
            updated = copy.deepcopy(ds)
            updated["status"] = status
            await self.rest.update(self.kind("apps", "v1", "daemonsets"), ns, ds["metadata"]["name"], updated,
                                   self.opts, subresource="status")
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        waits = [w for p in mine if (w := seconds_until_available(p, min_ready, now))]
        if waits:
            self.requeue_after(min(waits) + 0.01)

    async def _create(self, ds: Obj, node_name: str) -> None:
        template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[HASH_LABEL] = current_hash(ds)
        labels[GENERATION_LABEL] = str((ds.get("metadata") or {}).get("generation") or 1)
        template["spec"] = daemon_pod_spec(ds, node_name)
        pod = await self.guard("create", self.rest.create(self.kind("", "v1", "pods"), ds["metadata"]["namespace"],
                                                          pod_from_template(ds, template), self.opts))
        if pod is not None:
            await record_event(self.rest, ds, type="Normal", reason="SuccessfulCreate",
                               message=f"Created pod: {pod['metadata']['name']}", component=COMPONENT)

    async def _delete(self, ds: Obj, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") == "Failed":
            await record_event(self.rest, ds, type="Warning", reason="FailedDaemonPod",
                               message=f"Found failed daemon pod {pod['metadata']['namespace']}/{name} on node "
                                       f"{target_node(pod)}, will try to kill it", component=COMPONENT)
        deleted = await self.guard("delete", self.rest.delete(self.kind("", "v1", "pods"), pod["metadata"]["namespace"],
                                                              name, {"preconditions": {"uid": ownership.uid(pod)}},
                                                              self.opts))
        if deleted is not None:
            await record_event(self.rest, ds, type="Normal", reason="SuccessfulDelete", message=f"Deleted pod: {name}",
                               component=COMPONENT)
