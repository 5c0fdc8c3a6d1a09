"""What controllers read from a pod's status: is it active, ready, available, and which to delete first.

A pod is *ready* when its ``Ready`` condition is ``True`` (the kubelet sets it from the containers'
readiness probes) and *available* once it has been ready for ``minReadySeconds`` (measured from the
condition's ``lastTransitionTime``), as ``k8s.io/kubernetes/pkg/api/v1/pod`` defines them. A pod is
*active* until it reaches a terminal phase or starts terminating. When a ReplicaSet has too many pods it
deletes the least valuable first, in the order of ``controller.ActivePodsWithRanks``: unscheduled before
scheduled, Pending before Unknown before Running, not ready before ready, lower
``controller.kubernetes.io/pod-deletion-cost`` first, ready for less time before longer, more container
restarts before fewer, newer before older.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from meshlab.cluster.cells import parse_time

Obj = dict[str, Any]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def pod_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: Obj) -> dt.datetime | None:
    cond = condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def seconds_until_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> float | None:
    """0 when available now, the wait when ready but not for long enough, ``None`` when not ready."""
    if not pod_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = ready_since(pod)
    if since is None:
        return float(min_ready_seconds)
    return max((since + dt.timedelta(seconds=min_ready_seconds) - now).total_seconds(), 0.0)


def pod_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> bool:
    return seconds_until_available(pod, min_ready_seconds, now) == 0.0


def pod_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_active(pod: Obj) -> bool:
    return not pod_terminal(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _timestamp(value: dt.datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _deletion_cost(pod: Obj) -> int:
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def _restarts(pod: Obj) -> int:
    return max((int(s.get("restartCount") or 0) for s in (pod.get("status") or {}).get("containerStatuses") or []
                if isinstance(s, dict)), default=0)


def deletion_order(pods: list[Obj]) -> list[Obj]:
    """``pods`` sorted so that the first ones are the ones to delete when scaling down."""

    def rank(pod: Obj) -> tuple[Any, ...]:
        spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
        ready = pod_ready(pod)
        return (
            bool(spec.get("nodeName")),
            _PHASE_RANK.get(status.get("phase", ""), 0),
            ready,
            _deletion_cost(pod),
            -_timestamp(ready_since(pod)) if ready else 0.0,
            -_restarts(pod),
            -_timestamp(parse_time(meta.get("creationTimestamp"))),
        )

    return sorted(pods, key=rank)
