"""What a Deployment reports: replica counts and the ``Available`` and ``Progressing`` conditions.

As ``calculateStatus`` and ``syncRolloutStatus`` in ``pkg/controller/deployment`` compute them: counts are
summed over the Deployment's ReplicaSets (``updatedReplicas`` is the new one's); ``Available`` is True when
at least ``replicas - maxUnavailable`` pods are available; ``Progressing`` tells the rollout's story —
``NewReplicaSetCreated`` or ``FoundNewReplicaSet`` when it starts, ``ReplicaSetUpdated`` each time it makes
progress (which resets the ``progressDeadlineSeconds`` clock), ``NewReplicaSetAvailable`` when complete,
``ProgressDeadlineExceeded`` (status False) when no progress was made in time, and ``DeploymentPaused`` /
``DeploymentResumed``. A condition keeps its ``lastTransitionTime`` while its status stays the same.
``kubectl rollout status`` reads exactly these fields.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from meshlab.cluster.cells import parse_time
from meshlab.cluster.controllers.ownership import meta
from meshlab.cluster.controllers.rollouts import max_unavailable, replicas, status_count

Obj = dict[str, Any]

NO_DEADLINE = 2**31 - 1


def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def set_condition(status: Obj, kind: str, state: str, reason: str, message: str, now: dt.datetime, *,
                  force: bool = False) -> None:
    """``SetDeploymentCondition``: same status and reason is no change (unless ``force``); the transition
    time survives as long as the status does."""
    current = get_condition(status, kind)
    if current is not None and current.get("status") == state and current.get("reason") == reason and not force:
        return
    cond = {"type": kind, "status": state, "lastUpdateTime": _stamp(now), "lastTransitionTime": _stamp(now),
            "reason": reason, "message": message}
    if current is not None and current.get("status") == state:
        cond["lastTransitionTime"] = current.get("lastTransitionTime", cond["lastTransitionTime"])
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind] + [cond]


def has_deadline(d: Obj) -> bool:
    deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return deadline is not None and int(deadline) != NO_DEADLINE


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: dt.datetime) -> Obj:
    """``calculateStatus``: counts summed over the ReplicaSets and the ``Available`` condition."""
    old = d.get("status") or {}
    available = sum(status_count(rs, "availableReplicas") for rs in all_rss)
    counts = {
        "replicas": sum(status_count(rs, "replicas") for rs in all_rss),
        "updatedReplicas": status_count(new_rs, "replicas"),
        "readyReplicas": sum(status_count(rs, "readyReplicas") for rs in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(sum(replicas(rs) for rs in all_rss) - available, 0),
    }
    status: Obj = {"observedGeneration": int(meta(d).get("generation") or 1)}
    status.update({k: v for k, v in counts.items() if v})
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    status["conditions"] = copy.deepcopy(old.get("conditions") or [])
    if available >= replicas(d) - max_unavailable(d):
        set_condition(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                      now)
    else:
        set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.", now)
    return status


def complete(d: Obj, status: Obj) -> bool:
    want = replicas(d)
    return (int(status.get("updatedReplicas") or 0) == want and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0) >= int(meta(d).get("generation") or 1))


def _progressing(d: Obj, new: Obj) -> bool:
    old = d.get("status") or {}

    def count(status: Obj, key: str) -> int:
        return int(status.get(key) or 0)

    return (count(new, "updatedReplicas") > count(old, "updatedReplicas")
            or count(new, "replicas") - count(new, "updatedReplicas") < count(old, "replicas") - count(old,
                                                                                                     "updatedReplicas")
            or count(new, "readyReplicas") > count(old, "readyReplicas")
            or count(new, "availableReplicas") > count(old, "availableReplicas"))


def deadline_at(d: Obj, status: Obj) -> dt.datetime | None:
    """When the rollout times out if nothing progresses (``None`` when it cannot)."""
    cond = get_condition(status, "Progressing")
    if not has_deadline(d) or cond is None or cond.get("reason") in ("NewReplicaSetAvailable",
                                                                       "ProgressDeadlineExceeded"):
        return None
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    return since + dt.timedelta(seconds=int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0))


def rollout_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: dt.datetime) -> Obj:
    """``syncRolloutStatus``: :func:`calculate_status` plus the ``Progressing`` condition's verdict."""
    status = calculate_status(d, all_rss, new_rs, now)
    if not has_deadline(d):
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != "Progressing"]
        return status
    current = get_condition(d.get("status") or {}, "Progressing")
    finished = (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
                and current is not None and current.get("reason") == "NewReplicaSetAvailable")
    if finished:
        return status
    subject = f'ReplicaSet "{meta(new_rs)["name"]}"' if new_rs else f'Deployment "{meta(d)["name"]}"'
    if complete(d, status):
        set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                      f"{subject} has successfully progressed.", now)
    elif _progressing(d, status):
        set_condition(status, "Progressing", "True", "ReplicaSetUpdated", f"{subject} is progressing.", now,
                      force=True)
    else:
        deadline = deadline_at(d, status)
        cond = get_condition(status, "Progressing")
        if (cond is not None and cond.get("reason") == "ProgressDeadlineExceeded") or (
                deadline is not None and deadline < now):
            set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                          f"{subject} has timed out progressing.", now)
    return status


def paused_condition(d: Obj, now: dt.datetime) -> Obj | None:
    """The status with ``DeploymentPaused``/``DeploymentResumed`` recorded, or ``None`` when unchanged."""
    if not has_deadline(d):
        return None
    status = copy.deepcopy(d.get("status") or {})
    cond = get_condition(status, "Progressing")
    if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
        return None
    paused = bool((d.get("spec") or {}).get("paused"))
    shows_paused = cond is not None and cond.get("reason") == "DeploymentPaused"
    if paused and not shows_paused:
        set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now)
    elif not paused and shows_paused:
        set_condition(status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", now)
    else:
        return None
    return status
