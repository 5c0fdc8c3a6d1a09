"""The external-provisioner's decisions: which claims are ours, what CreateVolume asks, the PV it records,
which released volumes are deleted, and how retries back off."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.storage.csi.provisioner_plan import (
    BackOff,
    CreatedVolume,
    Delete,
    PlanError,
    Provision,
    bytes_quantity,
    create_request,
    persistent_volume,
    plan,
    quantity_bytes,
    source_volume_id,
)

DRIVER = "nfs.csi.meshlab.io"


def sc(name: str = "meshlab-nfs", provisioner: str = DRIVER, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "provisioner": provisioner, "reclaimPolicy": "Delete",
            "parameters": {"server": "nfs.meshlab-storage.svc", "share": "/export"}, **extra}


def claim(name: str = "data", *, cls: str = "meshlab-nfs", annotated: str | None = DRIVER, uid: str = "u1",
          modes: tuple[str, ...] = ("ReadWriteMany",), size: str = "1Gi", **spec: Any) -> dict[str, Any]:
    annotations = {"volume.kubernetes.io/storage-provisioner": annotated} if annotated else {}
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "annotations": annotations,
                         "creationTimestamp": f"2026-01-01T00:00:0{uid[-1]}Z", "resourceVersion": "7"},
            "spec": {"storageClassName": cls, "accessModes": list(modes),
                     "resources": {"requests": {"storage": size}}, **spec}}


def pv(name: str, *, phase: str = "Released", policy: str = "Delete", by: str = DRIVER,
       driver: str = DRIVER) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": "pv-" + name, "annotations": {"pv.kubernetes.io/provisioned-by": by}},
            "spec": {"persistentVolumeReclaimPolicy": policy, "csi": {"driver": driver, "volumeHandle": "h-" + name}},
            "status": {"phase": phase}}


CLASSES = {"meshlab-nfs": sc(), "other": sc("other", "example.com/other")}


@pytest.mark.parametrize(("claims", "volumes", "expected"), [
    pytest.param([claim()], [], ["provision ns/data"], id="an annotated claim of our class is provisioned"),
    pytest.param([claim(annotated=None)], [], [], id="not yet annotated by the PV controller: wait"),
    pytest.param([claim(cls="other", annotated="example.com/other")], [], [], id="another driver's class"),
    pytest.param([claim(cls="missing")], [], [], id="a class that does not exist"),
    pytest.param([claim(volumeName="pv-x")], [], [], id="already bound"),
    pytest.param([claim()], [pv("pvc-u1", phase="Pending")], [], id="its PV exists already: the binder binds"),
    pytest.param([claim("b", uid="u2"), claim("a", uid="u1")], [], ["provision ns/a", "provision ns/b"],
                 id="older claims first"),
    pytest.param([], [pv("v1")], ["delete v1"], id="released, Delete, ours: deleted"),
    pytest.param([], [pv("v1", policy="Retain")], [], id="reclaim policy Retain keeps it"),
    pytest.param([], [pv("v1", phase="Bound")], [], id="still bound"),
    pytest.param([], [pv("v1", by="someone-else")], [], id="provisioned by someone else"),
])
def test_plan(claims: list[dict[str, Any]], volumes: list[dict[str, Any]], expected: list[str]) -> None:
    done = [f"provision {a.claim['metadata']['namespace']}/{a.claim['metadata']['name']}" if isinstance(a, Provision)
            else f"delete {a.volume['metadata']['name']}" for a in plan(claims, volumes, CLASSES, DRIVER)]
    assert done == expected


def test_wait_for_first_consumer_waits_for_the_selected_node() -> None:
    classes = {"meshlab-nfs": sc(volumeBindingMode="WaitForFirstConsumer")}
    waiting = claim()
    assert plan([waiting], [], classes, DRIVER) == []
    waiting["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] = "lab-node"
    assert len(plan([waiting], [], classes, DRIVER)) == 1


def test_create_request_carries_size_modes_options_and_metadata() -> None:
    cls = sc(mountOptions=["nfsvers=4.1"], parameters={"server": "s", "share": "/", "onDelete": "archive",
                                                        "csi.storage.k8s.io/fstype": "nfs",
                                                        "csi.storage.k8s.io/provisioner-secret-name": "x"})
    req = create_request(claim(modes=("ReadWriteMany", "ReadOnlyMany"), size="1.5Gi"), cls)
    assert req.name == "pvc-u1"
    assert req.required_bytes == 1610612736
    assert req.access_modes == ("MULTI_NODE_MULTI_WRITER", "MULTI_NODE_READER_ONLY")
    assert req.mount_flags == ("nfsvers=4.1",) and req.fs_type == "nfs"
    assert req.parameters == {"server": "s", "share": "/", "onDelete": "archive",
                              "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "ns",
                              "csi.storage.k8s.io/pv/name": "pvc-u1"}


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"accessModes": []}, "no accessModes", id="[Error] no access modes"),
    pytest.param({"accessModes": ["ReadWriteSometimes"]}, "unsupported access mode", id="[Error] unknown mode"),
    pytest.param({"volumeMode": "Block"}, "only Filesystem", id="[Error] block volume"),
    pytest.param({"resources": {}}, "requests no storage", id="[Error] no size"),
    pytest.param({"resources": {"requests": {"storage": "lots"}}}, "invalid storage quantity", id="[Error] bad size"),
])
def test_create_request_refuses(change: dict[str, Any], message: str) -> None:
    bad = claim()
    bad["spec"].update(change)
    with pytest.raises(PlanError, match=message):
        create_request(bad, sc())


@pytest.mark.parametrize(("text", "size"), [("1Gi", 2**30), ("500M", 5 * 10**8), ("1e3", 1000), ("1500m", 2),
                                            ("0.5Ki", 512), ("10", 10)])
def test_quantity_bytes(text: str, size: int) -> None:
    assert quantity_bytes(text) == size


@pytest.mark.parametrize(("size", "text"), [(2**30, "1Gi"), (3 * 2**20, "3Mi"), (1000, "1000"), (0, "0")])
def test_bytes_quantity(size: int, text: str) -> None:
    assert bytes_quantity(size) == text


@pytest.mark.parametrize(("reported", "shown"), [(0, "1Gi"), (2**30, "1Gi"), (2 * 2**30, "2Gi")],
                         ids=["capacity 0 shows the request", "exact", "larger volume shows its size"])
def test_persistent_volume(reported: int, shown: str) -> None:
    c = claim()
    cls = sc(mountOptions=["hard"])
    req = create_request(c, cls)
    made = persistent_volume(c, cls, DRIVER, CreatedVolume("srv#/export#pvc-u1", reported, {"server": "srv"}), req)
    assert made["metadata"] == {"name": "pvc-u1", "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}}
    spec = made["spec"]
    assert spec["capacity"] == {"storage": shown}
    assert spec["csi"] == {"driver": DRIVER, "volumeHandle": "srv#/export#pvc-u1",
                           "volumeAttributes": {"server": "srv"}}
    assert spec["claimRef"]["uid"] == "u1" and spec["claimRef"]["name"] == "data"
    assert spec["persistentVolumeReclaimPolicy"] == "Delete" and spec["storageClassName"] == "meshlab-nfs"
    assert spec["accessModes"] == ["ReadWriteMany"] and spec["mountOptions"] == ["hard"]


def test_clone_source_is_the_bound_volume_handle() -> None:
    origin = claim("origin", volumeName="pvc-o")
    clone = claim("copy", uid="u2", dataSource={"kind": "PersistentVolumeClaim", "name": "origin"})
    assert source_volume_id(clone, [origin, clone], [pv("pvc-o", phase="Bound")]) == "h-pvc-o"
    with pytest.raises(PlanError, match="not bound"):
        source_volume_id(clone, [claim("origin"), clone], [])
    snapshot = claim("s", dataSource={"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "x"})
    with pytest.raises(PlanError, match="unsupported dataSource"):
        source_volume_id(snapshot, [], [])


def test_backoff_doubles_to_the_cap_and_resets_on_success() -> None:
    backoff = BackOff(initial=1.0, maximum=5.0)
    assert [backoff.failed("k", 0.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not backoff.ready("k", 4.9) and backoff.ready("k", 5.0)
    assert backoff.next_due(1.0) == 5.0
    backoff.succeeded("k")
    assert backoff.ready("k", 0.0) and backoff.failed("k", 0.0) == 1.0
    backoff.forget_except(set())
    assert backoff.next_due(0.0) is None


def test_delete_action_exposes_the_handle() -> None:
    assert Delete(pv("v")).handle == "h-v"
