"""The kubelet's decisions without processes: restart policy, crash-loop back-off, images, init order."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meshlab.cluster.kubelet import lifecycle
from meshlab.cluster.kubelet.lifecycle import BackOffPolicy, Record

POLICY = BackOffPolicy()


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), restart: str = "Always",
        phase: str = "Pending") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers), "restartPolicy": restart}
    if init:
        spec["initContainers"] = list(init)
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec, "status": {"phase": phase}}


def container(name: str = "app", image: str = "meshlab/echo:1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def run_then_exit(record: Record, code: int, start: float, end: float) -> Record:
    begun = lifecycle.started(record, f"id{record.instances}", start, startup_probe=False, readiness_probe=False)
    return lifecycle.exited(begun, code, end)


def crash_loop_waits(crashes: int, *, runs_for: float = 0.0) -> tuple[list[float], list[str]]:
    """Simulate a container that exits with 1 after ``runs_for`` seconds, every time it is started."""
    p = pod(container())
    records = {"app": Record()}
    now, last_exit = 0.0, None
    waits: list[float] = []
    messages: list[str] = []
    while len(waits) < crashes:
        plan = lifecycle.plan(p, records, now, POLICY)
        records = plan.records
        if plan.start:
            if last_exit is not None:
                waits.append(now - last_exit)
            last_exit = now + runs_for
            records["app"] = run_then_exit(records["app"], 1, now, last_exit)
            now = last_exit
        else:
            assert records["app"].waiting is not None and records["app"].waiting[0] == "CrashLoopBackOff"
            messages.append(records["app"].waiting[1])
            assert plan.wake_at is not None
            now = plan.wake_at
    return waits, messages


def test_crash_loop_back_off_doubles_from_10s_to_300s() -> None:
    waits, messages = crash_loop_waits(9)
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    assert [m.split()[1] for m in messages[:7]] == ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s", "5m0s"]
    assert messages[0] == "back-off 10s restarting failed container=app pod=p_ns(u1)"


def test_back_off_resets_after_ten_minutes_of_running() -> None:
    waits, _ = crash_loop_waits(4, runs_for=601)
    assert waits == [0, 0, 0, 0]


@pytest.mark.parametrize(("policy", "exit_code", "restarts"), [
    ("Always", 0, True), ("Always", 1, True),
    ("OnFailure", 0, False), ("OnFailure", 2, True),
    ("Never", 0, False), ("Never", 1, False),
], ids=lambda v: str(v))
def test_restart_policy_and_exit_code(policy: str, exit_code: int, restarts: bool) -> None:
    record = run_then_exit(Record(), exit_code, 0, 1)
    plan = lifecycle.plan(pod(container(), restart=policy), {"app": record}, 2.0, POLICY)
    assert (plan.start == ["app"]) is restarts
    assert plan.records["app"].waiting is None


def test_a_non_meshlab_image_waits_with_err_image_pull_then_image_pull_back_off() -> None:
    p = pod(container(image="nginx:1.27"))
    first = lifecycle.plan(p, {}, 0.0, POLICY)
    reason, message = first.records["app"].waiting or ("", "")
    assert (reason, first.start) == ("ErrImagePull", [])
    assert "only runs meshlab images (meshlab/" in message and '"nginx:1.27"' in message
    assert [(e.type, e.reason) for e in first.events] == [
        ("Normal", "Pulling"), ("Warning", "Failed"), ("Warning", "Failed")]
    assert first.wake_at == 1.0
    later = lifecycle.plan(p, first.records, 1.0, POLICY)
    reason, message = later.records["app"].waiting or ("", "")
    assert reason == "ImagePullBackOff"
    assert message.startswith('Back-off pulling image "nginx:1.27": ErrImagePull: ')
    assert [e.reason for e in later.events] == ["BackOff", "Failed"]
    again = lifecycle.plan(p, later.records, 2.0, POLICY)
    assert again.events == []  # no news, no new event


def test_init_containers_run_one_at_a_time_in_order() -> None:
    p = pod(container(), init=(container("one"), container("two")))
    plan = lifecycle.plan(p, {}, 0.0, POLICY)
    assert plan.start == ["one"]
    records = {**plan.records, "one": run_then_exit(Record(), 0, 0, 1)}
    assert lifecycle.plan(p, records, 1.0, POLICY).start == ["two"]
    records["two"] = run_then_exit(Record(), 0, 1, 2)
    assert lifecycle.plan(p, records, 2.0, POLICY).start == ["app"]


@pytest.mark.parametrize(("restart", "expected"), [("Never", []), ("OnFailure", ["one"]), ("Always", ["one"])])
def test_a_failed_init_container(restart: str, expected: list[str]) -> None:
    p = pod(container(), init=(container("one"),), restart=restart)
    plan = lifecycle.plan(p, {"one": run_then_exit(Record(), 1, 0, 1)}, 1.0, POLICY)
    assert plan.start == expected


def test_a_sidecar_must_have_started_before_the_next_container_and_stops_when_the_work_is_done() -> None:
    p = pod(container(), init=(container("proxy", restartPolicy="Always"),), restart="Never")
    assert lifecycle.plan(p, {}, 0.0, POLICY).start == ["proxy"]
    proxy = lifecycle.started(Record(), "px", 0, startup_probe=True, readiness_probe=False)
    assert lifecycle.plan(p, {"proxy": proxy}, 1.0, POLICY).start == []
    proxy = lifecycle.probed(proxy, started=True)
    assert lifecycle.plan(p, {"proxy": proxy}, 2.0, POLICY).start == ["app"]
    done = lifecycle.plan(p, {"proxy": proxy, "app": run_then_exit(Record(), 0, 2, 3)}, 3.0, POLICY)
    assert (done.start, done.stop) == ([], ["proxy"])


def test_a_terminal_pod_is_left_alone() -> None:
    record = run_then_exit(Record(), 1, 0, 1)
    assert lifecycle.plan(pod(container(), phase="Failed"), {"app": record}, 5.0, POLICY).start == []


def test_a_container_of_a_previous_kubelet_run_is_restarted_with_a_higher_count() -> None:
    stored = {"name": "app", "restartCount": 2, "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
              "containerID": "meshlab://abc"}
    record = lifecycle.resumed(stored, 100.0)
    assert record.last is not None and record.last.reason == "ContainerStatusUnknown"
    plan = lifecycle.plan(pod(container()), {"app": record}, 100.0, POLICY)
    assert plan.start == ["app"]
    begun = lifecycle.started(plan.records["app"], "new", 100.0, startup_probe=False, readiness_probe=False)
    assert begun.restart_count == 3


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.2, "200ms"), (10, "10s"), (80, "1m20s"), (300, "5m0s"), (1.5, "1.5s"), (3725, "1h2m5s"),
])
def test_go_duration(seconds: float, text: str) -> None:
    assert lifecycle.go_duration(seconds) == text


def test_probe_results_never_make_an_unstarted_container_ready() -> None:
    record = lifecycle.started(Record(), "x", 0, startup_probe=True, readiness_probe=False)
    assert replace(lifecycle.probed(record, ready=True)).running.ready is False  # type: ignore[union-attr]


def test_after_a_kubelet_restart_init_containers_run_again_before_the_app() -> None:
    stored = {"initContainerStatuses": [{"name": "one", "restartCount": 0,
                                         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
              "containerStatuses": [{"name": "app", "restartCount": 0, "state": {"running": {}}}]}
    records = {s["name"]: lifecycle.resumed(s, 50.0) for key in stored for s in stored[key]}
    p = pod(container(), init=(container("one"),))
    assert lifecycle.plan(p, records, 50.0, POLICY).start == ["one"]
    records["one"] = run_then_exit(records["one"], 0, 50, 51)
    assert lifecycle.plan(p, records, 51.0, POLICY).start == ["app"]
