"""The other controllers' decisions, without a server: scheduling, deletion order, claims, endpoints,
garbage collection, DaemonSet updates, volume matching and namespace conditions."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest

from meshlab.cluster.controllers import (
    daemonsets,
    endpoints,
    garbagecollector,
    namespaces,
    ownership,
    readiness,
    replicasets,
    scheduling,
    volumebinding,
)
from meshlab.cluster.controllers.garbagecollector import OwnerState, Verdict

NOW = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str = "lab-node", *, ready: bool = True, labels: dict[str, str] | None = None,
         taints: list[dict[str, str]] | None = None, cordoned: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": cordoned},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(name: str = "p", *, node_name: str = "", phase: str = "Running", ready: bool = True, ready_for: float = 60,
        created: float = 100, labels: dict[str, str] | None = None, ip: str = "", deleting: bool = False,
        restarts: int = 0, cost: int | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"{name}-uid",
                            "creationTimestamp": stamp(created), "labels": labels or {}}
    if cost is not None:
        meta["annotations"] = {readiness.DELETION_COST: str(cost)}
    if deleting:
        meta["deletionTimestamp"] = stamp(0)
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": stamp(ready_for)}],
        "containerStatuses": [{"name": "main", "restartCount": restarts}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "meshlab/echo:1"}], **spec},
            "status": status}


# --- scheduling ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "the_node", "reason"), [
    ({}, node(), None),
    ({"nodeSelector": {"disktype": "ssd"}}, node(), "node(s) didn't match Pod's node affinity/selector"),
    ({"nodeSelector": {"disktype": "ssd"}}, node(labels={"disktype": "ssd"}), None),
    ({}, node(ready=False), "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"),
    ({}, node(cordoned=True), "node(s) were unschedulable"),
    ({}, node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
     "node(s) had untolerated taint {gpu: yes}"),
    ({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]},
     node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]), None),
    ({"tolerations": [{"operator": "Exists"}]}, node(taints=[{"key": "gpu", "effect": "NoExecute"}]), None),
    ({}, node(taints=[{"key": "soft", "effect": "PreferNoSchedule"}]), None),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}]}}}}, node(),
     "node(s) didn't match Pod's node affinity/selector"),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]}]}}}}, node(labels={"zone": "a"}),
     None),
], ids=["plain", "selector-mismatch", "selector-match", "not-ready", "cordoned", "tainted", "tolerated",
        "tolerate-everything", "prefer-is-soft", "match-fields-other-node", "not-in-expression"])
def test_why_a_pod_does_not_fit_a_node(spec: dict[str, Any], the_node: dict[str, Any], reason: str | None) -> None:
    assert scheduling.unfit_reason(spec, the_node) == reason


@pytest.mark.parametrize(("nodes", "expected"), [
    ([], (None, "no nodes available to schedule pods")),
    ([node("a", ready=False)], (None, "0/1 nodes are available: 1 node(s) had untolerated taint "
                                      "{node.kubernetes.io/not-ready: }. preemption: 0/1 nodes are available: 1 "
                                      "Preemption is not helpful for scheduling.")),
    ([node("a", cordoned=True), node("b", ready=False), node("c", ready=False)],
     (None, "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) had untolerated taint "
            "{node.kubernetes.io/not-ready: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
            "scheduling.")),
    ([node("a"), node("b")], ("b", "")),
], ids=["no-nodes", "one-not-ready", "histogram", "least-loaded"])
def test_choosing_a_node(nodes: list[dict[str, Any]], expected: tuple[str | None, str]) -> None:
    assert scheduling.choose_node(pod(), nodes, Counter({"a": 3, "b": 1})) == expected


@pytest.mark.parametrize(("claims", "classes", "expected"), [
    ({}, {}, ('persistentvolumeclaim "data" not found', [])),
    ({"data": {"spec": {"storageClassName": "std"}}}, {}, ("pod has unbound immediate PersistentVolumeClaims", [])),
    ({"data": {"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}}, {}, ("", [])),
    ({"data": {"spec": {"storageClassName": "lazy"}}}, {"lazy": {"volumeBindingMode": "WaitForFirstConsumer"}},
     ("", [{"spec": {"storageClassName": "lazy"}}])),
], ids=["missing", "unbound", "bound", "wait-for-first-consumer"])
def test_claims_gate_scheduling(claims: dict[str, Any], classes: dict[str, Any], expected: Any) -> None:
    user = pod(volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}])
    assert scheduling.claim_problem(user, claims, classes) == expected


def test_which_pods_the_scheduler_takes() -> None:
    assert scheduling.wants_scheduling(pod())
    assert not scheduling.wants_scheduling(pod(node_name="lab-node"))
    assert not scheduling.wants_scheduling(pod(schedulerName="my-scheduler"))
    assert not scheduling.wants_scheduling(pod(schedulingGates=[{"name": "wait"}]))
    assert not scheduling.wants_scheduling(pod(deleting=True))


# --- pods: readiness, deletion order, claims -----------------------------------------------------------------

@pytest.mark.parametrize(("a", "b"), [
    (pod("unscheduled"), pod("scheduled", node_name="n")),
    (pod("pending", node_name="n", phase="Pending"), pod("running", node_name="n")),
    (pod("not-ready", node_name="n", ready=False), pod("ready", node_name="n")),
    (pod("cheap", node_name="n"), pod("dear", node_name="n", cost=100)),
    (pod("ready-briefly", node_name="n", ready_for=5), pod("ready-long", node_name="n", ready_for=500)),
    (pod("crashy", node_name="n", restarts=4), pod("steady", node_name="n")),
    (pod("newer", node_name="n", created=10), pod("older", node_name="n", created=1000)),
], ids=["unscheduled-first", "pending-first", "not-ready-first", "deletion-cost", "ready-shorter-first",
        "restarts-first", "newer-first"])
def test_scale_down_deletes_the_least_valuable_pod_first(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert [p["metadata"]["name"] for p in readiness.deletion_order([b, a])] == [a["metadata"]["name"],
                                                                                  b["metadata"]["name"]]


@pytest.mark.parametrize(("ready_for", "min_ready", "expected"), [
    (60, 0, 0.0), (60, 30, 0.0), (10, 30, 20.0),
], ids=["no-min-ready", "long-enough", "not-yet"])
def test_availability_waits_min_ready_seconds(ready_for: float, min_ready: int, expected: float) -> None:
    assert readiness.seconds_until_available(pod(ready_for=ready_for), min_ready, NOW) == expected


def test_replica_set_status_counts_what_kubectl_shows() -> None:
    rs = {"metadata": {"name": "web", "generation": 3}, "spec": {"replicas": 3, "minReadySeconds": 30, "template": {
        "metadata": {"labels": {"app": "web", "tier": "front"}}}}}
    pods = [pod("a", labels={"app": "web", "tier": "front"}), pod("b", labels={"app": "web"}, ready_for=5),
            pod("c", labels={"app": "web", "tier": "front"}, ready=False)]
    assert replicasets.replica_set_status(rs, pods, NOW) == {
        "replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 1, "observedGeneration": 3}
    assert replicasets.next_availability_check(rs, pods, NOW) == 25.0


def test_claims_adopt_orphans_release_strays_and_ignore_others() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "uid": "rs-1"}}
    mine_ref = ownership.owner_reference(owner)
    other_ref = {**mine_ref, "uid": "rs-2", "name": "other"}
    candidates = [
        {"metadata": {"name": "owned", "labels": {"app": "web"}, "ownerReferences": [mine_ref]}},
        {"metadata": {"name": "orphan", "labels": {"app": "web"}}},
        {"metadata": {"name": "stray", "labels": {"app": "db"}, "ownerReferences": [mine_ref]}},
        {"metadata": {"name": "theirs", "labels": {"app": "web"}, "ownerReferences": [other_ref]}},
        {"metadata": {"name": "leaving", "labels": {"app": "web"}, "deletionTimestamp": stamp(0)}},
    ]
    claims = ownership.claim(owner, {"matchLabels": {"app": "web"}}, candidates)
    names = {k: [o["metadata"]["name"] for o in v] for k, v in vars(claims).items()}
    assert names == {"owned": ["owned"], "adopt": ["orphan"], "release": ["stray"]}


# --- endpoints ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("service_port", "expected"), [
    ({"port": 80, "targetPort": 8080}, 8080),
    ({"port": 80, "targetPort": "http"}, 8000),
    ({"port": 80, "targetPort": "admin"}, None),
    ({"port": 53, "targetPort": "dns", "protocol": "UDP"}, 5353),
    ({"port": 53, "targetPort": "dns", "protocol": "TCP"}, None),
    ({"port": 80}, 80),
], ids=["number", "named", "unknown-name", "named-udp", "name-with-other-protocol", "defaults-to-port"])
def test_target_ports_resolve_against_container_ports(service_port: dict[str, Any], expected: int | None) -> None:
    target = pod(containers=[{"name": "main", "image": "x", "ports": [
        {"name": "http", "containerPort": 8000}, {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}])
    assert endpoints.find_port(target, service_port) == expected


SERVICE = {"metadata": {"name": "api", "namespace": "default"},
           "spec": {"selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}}


@pytest.mark.parametrize(("pods", "publish", "subsets"), [
    ([pod("a", labels={"app": "api"}, ip="10.0.0.1")], False, [{"addresses": ["10.0.0.1"]}]),
    ([pod("a", labels={"app": "api"}, ip="10.0.0.1", ready=False)], False, [{"notReadyAddresses": ["10.0.0.1"]}]),
    ([pod("a", labels={"app": "api"}, ip="10.0.0.1", ready=False)], True, [{"addresses": ["10.0.0.1"]}]),
    ([pod("a", labels={"app": "api"}, ip="10.0.0.1", deleting=True)], False, []),
    ([pod("a", labels={"app": "api"})], False, []),
    ([pod("a", labels={"app": "api"}, ip="10.0.0.1", phase="Succeeded")], False, []),
    ([pod("a", labels={"app": "db"}, ip="10.0.0.1")], False, []),
], ids=["ready", "not-ready", "publish-not-ready", "terminating", "no-ip", "terminal", "not-selected"])
def test_endpoints_addresses(pods: list[dict[str, Any]], publish: bool, subsets: list[dict[str, list[str]]]) -> None:
    service = {**SERVICE, "spec": {**SERVICE["spec"], "publishNotReadyAddresses": publish}}
    got = [{k: [a["ip"] for a in v] for k, v in s.items() if k != "ports"}
           for s in endpoints.endpoint_subsets(service, pods)]
    assert got == subsets


@pytest.mark.parametrize(("the_pod", "conditions"), [
    (pod("a", labels={"app": "api"}, ip="10.0.0.1"), {"ready": True, "serving": True, "terminating": False}),
    (pod("a", labels={"app": "api"}, ip="10.0.0.1", ready=False),
     {"ready": False, "serving": False, "terminating": False}),
    (pod("a", labels={"app": "api"}, ip="10.0.0.1", deleting=True),
     {"ready": False, "serving": True, "terminating": True}),
], ids=["ready", "not-ready", "terminating-but-serving"])
def test_endpoint_slice_conditions(the_pod: dict[str, Any], conditions: dict[str, bool]) -> None:
    slices = endpoints.desired_slices(SERVICE, [the_pod])
    assert [[e["conditions"] for e in eps] for eps in slices.values()] == [[conditions]]


def test_a_service_with_no_endpoints_keeps_one_empty_slice() -> None:
    assert endpoints.desired_slices(SERVICE, []) == {(): []}


# --- garbage collection ----------------------------------------------------------------------------------------

def dependent(*uids: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": u, "uid": u} for u in uids]
    return {"metadata": {"name": "d", "ownerReferences": refs, "finalizers": finalizers or []}}


@pytest.mark.parametrize(("obj", "states", "has_dependents", "expected"), [
    (dependent("a"), {"a": OwnerState.SOLID}, False, Verdict()),
    (dependent("a"), {"a": OwnerState.ABSENT}, False, Verdict(delete_policy="Background")),
    (dependent("a", "b"), {"a": OwnerState.SOLID, "b": OwnerState.ABSENT}, False, Verdict(strip=("b",))),
    (dependent("a"), {"a": OwnerState.WAITING}, True, Verdict(delete_policy="Foreground")),
    (dependent("a"), {"a": OwnerState.WAITING}, False, Verdict(delete_policy="Background")),
    (dependent("a", finalizers=["orphan"]), {"a": OwnerState.ABSENT}, True, Verdict(delete_policy="Orphan")),
], ids=["solid-owner-keeps", "absent-owner-deletes", "mixed-strips-dead-refs", "foreground-cascades",
        "foreground-leaf", "own-orphan-finalizer"])
def test_garbage_collection_verdicts(obj: dict[str, Any], states: dict[str, OwnerState], has_dependents: bool,
                                     expected: Verdict) -> None:
    assert garbagecollector.verdict(obj, states, has_dependents=has_dependents) == expected


def test_foreground_deletion_waits_only_for_blocking_dependents() -> None:
    owner = {"metadata": {"uid": "o"}}
    blocking = {"metadata": {"name": "b", "ownerReferences": [{"uid": "o", "blockOwnerDeletion": True}]}}
    loose = {"metadata": {"name": "l", "ownerReferences": [{"uid": "o"}]}}
    assert garbagecollector.blocking(owner, [blocking, loose]) == [blocking]


# --- daemon sets -----------------------------------------------------------------------------------------------

def daemon_set(image: str = "agent:2", **rolling: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling or {"maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "agent", "image": image}]}}}}


def daemon_pod(name: str, node_name: str, ds: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = pod(name, node_name=node_name, **kw)
    out["metadata"]["labels"] = {daemonsets.HASH_LABEL: daemonsets.current_hash(ds)}
    return out


@pytest.mark.parametrize(("rolling", "pods", "creates", "deletes"), [
    ({"maxUnavailable": 1}, [], ["n1", "n2"], []),
    ({"maxUnavailable": 1}, ["old@n1", "old@n2"], [], ["old@n1"]),
    ({"maxUnavailable": 2}, ["old@n1", "old@n2"], [], ["old@n1", "old@n2"]),
    ({"maxUnavailable": 1}, ["sick-old@n1", "old@n2"], [], ["sick-old@n1", "old@n2"]),
    ({"maxUnavailable": 0, "maxSurge": 1}, ["old@n1", "old@n2"], ["n1"], []),
    ({"maxUnavailable": 0, "maxSurge": 1}, ["old@n1", "new@n1", "old@n2"], [], ["old@n1"]),
    ({"maxUnavailable": 1}, ["new@n1", "new2@n1", "new@n2"], [], ["new2@n1"]),
], ids=["fresh-nodes", "one-at-a-time", "two-at-a-time", "unavailable-old-pods-are-free", "surge-first",
        "surge-takes-over", "duplicates-go"])
def test_daemon_set_rolling_update_plan(rolling: dict[str, Any], pods: list[str], creates: list[str],
                                        deletes: list[str]) -> None:
    current, previous = daemon_set("agent:2", **rolling), daemon_set("agent:1", **rolling)
    made = []
    for i, spec in enumerate(pods):
        name, node_name = spec.split("@")
        made.append(daemon_pod(f"{name}@{node_name}", node_name, previous if "old" in name else current,
                               ready="sick" not in name, created=100 - i))
    plan = daemonsets.plan(current, [node("n1"), node("n2"), node("n3", ready=False)], made, NOW)
    assert plan.create_on == creates
    assert [p["metadata"]["name"] for p in plan.delete] == deletes


def test_daemon_set_status_counts_nodes() -> None:
    ds = daemon_set()
    pods = [daemon_pod("a", "n1", ds), daemon_pod("b", "n2", daemon_set("agent:1"), ready=False)]
    assert daemonsets.daemon_set_status(ds, [node("n1"), node("n2"), node("n3", labels={})], pods, NOW) == {
        "currentNumberScheduled": 2, "numberMisscheduled": 0, "desiredNumberScheduled": 3, "numberReady": 1,
        "observedGeneration": 2, "updatedNumberScheduled": 1, "numberAvailable": 1, "numberUnavailable": 2}


# --- volumes ---------------------------------------------------------------------------------------------------

def volume(name: str, size: str, *, cls: str = "", modes: tuple[str, ...] = ("ReadWriteOnce",),
           phase: str = "Available", labels: dict[str, str] | None = None,
           claim_ref: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"capacity": {"storage": size}, "accessModes": list(modes), "storageClassName": cls}
    if claim_ref:
        spec["claimRef"] = claim_ref
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": {"phase": phase}}


CLAIM = {"metadata": {"name": "data", "namespace": "default", "uid": "c1"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


@pytest.mark.parametrize(("pvs", "claim_spec", "expected"), [
    ([volume("big", "10Gi"), volume("fit", "1Gi"), volume("small", "500Mi")], {}, "fit"),
    ([volume("gi", "1024Mi")], {}, "gi"),
    ([volume("other-class", "5Gi", cls="fast"), volume("plain", "5Gi")], {}, "plain"),
    ([volume("rox", "5Gi", modes=("ReadOnlyMany",))], {}, None),
    ([volume("busy", "5Gi", phase="Released")], {}, None),
    ([volume("a", "2Gi"), volume("b", "5Gi", labels={"tier": "gold"})], {"selector": {"matchLabels": {"tier": "gold"}}},
     "b"),
    ([volume("cheap", "1Gi"), volume("reserved", "9Gi", phase="Pending",
                                     claim_ref={"name": "data", "namespace": "default"})], {}, "reserved"),
    ([volume("taken", "1Gi", claim_ref={"name": "else", "namespace": "default", "uid": "x"})], {}, None),
], ids=["smallest-fit", "same-size-other-unit", "class-must-match", "access-modes", "only-available",
        "selector", "pre-bound-first", "bound-elsewhere"])
def test_finding_a_volume_for_a_claim(pvs: list[dict[str, Any]], claim_spec: dict[str, Any],
                                      expected: str | None) -> None:
    claim = {**CLAIM, "spec": {**CLAIM["spec"], **claim_spec}}
    found = volumebinding.find_volume(claim, pvs)
    assert (found or {}).get("metadata", {}).get("name") == expected


@pytest.mark.parametrize(("claim_ref", "claims", "expected"), [
    (None, {}, "Available"),
    ({"name": "data", "namespace": "default"}, {}, "Available"),
    ({"name": "data", "namespace": "default", "uid": "c1"}, {("default", "data"): {**CLAIM, "spec": {
        "volumeName": "pv"}}}, "Bound"),
    ({"name": "data", "namespace": "default", "uid": "c1"}, {}, "Released"),
    ({"name": "data", "namespace": "default", "uid": "old"}, {("default", "data"): CLAIM}, "Released"),
], ids=["unclaimed", "pre-bound-waiting", "bound", "claim-deleted", "claim-recreated"])
def test_volume_phase(claim_ref: dict[str, Any] | None, claims: dict[Any, Any], expected: str) -> None:
    pv = volume("pv", "1Gi", phase="Pending", claim_ref=claim_ref)
    assert volumebinding.volume_phase(pv, claims) == expected


def test_a_provisioned_volume_is_completed_from_claim_and_class() -> None:
    sc = {"metadata": {"name": "fast"}, "provisioner": "example.com/x", "reclaimPolicy": "Retain",
          "mountOptions": ["vers=4.1"]}
    out = volumebinding.provisioned_volume({"spec": {"nfs": {"server": "s", "path": "/p"}}}, CLAIM, sc, "example.com/x")
    assert out["metadata"] == {"name": "pvc-c1", "annotations": {volumebinding.PROVISIONED_BY: "example.com/x"}}
    assert out["spec"] == {"nfs": {"server": "s", "path": "/p"}, "storageClassName": "fast",
                           "persistentVolumeReclaimPolicy": "Retain", "accessModes": ["ReadWriteOnce"],
                           "volumeMode": "Filesystem", "capacity": {"storage": "1Gi"}, "mountOptions": ["vers=4.1"],
                           "claimRef": volumebinding.claim_ref(CLAIM)}


# --- namespaces -------------------------------------------------------------------------------------------------

def test_a_draining_namespace_reports_what_remains() -> None:
    conds = namespaces.remaining_conditions(Counter({"pods": 2}), Counter({"example.com/hold": 1}), "t")
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in conds] == [
        ("NamespaceContentRemaining", "True", "SomeResourcesRemain",
         "Some resources are remaining: pods has 2 resource instances"),
        ("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain",
         "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")]
