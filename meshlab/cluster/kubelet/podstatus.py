"""A pod's ``status`` as a real kubelet writes it, computed from what the runtime observed.

Ported in behaviour (not code) from the kubelet's ``generateAPIPodStatus``, ``getPhase`` and
``convertToAPIContainerStatuses`` (``pkg/kubelet/kubelet_pods.go``) and ``pkg/kubelet/status/generate.go``:

* container statuses: ``state`` is exactly one of ``waiting`` (``ContainerCreating``, ``PodInitializing``,
  ``CrashLoopBackOff`` ...), ``running`` or ``terminated``; ``lastState`` holds the previous instance;
  ``ready``/``started`` come from the probes; regular containers are sorted by name, init containers keep
  spec order; a completed init container is ``ready``.
* phase: ``Pending`` until every init container is done and every container has started once;
  ``Running`` while one runs (or will be restarted); ``Succeeded``/``Failed`` once all have stopped for
  good. A terminal phase is never left.
* conditions, in the kubelet's order after any it does not own: ``PodReadyToStartContainers``,
  ``Initialized``, ``Ready``, ``ContainersReady``, ``PodScheduled``, with ``lastTransitionTime`` kept while
  the status does not change, and Kubernetes' reasons and messages (``ContainersNotReady``,
  ``containers with unready status: [app]`` ...).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from meshlab.cluster.kubelet import images
from meshlab.cluster.kubelet.lifecycle import Exited, Record

Obj = dict[str, Any]

KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
TERMINAL = ("Succeeded", "Failed")


def rfc3339(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_id(raw: str) -> str:
    return f"meshlab://{raw}"


def _terminated(exited: Exited) -> Obj:
    out: Obj = {"exitCode": exited.exit_code, "reason": exited.reason, "startedAt": rfc3339(exited.started_at),
                "finishedAt": rfc3339(exited.finished_at)}
    if exited.container_id:
        out["containerID"] = container_id(exited.container_id)
    if exited.message:
        out["message"] = exited.message
    return out


def _image_id(reference: str) -> str:
    try:
        return images.parse(reference).image_id
    except images.ImageError:
        return ""


def _volume_mounts(container: Obj) -> list[Obj]:
    out = []
    for mount in container.get("volumeMounts") or []:
        item: Obj = {"name": mount.get("name", ""), "mountPath": mount.get("mountPath", "")}
        if mount.get("readOnly"):
            item["readOnly"] = True
            item["recursiveReadOnly"] = "Disabled"
        out.append(item)
    return out


def container_status(container: Obj, record: Record, *, pod_has_init: bool, init: bool) -> Obj:
    """One entry of ``containerStatuses`` / ``initContainerStatuses``."""
    reference = str(container.get("image", ""))
    status: Obj = {"name": container["name"], "image": reference, "imageID": "", "lastState": {},
                   "ready": False, "restartCount": record.restart_count, "started": False}
    mounts = _volume_mounts(container)
    if mounts:
        status["volumeMounts"] = mounts
    current_id = record.running.container_id if record.running else (record.last.container_id if record.last else "")
    if current_id:
        status["containerID"] = container_id(current_id)
        status["imageID"] = _image_id(reference)
    if record.running is not None:
        status["state"] = {"running": {"startedAt": rfc3339(record.running.started_at)}}
        # a regular init container is ready only once it has completed
        status["ready"] = record.running.ready and (not init or container.get("restartPolicy") == "Always")
        status["started"] = record.running.started
        if record.last is not None:
            status["lastState"] = {"terminated": _terminated(record.last)}
    elif record.waiting is not None:
        reason, message = record.waiting
        waiting: Obj = {"reason": reason}
        if message:
            waiting["message"] = message
        status["state"] = {"waiting": waiting}
        if record.last is not None:
            status["lastState"] = {"terminated": _terminated(record.last)}
    elif record.last is not None:
        status["state"] = {"terminated": _terminated(record.last)}
        if record.earlier is not None:
            status["lastState"] = {"terminated": _terminated(record.earlier)}
        # a completed (non-sidecar) init container counts as ready
        status["ready"] = init and record.last.exit_code == 0 and container.get("restartPolicy") != "Always"
    else:
        status["state"] = {"waiting": {"reason": "PodInitializing" if pod_has_init else "ContainerCreating"}}
    return status


# -- phase ------------------------------------------------------------------------------------------------------


def _has_last_termination(status: Obj) -> bool:
    return bool((status.get("lastState") or {}).get("terminated"))


def any_regular_started(spec: Obj, statuses: Mapping[str, Obj]) -> bool:
    for container in spec.get("containers") or []:
        status = statuses.get(container["name"]) or {}
        state = status.get("state") or {}
        if state.get("running") or state.get("terminated") or _has_last_termination(status):
            return True
    return False


def phase(spec: Obj, statuses: Mapping[str, Obj], *, terminal: bool = False) -> str:
    """``getPhase``: the pod phase from its container statuses (by container name)."""
    pending_init = failed_init = 0
    unknown = running = waiting = stopped = succeeded = 0
    for container in spec.get("initContainers") or []:
        status = statuses.get(container["name"])
        state = (status or {}).get("state") or {}
        if container.get("restartPolicy") == "Always":
            if status is None:
                unknown += 1
            elif state.get("running"):
                pending_init += 0 if status.get("started") else 1
                running += 1
            elif state.get("waiting") and not _has_last_termination(status):
                pending_init += 1
                waiting += 1
            continue
        if status is None or state.get("running"):
            pending_init += 1
        elif state.get("terminated"):
            failed_init += 1 if state["terminated"].get("exitCode") != 0 else 0
        elif state.get("waiting") and _has_last_termination(status):
            failed_init += 1 if status["lastState"]["terminated"].get("exitCode") != 0 else 0
        else:
            pending_init += 1
    for container in spec.get("containers") or []:
        status = statuses.get(container["name"])
        state = (status or {}).get("state") or {}
        if status is None:
            unknown += 1
        elif state.get("running"):
            running += 1
        elif state.get("terminated"):
            stopped += 1
            succeeded += 1 if state["terminated"].get("exitCode") == 0 else 0
        elif state.get("waiting"):
            if _has_last_termination(status):
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    restart_policy = spec.get("restartPolicy") or "Always"
    if failed_init and restart_policy == "Never":
        return "Failed"
    if (pending_init and not any_regular_started(spec, statuses)) or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Pending"


# -- conditions ----------------------------------------------------------------------------------------------


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> Obj:
    out: Obj = {"type": kind, "status": "True" if ok else "False"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def _names(names: list[str]) -> str:
    return "[" + " ".join(names) + "]"  # Go's %s of a []string


def containers_ready(spec: Obj, statuses: Mapping[str, Obj], pod_phase: str) -> Obj:
    unknown: list[str] = []
    unready: list[str] = []
    watched = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for container in [*watched, *(spec.get("containers") or [])]:
        status = statuses.get(container["name"])
        if status is None:
            unknown.append(container["name"])
        elif not status.get("ready"):
            unready.append(container["name"])
    if pod_phase == "Succeeded" and not unknown:
        return _condition("ContainersReady", False, "PodCompleted")
    if pod_phase == "Failed":
        return _condition("ContainersReady", False, "PodFailed")
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_names(unknown)}")
    if unready:
        messages.append(f"containers with unready status: {_names(unready)}")
    if messages:
        return _condition("ContainersReady", False, "ContainersNotReady", ", ".join(messages))
    return _condition("ContainersReady", True)


def pod_ready(spec: Obj, conditions: list[Obj], statuses: Mapping[str, Obj], pod_phase: str) -> Obj:
    ready = containers_ready(spec, statuses, pod_phase)
    if ready["status"] != "True":
        return {**ready, "type": "Ready"}
    unready = []
    for gate in spec.get("readinessGates") or []:
        kind = gate.get("conditionType", "")
        found = next((c for c in conditions if c.get("type") == kind), None)
        if found is None:
            unready.append(f'corresponding condition of pod readiness gate "{kind}" does not exist.')
        elif found.get("status") != "True":
            unready.append(f'the status of pod readiness gate "{kind}" is not "True", but {found.get("status")}')
    if unready:
        return _condition("Ready", False, "ReadinessGatesNotReady", ", ".join(unready))
    return _condition("Ready", True)


def initialized(spec: Obj, statuses: Mapping[str, Obj], pod_phase: str) -> Obj:
    unknown: list[str] = []
    incomplete: list[str] = []
    for container in spec.get("initContainers") or []:
        status = statuses.get(container["name"])
        if status is None:
            unknown.append(container["name"])
        elif not (status.get("started") if container.get("restartPolicy") == "Always" else status.get("ready")):
            incomplete.append(container["name"])
    if pod_phase == "Succeeded" and not unknown:
        return _condition("Initialized", True, "PodCompleted")
    if any_regular_started(spec, statuses):
        return _condition("Initialized", True)
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_names(unknown)}")
    if incomplete:
        messages.append(f"containers with incomplete status: {_names(incomplete)}")
    if messages:
        return _condition("Initialized", False, "ContainersNotInitialized", ", ".join(messages))
    return _condition("Initialized", True)


def _stamp(conditions: list[Obj], old: list[Obj], now: str) -> list[Obj]:
    previous = {c.get("type"): c for c in old if isinstance(c, dict)}
    out = []
    for cond in conditions:
        before = previous.get(cond["type"])
        since = before.get("lastTransitionTime") if before and before.get("status") == cond["status"] else None
        out.append({**cond, "lastProbeTime": None, "lastTransitionTime": since or now})
    return out


# -- the whole status -------------------------------------------------------------------------------------------


def pod_status(pod: Obj, records: Mapping[str, Record], *, pod_ip: str, host_ip: str, now: float,
               sandbox_ready: bool, terminal: bool = False) -> Obj:
    """The ``status`` to write for ``pod`` (other fields of the old status are kept)."""
    spec = pod.get("spec") or {}
    old: Obj = dict(pod.get("status") or {})
    has_init = bool(spec.get("initContainers"))
    init_statuses = [container_status(c, records.get(c["name"], Record()), pod_has_init=has_init, init=True)
                     for c in spec.get("initContainers") or []]
    regular = [container_status(c, records.get(c["name"], Record()), pod_has_init=has_init, init=False)
               for c in spec.get("containers") or []]
    regular.sort(key=lambda s: str(s["name"]))
    by_name = {s["name"]: s for s in [*init_statuses, *regular]}
    new_phase = phase(spec, by_name, terminal=terminal)
    if old.get("phase") in TERMINAL:
        new_phase = old["phase"]
    stamp = rfc3339(now)
    kept = [c for c in old.get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS]
    owned = [_condition("PodReadyToStartContainers", sandbox_ready), initialized(spec, by_name, new_phase)]
    owned.append(pod_ready(spec, kept, by_name, new_phase))
    owned.append(containers_ready(spec, by_name, new_phase))
    owned.append(_condition("PodScheduled", True))
    status = {**old, "phase": new_phase, "conditions": [*kept, *_stamp(owned, old.get("conditions") or [], stamp)],
              "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": old.get("startTime") or stamp,
              "containerStatuses": regular}
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    else:
        status.pop("initContainerStatuses", None)
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
