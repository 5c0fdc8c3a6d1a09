"""The scheduler: bind each new pod to a node that fits it, or say why none does.

A pod with no ``spec.nodeName``, for ``schedulerName: default-scheduler`` and without ``schedulingGates``,
is checked against every node the way kube-scheduler's default filter plugins check it: its
``nodeSelector`` and required node affinity (``matchExpressions`` on labels, ``matchFields`` on
``metadata.name``) must match, and it must tolerate the node's ``NoSchedule``/``NoExecute`` taints —
including the ``node.kubernetes.io/not-ready`` and ``unschedulable`` taints the node lifecycle controller
adds for a node that is not Ready or is cordoned. Its PersistentVolumeClaims must exist and be bound, or
wait for their first consumer (``volume.kubernetes.io/selected-node`` is then set on them and the pod waits
until they are bound). The chosen node gets the pod through the ``binding`` subresource, with a
``Scheduled`` event; a pod that fits nowhere gets ``PodScheduled=False``/``Unschedulable`` and a
``FailedScheduling`` event whose message is kube-scheduler's (``0/1 nodes are available: 1 node(s) didn't
match Pod's node affinity/selector. preemption: ...``).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import Counter
from typing import Any

from meshlab.cluster import subresources
from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.controllers.readiness import condition, pod_terminal
from meshlab.cluster.controllers.reconciling import Reconciler, utcnow
from meshlab.cluster.rest import RestStorage
from meshlab.cluster.selectors import match_label_selector

Obj = dict[str, Any]

COMPONENT = "default-scheduler"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
NO_NODES = "no nodes available to schedule pods"
AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
UNBOUND_CLAIMS = "pod has unbound immediate PersistentVolumeClaims"


# --- nodes ------------------------------------------------------------------------------------------------

def node_ready(node: Obj) -> bool:
    cond = condition(node, "Ready")
    return cond is not None and cond.get("status") == "True"


def node_taints(node: Obj) -> list[Obj]:
    """The node's taints, plus those the node lifecycle controller would add for its state."""
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    keys = {t.get("key") for t in taints}
    if not node_ready(node) and "node.kubernetes.io/not-ready" not in keys:
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
    if (node.get("spec") or {}).get("unschedulable") and "node.kubernetes.io/unschedulable" not in keys:
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    return taints


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _requirement_matches(expr: Obj, value: str | None) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
        except ValueError:
            return False
    return False


def node_selector_term_matches(term: Obj, node: Obj) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": (node.get("metadata") or {}).get("name")}
    exprs, field_exprs = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not field_exprs:
        return False  # an empty term matches nothing
    return (all(_requirement_matches(e, labels.get(e.get("key", ""))) for e in exprs)
            and all(_requirement_matches(e, fields.get(e.get("key", ""))) for e in field_exprs))


def matches_node_affinity(pod_spec: Obj, node: Obj) -> bool:
    """``nodeSelector`` and ``requiredDuringSchedulingIgnoredDuringExecution`` (terms are ORed)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not match_label_selector({"matchLabels": pod_spec.get("nodeSelector") or {}}, labels):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not required:
        return True
    return any(node_selector_term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def unfit_reason(pod_spec: Obj, node: Obj) -> str | None:
    """Why the pod cannot go to ``node`` (kube-scheduler's wording), or ``None`` when it fits."""
    if not matches_node_affinity(pod_spec, node):
        return AFFINITY_MISMATCH
    tolerations = [t for t in pod_spec.get("tolerations") or [] if isinstance(t, dict)]
    for taint in node_taints(node):
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            if taint.get("key") == "node.kubernetes.io/unschedulable":
                return "node(s) were unschedulable"
            return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"
    return None


def fit_error(total: int, reasons: list[str]) -> str:
    """``FitError.Error()``: a sorted histogram of reasons, then the preemption verdict."""
    if total == 0:
        return NO_NODES
    histogram = sorted(f"{count} {reason}" for reason, count in Counter(reasons).items())
    text = f"0/{total} nodes are available: " + ", ".join(histogram) + "."
    return text + f" preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."


def choose_node(pod: Obj, nodes: list[Obj], load: Counter[str]) -> tuple[str | None, str]:
    """(node name, "") for the least loaded node that fits, or (None, the FailedScheduling message)."""
    spec = pod.get("spec") or {}
    fitting, reasons = [], []
    for node in nodes:
        reason = unfit_reason(spec, node)
        if reason is None:
            fitting.append(node["metadata"]["name"])
        else:
            reasons.append(reason)
    if not fitting:
        return None, fit_error(len(nodes), reasons)
    return min(fitting, key=lambda name: (load[name], name)), ""


# --- volumes ----------------------------------------------------------------------------------------------

def claim_problem(pod: Obj, claims: dict[str, Obj], classes: dict[str, Obj]) -> tuple[str, list[Obj]]:
    """What stops the pod's PersistentVolumeClaims: ("", claims waiting for a first consumer) or a message."""
    waiting = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        claim_name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim_name:
            continue
        claim = claims.get(claim_name)
        if claim is None:
            return f'persistentvolumeclaim "{claim_name}" not found', []
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            return f'persistentvolumeclaim "{claim_name}" is being deleted', []
        if (claim.get("spec") or {}).get("volumeName") and (claim.get("status") or {}).get("phase") == "Bound":
            continue
        sc = classes.get((claim.get("spec") or {}).get("storageClassName") or "")
        if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer":
            waiting.append(claim)
            continue
        return UNBOUND_CLAIMS, []
    return "", waiting


def prefilter_error(total: int, message: str) -> str:
    if total == 0:
        return NO_NODES
    return (f"0/{total} nodes are available: {message}. preemption: 0/{total} nodes are available: {total} "
            "Preemption is not helpful for scheduling.")


def unschedulable_status(pod: Obj, message: str, now: dt.datetime) -> Obj | None:
    """The pod status with ``PodScheduled=False``, or ``None`` when it already says so."""
    current = condition(pod, "PodScheduled")
    if current is not None and current.get("status") == "False" and current.get("message") == message:
        return None
    status = copy.deepcopy(pod.get("status") or {})
    others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    status["conditions"] = [*others, {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                                      "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      "reason": "Unschedulable", "message": message}]
    return status


def wants_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and spec.get("schedulerName", COMPONENT) == COMPONENT
            and not spec.get("schedulingGates") and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and not pod_terminal(pod))


class Scheduler(Reconciler):
    watches = ("/pods", "/nodes", "/persistentvolumeclaims", "storage.k8s.io/storageclasses")
    user = "system:kube-scheduler"

    def __init__(self, rest: RestStorage) -> None:
        super().__init__(rest)
        self.opts.field_manager = COMPONENT

    async def sync(self) -> None:
        nodes = self.objects("/nodes")
        pods = self.objects("/pods")
        load = Counter(p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName"))
        classes = {sc["metadata"]["name"]: sc for sc in self.objects("storage.k8s.io/storageclasses")}
        now = utcnow()
        for pod in pods:
            if wants_scheduling(pod):
                ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                node = await self.guard(f"schedule {ns}/{name}", self.schedule(pod, nodes, load, classes, now))
                if node:
                    load[node] += 1

    async def schedule(self, pod: Obj, nodes: list[Obj], load: Counter[str], classes: dict[str, Obj],
                       now: dt.datetime) -> str | None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        claims = {c["metadata"]["name"]: c for c in self.objects("/persistentvolumeclaims", ns)}
        problem, waiting = claim_problem(pod, claims, classes)
        if problem:
            await self._unschedulable(pod, prefilter_error(len(nodes), problem), now)
            return None
        node, message = choose_node(pod, nodes, load)
        if node is None:
            await self._unschedulable(pod, message, now)
            return None
        if waiting:
            # Delayed binding: the claims learn the chosen node; the pod is bound once they are.
            await self._select_node(waiting, node)
            return None
        await subresources.bind_pod(self.rest, ns, name, {"target": {"name": node}}, self.opts)
        await record_event(self.rest, pod, type="Normal", reason="Scheduled",
                           message=f"Successfully assigned {ns}/{name} to {node}", component=COMPONENT)
        return node

    async def _unschedulable(self, pod: Obj, message: str, now: dt.datetime) -> None:
        status = unschedulable_status(pod, message, now)
        if status is None:
            return
        updated = copy.deepcopy(pod)
        updated["status"] = status
        await self.rest.update(self.kind("", "v1", "pods"), pod["metadata"]["namespace"], pod["metadata"]["name"],
                               updated, self.opts, subresource="status")
        await record_event(self.rest, pod, type="Warning", reason="FailedScheduling", message=message,
                           component=COMPONENT)

    async def _select_node(self, claims: list[Obj], node: str) -> None:
        pvc_rt = self.kind("", "v1", "persistentvolumeclaims")
        for claim in claims:
            annotations = claim["metadata"].get("annotations") or {}
            if annotations.get(SELECTED_NODE) == node:
                continue
            updated = copy.deepcopy(claim)
            updated["metadata"]["annotations"] = {**annotations, SELECTED_NODE: node}
            await self.rest.update(pvc_rt, claim["metadata"]["namespace"], claim["metadata"]["name"], updated,
                                   self.opts)
