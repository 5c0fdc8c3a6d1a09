"""Pod phase, conditions and container statuses as a real kubelet reports them."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.cluster.kubelet import lifecycle, podstatus
from meshlab.cluster.kubelet.lifecycle import Record

Obj = dict[str, Any]


def running(ready: bool = True, started: bool = True) -> Record:
    record = lifecycle.started(Record(), "c1", 1000, startup_probe=not started, readiness_probe=not ready)
    return lifecycle.probed(record, started=started, ready=ready)


def finished(code: int, *, restarts: int = 0) -> Record:
    record = Record(instances=restarts)
    record = lifecycle.started(record, "c1", 1000, startup_probe=False, readiness_probe=False)
    return lifecycle.exited(record, code, 1010)


def waiting(reason: str, after: Record | None = None) -> Record:
    base = after or Record()
    return Record(instances=base.instances, last=base.last, waiting=(reason, "..."))


def make_pod(names: list[str], *, init: list[str] | None = None, restart: str = "Always",
             status: Obj | None = None) -> Obj:
    spec: Obj = {"restartPolicy": restart, "containers": [{"name": n, "image": "meshlab/echo"} for n in names]}
    if init:
        spec["initContainers"] = [{"name": n, "image": "meshlab/echo"} for n in init]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec,
            "status": status or {"phase": "Pending", "qosClass": "BestEffort"}}


def status_of(pod: Obj, records: dict[str, Record], now: float = 2000.0, **kw: Any) -> Obj:
    return podstatus.pod_status(pod, records, pod_ip="127.10.0.9", host_ip="127.0.0.1", now=now,
                                sandbox_ready=True, **kw)


def conditions(status: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("message", c.get("reason", ""))) for c in status["conditions"]}


@pytest.mark.parametrize(("restart", "records", "phase"), [
    ("Always", {"a": Record()}, "Pending"),
    ("Always", {"a": running()}, "Running"),
    ("Always", {"a": running(), "b": waiting("ContainerCreating")}, "Pending"),
    ("Always", {"a": waiting("CrashLoopBackOff", finished(1))}, "Running"),
    ("Always", {"a": finished(0)}, "Running"),  # about to be restarted
    ("OnFailure", {"a": finished(0)}, "Succeeded"),
    ("OnFailure", {"a": finished(3)}, "Running"),
    ("Never", {"a": finished(0)}, "Succeeded"),
    ("Never", {"a": finished(3)}, "Failed"),
    ("Never", {"a": finished(0), "b": finished(1)}, "Failed"),
    ("Never", {"a": finished(0), "b": running()}, "Running"),
    ("Always", {"a": waiting("ErrImagePull")}, "Pending"),
], ids=["creating", "running", "one-waiting", "crash-loop", "always-stopped", "onfailure-ok", "onfailure-error",
        "never-ok", "never-error", "never-mixed", "never-one-left", "image"])
def test_phase(restart: str, records: dict[str, Record], phase: str) -> None:
    pod = make_pod(sorted(records), restart=restart)
    assert status_of(pod, records)["phase"] == phase


@pytest.mark.parametrize(("init", "restart", "phase", "message"), [
    ({"i1": running()}, "Always", "Pending", "containers with incomplete status: [i1 i2]"),
    ({"i1": finished(0), "i2": running()}, "Always", "Pending", "containers with incomplete status: [i2]"),
    ({"i1": finished(1)}, "Never", "Failed", "containers with incomplete status: [i1 i2]"),
    ({"i1": waiting("CrashLoopBackOff", finished(1))}, "Always", "Pending",
     "containers with incomplete status: [i1 i2]"),
    ({"i1": finished(0), "i2": finished(0)}, "Always", "Pending", "True"),
])
def test_init_containers(init: dict[str, Record], restart: str, phase: str, message: str) -> None:
    pod = make_pod(["app"], init=["i1", "i2"], restart=restart)
    status = status_of(pod, init)
    assert status["phase"] == phase
    state, text = conditions(status)["Initialized"]
    assert (text if state == "False" else state) == message
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}


def test_a_completed_init_container_is_ready_and_terminated() -> None:
    status = status_of(make_pod(["app"], init=["i1"]), {"i1": finished(0), "app": running()})
    init = status["initContainerStatuses"][0]
    assert (init["ready"], init["started"], init["state"]["terminated"]["reason"]) == (True, False, "Completed")
    assert status["phase"] == "Running"


def test_conditions_in_the_kubelets_order_with_its_messages() -> None:
    status = status_of(make_pod(["b", "a"]), {"a": running(ready=False), "b": running()})
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    found = conditions(status)
    assert found["Ready"] == ("False", "containers with unready status: [a]")
    assert found["ContainersReady"] == ("False", "containers with unready status: [a]")
    assert [s["name"] for s in status["containerStatuses"]] == ["a", "b"]  # sorted by name


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    pod = make_pod(["a"])
    first = status_of(pod, {"a": running(ready=False)}, now=1_000_000)
    second = status_of({**pod, "status": first}, {"a": running(ready=False)}, now=1_000_100)
    assert first["conditions"] == second["conditions"]
    third = status_of({**pod, "status": second}, {"a": running(ready=True)}, now=1_000_200)
    times = {c["type"]: c["lastTransitionTime"] for c in third["conditions"]}
    assert times["Ready"] == "1970-01-12T13:50:00Z" != times["Initialized"]


def test_conditions_the_kubelet_does_not_own_are_kept_first() -> None:
    gate = {"type": "example.com/gate", "status": "False"}
    pod = make_pod(["a"], status={"phase": "Running", "conditions": [gate]})
    pod["spec"]["readinessGates"] = [{"conditionType": "example.com/gate"}]
    status = status_of(pod, {"a": running()})
    assert status["conditions"][0] == gate
    assert conditions(status)["Ready"] == (
        "False", 'the status of pod readiness gate "example.com/gate" is not "True", but False')


def test_a_succeeded_pod_says_pod_completed() -> None:
    status = status_of(make_pod(["a"], restart="Never"), {"a": finished(0)})
    assert status["phase"] == "Succeeded"
    found = {c["type"]: c for c in status["conditions"]}
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "PodCompleted")


def test_a_terminal_phase_is_never_left() -> None:
    pod = make_pod(["a"], status={"phase": "Failed"})
    assert status_of(pod, {"a": running()})["phase"] == "Failed"


def test_container_status_shapes() -> None:
    crash = waiting("CrashLoopBackOff", finished(1, restarts=2))
    status = status_of(make_pod(["a", "b"]), {"a": running(), "b": crash})
    a, b = status["containerStatuses"]
    assert a["state"]["running"]["startedAt"] == "1970-01-01T00:16:40Z"
    assert a["containerID"] == "meshlab://c1" and a["imageID"].startswith("meshlab/echo@sha256:")
    assert (a["ready"], a["started"], a["restartCount"], a["lastState"]) == (True, True, 0, {})
    assert b["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "..."}}
    assert b["lastState"]["terminated"]["exitCode"] == 1 and b["lastState"]["terminated"]["reason"] == "Error"
    assert (b["ready"], b["started"], b["restartCount"]) == (False, False, 2)
    assert status["podIP"] == "127.10.0.9" and status["podIPs"] == [{"ip": "127.10.0.9"}]
