"""The Deployment controller's decisions, without a server: fence posts, scaling steps, hashes, revisions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from meshlab.cluster.controllers import progress, rollouts

NOW = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": "meshlab/echo:1"}]}}


def deployment(replicas: int = 3, surge: Any = "25%", unavailable: Any = "25%", *, recreate: bool = False,
               annotations: dict[str, str] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": "Recreate"} if recreate else {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE,
                     "strategy": strategy, "revisionHistoryLimit": 2, "progressDeadlineSeconds": 600},
            "status": status or {}}


def replica_set(name: str, replicas: int, available: int | None = None, *, revision: int = 1,
                created: str = "2025-01-01T10:00:00Z", annotations: dict[str, str] | None = None,
                template: dict[str, Any] | None = None) -> dict[str, Any]:
    available = replicas if available is None else available
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"{name}-uid", "creationTimestamp": created,
                         "generation": 1,
                         "annotations": {rollouts.REVISION: str(revision), **(annotations or {})}},
            "spec": {"replicas": replicas, "template": template or TEMPLATE},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available,
                       "observedGeneration": 1}}


@pytest.mark.parametrize(("surge", "unavailable", "desired", "expected"), [
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    ("10%", "10%", 1, (1, 0)),
    (0, 0, 3, (0, 1)),
    ("0%", "0%", 3, (0, 1)),
    (1, 0, 3, (1, 0)),
    ("50%", "50%", 3, (2, 1)),
    ("100%", 0, 3, (3, 0)),
    (2, "34%", 3, (2, 1)),
], ids=["defaults-10", "defaults-4", "defaults-1", "tiny-percent-rounds-surge-up", "both-zero-int",
        "both-zero-percent", "surge-only", "half-rounds-apart", "blue-green", "int-and-percent"])
def test_fenceposts_round_surge_up_and_unavailable_down(surge: Any, unavailable: Any, desired: int,
                                                         expected: tuple[int, int]) -> None:
    assert rollouts.fenceposts(surge, unavailable, desired) == expected


def simulate(replicas: int, surge: Any, unavailable: Any, *, ready_per_tick: int = 100) -> list[tuple[int, int]]:
    """Run a rollout from a fully available old ReplicaSet, one controller step per tick; pods become
    available ``ready_per_tick`` at a time. Returns (pods asked for, pods available) after every step."""
    d = deployment(replicas, surge, unavailable)
    old = replica_set("web-old", replicas, revision=1)
    new = replica_set("web-new", 0, revision=2, created="2025-01-01T11:00:00Z")
    seen = []
    for _ in range(200):
        target = rollouts.new_rs_target(d, [new, old], new)
        if target != new["spec"]["replicas"]:
            new["spec"]["replicas"] = target
        else:
            plan = rollouts.old_rs_targets(d, new, [old])
            if "web-old" in plan:
                old["spec"]["replicas"] = plan["web-old"]
        # The ReplicaSet controller and the kubelet: deletions are immediate, new pods get ready over time.
        old["status"]["replicas"] = old["status"]["availableReplicas"] = old["spec"]["replicas"]
        ready = min(new["spec"]["replicas"], new["status"]["availableReplicas"] + ready_per_tick)
        new["status"]["replicas"], new["status"]["availableReplicas"] = new["spec"]["replicas"], ready
        seen.append((old["spec"]["replicas"] + new["spec"]["replicas"],
                     old["status"]["availableReplicas"] + new["status"]["availableReplicas"]))
        if new["status"]["availableReplicas"] == replicas and old["spec"]["replicas"] == 0:
            return seen
    raise AssertionError(f"the rollout did not finish: {seen[-5:]}")


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "ready_per_tick"), [
    (3, "25%", "25%", 1),
    (10, "25%", "25%", 2),
    (10, 3, 2, 1),
    (5, 0, 1, 1),
    (5, 1, 0, 1),
    (4, "50%", "0%", 100),
    (1, 0, 1, 1),
    (7, "100%", 0, 7),
], ids=["defaults-3", "defaults-10", "docs-example", "no-surge", "no-unavailability", "half-surge",
        "single-replica", "blue-green"])
def test_rolling_update_stays_within_surge_and_availability(replicas: int, surge: Any, unavailable: Any,
                                                             ready_per_tick: int) -> None:
    max_surge, max_unavailable = rollouts.fenceposts(surge, unavailable, replicas)
    steps = simulate(replicas, surge, unavailable, ready_per_tick=ready_per_tick)
    assert max(total for total, _ in steps) <= replicas + max_surge
    assert min(available for _, available in steps) >= replicas - max_unavailable


def test_unavailable_old_replicas_go_before_older_healthy_ones() -> None:
    d = deployment(4, 0, 1)
    new = replica_set("web-new", 0, revision=3, created="2025-01-01T12:00:00Z")
    healthy = replica_set("web-a", 2, revision=1, created="2025-01-01T10:00:00Z")
    sick = replica_set("web-b", 2, available=0, revision=2, created="2025-01-01T11:00:00Z")
    # Oldest first would pick web-a; but web-b's pods are not available, so removing one costs nothing.
    assert rollouts.old_rs_targets(d, new, [healthy, sick]) == {"web-b": 1}


def test_the_new_replica_set_grows_by_the_surge_only() -> None:
    d = deployment(10, 3, 2)
    old = replica_set("web-old", 10)
    new = replica_set("web-new", 0, revision=2)
    assert rollouts.new_rs_target(d, [new, old], new) == 3


def test_recreate_creates_the_new_replica_set_at_full_size() -> None:
    d = deployment(5, recreate=True)
    assert rollouts.new_rs_replicas(d, [replica_set("web-old", 0)], None) == 5
    assert rollouts.max_surge(d) == 0 and rollouts.max_unavailable(d) == 0


def test_scaling_mid_rollout_is_proportional_as_in_the_kubernetes_docs() -> None:
    # "Proportional scaling": 10 replicas, maxSurge 3, old RS at 8 and new at 5; scaled to 15, the 5 extra
    # replicas go 3 to the old ReplicaSet and 2 to the new one.
    d = deployment(15, 3, 2, status={"replicas": 13})
    sized = {rollouts.MAX_REPLICAS: "13", rollouts.DESIRED_REPLICAS: "10"}
    old = replica_set("web-old", 8, annotations=sized)
    new = replica_set("web-new", 5, available=0, revision=2, created="2025-01-01T11:00:00Z", annotations=sized)
    assert rollouts.scaling_event(d, [new, old])
    assert rollouts.proportional_targets(d, new, [old]) == {"web-old": 11, "web-new": 7}


@pytest.mark.parametrize(("sizes", "expected"), [
    ({"web-a": 3}, {"web-a": 5}),
    ({"web-a": 0, "web-b": 0}, {"web-new": 5}),
], ids=["one-active-takes-all", "none-active-newest-takes-all"])
def test_scaling_without_a_rollout_resizes_one_replica_set(sizes: dict[str, int], expected: dict[str, int]) -> None:
    d = deployment(5)
    rss = [replica_set(name, size, created=f"2025-01-01T1{i}:00:00Z") for i, (name, size) in enumerate(sizes.items())]
    new = None if "web-a" in sizes and len(sizes) == 1 else replica_set("web-new", 0, revision=3,
                                                                         created="2025-01-01T12:00:00Z")
    assert rollouts.proportional_targets(d, new, rss) == expected


def test_template_hash_is_stable_and_changes_with_the_template() -> None:
    reordered = {"spec": {"containers": [{"image": "meshlab/echo:1", "name": "main"}]},
                 "metadata": {"labels": {"app": "web"}}}
    assert rollouts.template_hash(TEMPLATE) == rollouts.template_hash(reordered) == "698fb4c875"
    changed = {**TEMPLATE, "spec": {"containers": [{"name": "main", "image": "meshlab/echo:2"}]}}
    assert rollouts.template_hash(changed) != rollouts.template_hash(TEMPLATE)
    assert rollouts.template_hash(TEMPLATE, 1) != rollouts.template_hash(TEMPLATE)
    # Kubernetes' hashes are written with the vowel-free alphabet: never a word, never a confusable digit.
    assert set(rollouts.template_hash(changed)) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_the_new_replica_set_is_found_by_template_ignoring_its_hash_label() -> None:
    hashed = {"metadata": {"labels": {"app": "web", rollouts.HASH_LABEL: "698fb4c875"}}, "spec": TEMPLATE["spec"]}
    other = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "x:2"}]}}
    rss = [replica_set("web-2", 0, template=other), replica_set("web-1", 3, template=hashed)]
    found = rollouts.find_new(deployment(), rss)
    assert found is not None and found["metadata"]["name"] == "web-1"


@pytest.mark.parametrize(("existing", "next_revision", "exists", "expected"), [
    ({}, 1, False, {rollouts.REVISION: "1", rollouts.DESIRED_REPLICAS: "3", rollouts.MAX_REPLICAS: "4",
                    "kubernetes.io/change-cause": "first"}),
    ({rollouts.REVISION: "3"}, 3, True, {rollouts.REVISION: "3", "kubernetes.io/change-cause": "first"}),
    ({rollouts.REVISION: "1"}, 4, True, {rollouts.REVISION: "4", rollouts.REVISION_HISTORY: "1",
                                         "kubernetes.io/change-cause": "first"}),
    ({rollouts.REVISION: "4", rollouts.REVISION_HISTORY: "1"}, 6, True,
     {rollouts.REVISION: "6", rollouts.REVISION_HISTORY: "1,4", "kubernetes.io/change-cause": "first"}),
], ids=["new-replica-set", "already-newest", "rollback-revives-revision-1", "second-rollback"])
def test_revision_annotations(existing: dict[str, str], next_revision: int, exists: bool,
                              expected: dict[str, str]) -> None:
    d = deployment(annotations={"kubernetes.io/change-cause": "first", rollouts.REVISION: "9",
                                "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    rs = replica_set("web-1", 3)
    rs["metadata"]["annotations"] = existing
    assert rollouts.new_rs_annotations(d, rs, next_revision, exists=exists) == expected


def test_new_replica_set_is_named_labelled_and_owned_by_the_deployment() -> None:
    rs = rollouts.new_replica_set(deployment(), "698fb4c875", 1, 1)
    assert rs["metadata"]["name"] == "web-698fb4c875"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": "698fb4c875"}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "698fb4c875"
    assert rs["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                                  "uid": "d-uid", "controller": True, "blockOwnerDeletion": True}]
    assert "pod-template-hash" not in TEMPLATE["metadata"]["labels"]


def test_history_limit_deletes_the_oldest_empty_replica_sets() -> None:
    old = [replica_set(f"web-{r}", 0, revision=r) for r in (1, 2, 3)] + [replica_set("web-4", 1, revision=4)]
    names = [rs["metadata"]["name"] for rs in rollouts.cleanup_candidates(deployment(), old)]
    assert names == ["web-1", "web-2"]


@pytest.mark.parametrize(("status", "previous", "expected"), [
    ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}, None, ("True", "NewReplicaSetAvailable")),
    ({"updatedReplicas": 2, "replicas": 4, "availableReplicas": 3}, ("True", "NewReplicaSetCreated", NOW),
     ("True", "ReplicaSetUpdated")),
    ({"updatedReplicas": 0, "replicas": 3, "availableReplicas": 3},
     ("True", "ReplicaSetUpdated", NOW - dt.timedelta(seconds=601)), ("False", "ProgressDeadlineExceeded")),
    ({"updatedReplicas": 0, "replicas": 3, "availableReplicas": 3},
     ("True", "ReplicaSetUpdated", NOW - dt.timedelta(seconds=30)), ("True", "ReplicaSetUpdated")),
], ids=["complete", "progress", "deadline-passed", "deadline-not-yet"])
def test_progressing_condition(status: dict[str, int], previous: tuple[str, str, dt.datetime] | None,
                               expected: tuple[str, str]) -> None:
    old_status: dict[str, Any] = {"observedGeneration": 1, "updatedReplicas": 0, "replicas": 3,
                                  "readyReplicas": 3, "availableReplicas": 3}
    if previous:
        stamp = previous[2].strftime("%Y-%m-%dT%H:%M:%SZ")
        old_status["conditions"] = [{"type": "Progressing", "status": previous[0], "reason": previous[1],
                                     "message": "", "lastUpdateTime": stamp, "lastTransitionTime": stamp}]
    d = deployment(3, status=old_status)
    new = replica_set("web-new", status["updatedReplicas"], revision=2)
    old = replica_set("web-old", status["replicas"] - status["updatedReplicas"])
    new["status"]["availableReplicas"] = status["availableReplicas"] - old["status"]["availableReplicas"]
    result = progress.rollout_status(d, [new, old], new, NOW)
    cond = progress.get_condition(result, "Progressing")
    assert cond is not None and (cond["status"], cond["reason"]) == expected


def test_available_condition_allows_max_unavailable() -> None:
    d = deployment(4, 1, 1)
    enough = progress.calculate_status(d, [replica_set("web-1", 4, available=3)], None, NOW)
    short = progress.calculate_status(d, [replica_set("web-1", 4, available=2)], None, NOW)
    assert [(c["type"], c["status"]) for c in enough["conditions"]] == [("Available", "True")]
    assert [(c["type"], c["reason"]) for c in short["conditions"]] == [("Available", "MinimumReplicasUnavailable")]
    assert short["unavailableReplicas"] == 2


@pytest.mark.parametrize(("paused", "reason", "expected"), [
    (True, "NewReplicaSetAvailable", ("Unknown", "DeploymentPaused")),
    (False, "DeploymentPaused", ("Unknown", "DeploymentResumed")),
    (True, "DeploymentPaused", None),
    (True, "ProgressDeadlineExceeded", None),
], ids=["pausing", "resuming", "already-paused", "timed-out-stays"])
def test_pausing_is_recorded_in_progressing(paused: bool, reason: str, expected: tuple[str, str] | None) -> None:
    stamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    d = deployment(status={"conditions": [{"type": "Progressing", "status": "True", "reason": reason, "message": "",
                                           "lastUpdateTime": stamp, "lastTransitionTime": stamp}]})
    d["spec"]["paused"] = paused
    status = progress.paused_condition(d, NOW)
    got = None if status is None else [(c["status"], c["reason"]) for c in status["conditions"]]
    assert got == (None if expected is None else [expected])
