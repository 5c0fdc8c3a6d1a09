"""What the kubelet should do next for one pod: a pure function of spec, observed containers and time.

This is the decision half of the kubelet's ``SyncPod`` (``pkg/kubelet/kuberuntime/kuberuntime_manager.go``
``computePodActions``), without I/O: init containers run one at a time in order (a *sidecar*, an init
container with ``restartPolicy: Always``, only has to have started); then every regular container runs.
A container that exited is restarted according to ``restartPolicy`` (``Always``; ``OnFailure`` when the
exit code is not 0; ``Never``), through the kubelet's crash-loop back-off (``pkg/util/flowcontrol``
``Backoff``): the first restart is immediate, each later one waits 10 s, 20 s, 40 s ... up to 300 s
(``back-off 20s restarting failed container=...`` is the ``CrashLoopBackOff`` message), and the back-off
resets once a container has run for twice the maximum (10 minutes). An image the lab cannot run waits
with ``ErrImagePull``, then ``ImagePullBackOff`` under the same back-off. The shell runs the returned
actions and records what happened with :func:`started`, :func:`exited` and friends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshlab.cluster.kubelet import images

Obj = dict[str, Any]

CRASH_LOOP = "CrashLoopBackOff"
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"
CONFIG_ERROR = "CreateContainerConfigError"


@dataclass(frozen=True)
class BackOffPolicy:
    initial: float = 10.0
    maximum: float = 300.0
    # how long ErrImagePull shows before the kubelet's next sync reports ImagePullBackOff
    pull_error_visible: float = 1.0


@dataclass(frozen=True)
class BackOff:
    duration: float
    last_update: float


def next_backoff(entry: BackOff | None, event_time: float, now: float, policy: BackOffPolicy) -> BackOff:
    """``Backoff.Next``: start at ``initial``, double up to ``maximum``; reset after 2 x maximum of quiet."""
    if entry is None or event_time - entry.last_update > 2 * policy.maximum:
        return BackOff(policy.initial, now)
    return BackOff(min(entry.duration * 2, policy.maximum), now)


def in_backoff(entry: BackOff | None, event_time: float, now: float, policy: BackOffPolicy) -> bool:
    """``Backoff.IsInBackOffSince``: still waiting ``duration`` after ``event_time``?"""
    if entry is None or now - entry.last_update > 2 * policy.maximum:
        return False
    return now - event_time < entry.duration


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it (10s, 1m20s, 5m0s, 200ms)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = round(seconds * 1000, 3)
        return f"{ms:g}ms"
    total = round(seconds, 9)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


# -- what the runtime knows of one container -----------------------------------------------------------------


@dataclass(frozen=True)
class Exited:
    container_id: str
    exit_code: int
    reason: str  # Completed / Error / StartError / ContainerStatusUnknown
    started_at: float
    finished_at: float
    message: str = ""


@dataclass(frozen=True)
class Running:
    container_id: str
    started_at: float
    started: bool  # the startup probe has succeeded (always, without one)
    ready: bool


@dataclass(frozen=True)
class Record:
    """One container across its instances, plus the kubelet's memory about it."""

    instances: int = 0  # instances started (including ones of a previous kubelet run)
    runs: int = 0  # instances started in this sandbox (by this kubelet run)
    running: Running | None = None
    last: Exited | None = None  # most recent finished instance
    earlier: Exited | None = None  # the finished instance before ``last``
    waiting: tuple[str, str] | None = None  # (reason, message) why it is not running
    backoff: BackOff | None = None
    pull_backoff: BackOff | None = None

    @property
    def restart_count(self) -> int:
        return max(self.instances - 1, 0)


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def started(record: Record, container_id: str, now: float, *, startup_probe: bool, readiness_probe: bool) -> Record:
    begun = not startup_probe
    return replace(record, instances=record.instances + 1, runs=record.runs + 1, waiting=None,
                   running=Running(container_id, now, started=begun, ready=begun and not readiness_probe))


def exited(record: Record, exit_code: int, now: float, *, reason: str = "", message: str = "") -> Record:
    run = record.running
    finished = Exited(container_id=run.container_id if run else "", exit_code=exit_code,
                      reason=reason or exit_reason(exit_code), started_at=run.started_at if run else now,
                      finished_at=now, message=message)
    return replace(record, running=None, last=finished, earlier=record.last)


def failed_to_start(record: Record, container_id: str, message: str, now: float) -> Record:
    """The process could not be executed (``StartError``, exit code 128, as containerd reports it)."""
    begun = started(record, container_id, now, startup_probe=False, readiness_probe=False)
    return exited(begun, 128, now, reason="StartError", message=message)


def probed(record: Record, *, started: bool | None = None, ready: bool | None = None) -> Record:
    if record.running is None:
        return record
    run = record.running
    new_started = run.started if started is None else started
    new_ready = (run.ready if ready is None else ready) and new_started
    return replace(record, running=replace(run, started=new_started, ready=new_ready))


def resumed(status: Obj | None, now: float) -> Record:
    """A container known from the stored status of a previous kubelet run: its processes are gone."""
    if not status:
        return Record()
    count = int(status.get("restartCount") or 0)
    state = status.get("state") or {}
    if state.get("running"):
        gone = Exited(container_id=str(status.get("containerID", "")).removeprefix("meshlab://"), exit_code=137,
                      reason="ContainerStatusUnknown", started_at=now, finished_at=now,
                      message="The container could not be located when the lab restarted")
        return Record(instances=count + 1, last=gone)
    if count or (status.get("lastState") or {}).get("terminated") or state.get("terminated"):
        return Record(instances=count + 1)
    return Record()


# -- decisions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    container: str = ""


@dataclass
class Plan:
    records: dict[str, Record]
    start: list[str] = field(default_factory=list)  # container names, init containers first
    stop: list[str] = field(default_factory=list)  # sidecars to stop once the pod's work is done
    events: list[Event] = field(default_factory=list)
    wake_at: float | None = None

    def wake(self, at: float) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def pod_label(pod: Obj) -> str:
    """``format.Pod``: ``name_namespace(uid)``."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"


def should_restart(policy: str, last: Exited) -> bool:
    return policy == "Always" or (policy == "OnFailure" and last.exit_code != 0)


def _set_waiting(plan: Plan, name: str, record: Record, reason: str, message: str, events: list[Event]) -> Record:
    if record.waiting is None or record.waiting[0] != reason:
        plan.events.extend(events)
    return replace(record, waiting=(reason, message))


def _try_start(plan: Plan, pod: Obj, container: Obj, record: Record, now: float, policy: BackOffPolicy) -> Record:
    """Start the container unless its image cannot run here or it is in crash-loop back-off."""
    name = container["name"]
    reference = str(container.get("image", ""))
    try:
        images.parse(reference)
    except images.ImageError as err:
        entry = record.pull_backoff
        if entry is None or now - entry.last_update >= entry.duration:
            entry = next_backoff(entry, now, now, policy)
            record = replace(record, pull_backoff=entry, waiting=None)
            plan.wake(now + min(policy.pull_error_visible, entry.duration))
            return _set_waiting(plan, name, record, ERR_IMAGE_PULL, str(err), [
                Event("Normal", "Pulling", f'Pulling image "{reference}"', name),
                Event("Warning", "Failed", f'Failed to pull image "{reference}": {err}', name),
                Event("Warning", "Failed", f"Error: {ERR_IMAGE_PULL}", name)])
        visible_until = entry.last_update + min(policy.pull_error_visible, entry.duration)
        if now < visible_until:
            plan.wake(visible_until)
            return record
        plan.wake(entry.last_update + entry.duration)
        return _set_waiting(plan, name, record, IMAGE_PULL_BACKOFF,
                            f'Back-off pulling image "{reference}": {ERR_IMAGE_PULL}: {err}', [
                                Event("Normal", "BackOff", f'Back-off pulling image "{reference}"', name),
                                Event("Warning", "Failed", f"Error: {IMAGE_PULL_BACKOFF}", name)])
    if record.last is not None and record.instances > 0:
        if in_backoff(record.backoff, record.last.finished_at, now, policy):
            assert record.backoff is not None
            plan.wake(record.last.finished_at + record.backoff.duration)
            label = pod_label(pod)
            message = (f"back-off {go_duration(record.backoff.duration)} restarting failed container={name} "
                       f"pod={label}")
            events = [Event("Warning", "BackOff", f"Back-off restarting failed container {name} in pod {label}",
                            name)]
            if record.waiting and record.waiting[0] == CRASH_LOOP and record.waiting[1] != message:
                plan.events.extend(events)  # a new, longer back-off period is news too
            return _set_waiting(plan, name, record, CRASH_LOOP, message, events)
        record = replace(record, backoff=next_backoff(record.backoff, record.last.finished_at, now, policy))
    plan.start.append(name)
    return record


def _is_sidecar(container: Obj) -> bool:
    return container.get("restartPolicy") == "Always"


def plan(pod: Obj, records: Mapping[str, Record], now: float, policy: BackOffPolicy | None = None) -> Plan:
    """Decide which containers to start now, which wait (and why), and when to look again."""
    policy = policy or BackOffPolicy()
    spec = pod.get("spec") or {}
    result = Plan(records=dict(records))
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return result  # pods never leave a terminal phase
    restart_policy = spec.get("restartPolicy") or "Always"
    recs = result.records
    # Init containers run once per sandbox: a restarted kubelet (a new sandbox) runs them again.
    regular_started = any(recs.get(c["name"], Record()).runs for c in spec.get("containers") or [])
    regular_done = regular_started and all(
        (r := recs.get(c["name"], Record())).running is None and r.last is not None
        and not should_restart(restart_policy, r.last) for c in spec.get("containers") or [])

    for container in spec.get("initContainers") or []:
        name = container["name"]
        record = recs.get(name, Record())
        if _is_sidecar(container):
            if record.running is None and not regular_done:
                recs[name] = _try_start(result, pod, container, record, now, policy)
            if not (record.running and record.running.started) and not regular_started:
                return result
            continue
        if record.running is not None:
            return result
        last = record.last
        if last is not None and last.exit_code == 0 and record.runs:
            continue
        if regular_started:
            continue  # initialised once already: init containers are not run again for this sandbox
        if last is not None and restart_policy == "Never":
            return result  # a failed init container fails a Never pod
        recs[name] = _try_start(result, pod, container, record, now, policy)
        return result

    for container in spec.get("containers") or []:
        name = container["name"]
        record = recs.get(name, Record())
        if record.running is not None:
            continue
        if record.last is not None and not should_restart(restart_policy, record.last):
            continue
        recs[name] = _try_start(result, pod, container, record, now, policy)

    if regular_done:
        result.stop.extend(c["name"] for c in spec.get("initContainers") or []
                           if _is_sidecar(c) and recs.get(c["name"], Record()).running is not None)
    return result
