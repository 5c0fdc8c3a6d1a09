"""The CSI driver's core, without gRPC: volume ids, StorageClass parameters, onDelete, locks, Probe, redaction.

The conformance port (tests/conformance/test_csi_sanity.py) checks the driver over its socket; these
tests check the decisions the checklist does not reach, against a real NFS server where files matter.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import grpc
import pytest

from meshlab.csiproto import csi_pb2 as pb
from meshlab.csiproto import csi_pb2_grpc as rpc
from meshlab.errors import CsiError
from meshlab.mounting.nfsclient import NfsLocation
from meshlab.storage.csi.controller import ControllerService
from meshlab.storage.csi.driver import build_services, nfs_health, parse_location
from meshlab.storage.csi.identity import IdentityService
from meshlab.storage.csi.node import NodeService
from meshlab.storage.csi.parameters import parse_parameters
from meshlab.storage.csi.serving import CallRecord, build_server, redacted
from meshlab.storage.csi.trace import calls_for_pod, calls_for_volume, read_call_log
from meshlab.storage.csi.volume_id import OnDelete, SnapshotId, VolumeId, safe_subdir
from meshlab.storage.nfsd.running import RunningNfsServer, start_nfs_server
from tests.storage.conftest import nfs_server  # noqa: F401  (the fixture)

BASE = {"server": "10.0.0.5", "share": "/export"}


# ---------------------------------------------------------------------------------------------- volume ids

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5#/export#vols/pvc-1#pvc-1#archive#12049#4",
         VolumeId("10.0.0.5", "/export", "vols/pvc-1", "pvc-1", OnDelete.ARCHIVE, 12049, 4)),
        ("nfs.svc#share#pvc-1", VolumeId("nfs.svc", "share", "pvc-1", "pvc-1")),          # upstream, 3 fields
        ("nfs.svc#share#sub#pvc-1#retain", VolumeId("nfs.svc", "share", "sub", "pvc-1", OnDelete.RETAIN)),
        ("fake-vol-id", None),
        ("a#b#../../etc#n#delete#2049#3", None),                                          # traversal
        ("a#b#c#n#shred#2049#3", None),                                                   # unknown onDelete
        ("a#b#c#n#delete#99999#3", None),                                                 # bad port
        ("a#b#c#n#delete#2049#2", None),                                                  # NFSv2
    ],
    ids=["meshlab-7-fields", "upstream-3-fields", "upstream-5-fields", "not-an-id", "traversal",
         "unknown-on-delete", "bad-port", "nfs-v2"],
)
def test_volume_id_parsing(text: str, expected: VolumeId | None) -> None:
    assert VolumeId.parse(text) == expected


def test_volume_id_round_trips() -> None:
    volume = VolumeId("127.0.0.1", "/export", "a/b", "pvc-9", OnDelete.ARCHIVE, 2050, 4)
    assert VolumeId.parse(str(volume)) == volume
    assert volume.archived_subdir() == "a/archived-b"


def test_snapshot_ids_round_trip_and_are_never_volume_ids() -> None:
    snapshot = SnapshotId("127.0.0.1", "/export", "snap-1", 2050, 4)
    assert SnapshotId.parse(str(snapshot)) == snapshot
    assert VolumeId.parse(str(snapshot)) is None           # DeleteVolume of a snapshot id deletes nothing
    assert SnapshotId.parse(str(VolumeId("a", "b", "c", "n"))) is None


@pytest.mark.parametrize("subdir", [".meshlab-volumes/x", ".meshlab-snapshots", "a/../../b", "a#b", "\x01"],
                         ids=["index-dir", "snapshot-dir", "traversal", "separator", "control-character"])
def test_unsafe_subdirs_are_refused(subdir: str) -> None:
    with pytest.raises(CsiError) as caught:
        safe_subdir(subdir)
    assert caught.value.code == "INVALID_ARGUMENT"


# ---------------------------------------------------------------------------------------------- parameters

@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**BASE, "colour": "red"}, "invalid parameter 'colour'"),
        ({"share": "/export"}, "'server' is required"),
        ({"server": "x"}, "'share' is required"),
        ({**BASE, "SERVER": "y"}, "given twice"),
        ({**BASE, "onDelete": "shred"}, "must be delete, retain or archive"),
        ({**BASE, "mountPermissions": "rwx"}, "must be octal"),
        ({**BASE, "version": "2"}, "must be 3 or 4"),
        ({**BASE, "port": "0"}, "TCP port"),
        ({**BASE, "subDir": "${pvc.metadata.name}"}, "carries no csi.storage.k8s.io/pvc/name"),
        ({**BASE, "subDir": "${pod.name}"}, "template ${pod.name} is unknown"),
    ],
    ids=["unknown-key", "no-server", "no-share", "duplicate-key-case", "bad-on-delete", "bad-permissions",
         "bad-version", "bad-port", "template-without-metadata", "unknown-template"],
)
def test_bad_parameters_are_invalid_argument_naming_the_problem(params: dict[str, str], message: str) -> None:
    with pytest.raises(CsiError) as caught:
        parse_parameters(params)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert message in caught.value.message


def test_parameters_are_case_insensitive_and_templates_filled() -> None:
    parsed = parse_parameters({"Server": "10.0.0.5", "SHARE": "/export", "subdir": "${pvc.metadata.namespace}/"
                               "${pvc.metadata.name}-${pv.metadata.name}", "MountPermissions": "0777",
                               "ONDELETE": "Archive", "Port": "12049", "Version": "4.1",
                               "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "shop",
                               "csi.storage.k8s.io/pv/name": "pvc-1"})
    assert parsed.location == NfsLocation("10.0.0.5", "/export", 12049, 4)
    assert parsed.subdir == "shop/data-pvc-1"
    assert (parsed.mount_permissions, parsed.on_delete) == (0o777, OnDelete.ARCHIVE)


# ---------------------------------------------------------------------------------------------- controller core

def _create(controller: ControllerService, name: str, params: dict[str, str]) -> pb.CreateVolumeResponse:
    capability = pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(),
                                     access_mode=pb.VolumeCapability.AccessMode(
                                         mode=pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))
    return controller.CreateVolume(pb.CreateVolumeRequest(name=name, volume_capabilities=[capability],
                                                          parameters=params))


def test_an_operation_in_flight_makes_the_next_one_aborted() -> None:
    controller = ControllerService()
    with controller.locks.hold("pvc-busy"), pytest.raises(CsiError) as caught:
        _create(controller, "pvc-busy", BASE)
    assert caught.value.code == "ABORTED"
    assert controller.locks.busy() == frozenset()   # released afterwards, even after the refusal


def _params(server: RunningNfsServer, **extra: str) -> dict[str, str]:
    loc = server.location
    return {"server": loc.server, "share": loc.export, "port": str(loc.port), "version": str(loc.version), **extra}


@pytest.mark.parametrize(
    ("on_delete", "left_behind"),
    [("delete", []), ("retain", ["vols/pvc-x"]), ("archive", ["vols/archived-pvc-x"])],
    ids=["delete", "retain", "archive"],
)
def test_delete_volume_follows_on_delete(nfs_server: RunningNfsServer, on_delete: str,  # noqa: F811
                                         left_behind: list[str]) -> None:
    controller = ControllerService()
    params = _params(nfs_server, subDir="vols/${pv.metadata.name}", onDelete=on_delete,
                     mountPermissions="0775", **{"csi.storage.k8s.io/pv/name": "pvc-x"})
    volume = _create(controller, f"pvc-x-{on_delete}", params).volume
    volume_dir = nfs_server.export_dir / "vols" / "pvc-x"
    (volume_dir / "keep.txt").write_text("data")
    assert volume_dir.stat().st_mode & 0o7777 == 0o775
    controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id))
    remaining = sorted(str(p.relative_to(nfs_server.export_dir)) for p in (nfs_server.export_dir / "vols").iterdir())
    assert remaining == left_behind
    for directory in left_behind:
        assert (nfs_server.export_dir / directory / "keep.txt").read_text() == "data"
        (nfs_server.export_dir / directory / "keep.txt").unlink()
        (nfs_server.export_dir / directory).rmdir()


def test_deleting_a_volume_on_a_stopped_server_is_unavailable_not_ok() -> None:
    volume = VolumeId("127.0.0.1", "/export", "pvc-1", "pvc-1", port=_free_port(), version=3)
    with pytest.raises(CsiError) as caught:
        ControllerService().DeleteVolume(pb.DeleteVolumeRequest(volume_id=str(volume)))
    assert caught.value.code == "UNAVAILABLE"   # the provisioner must retry, not forget the volume


# ---------------------------------------------------------------------------------------------- identity

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe_fails_precondition_when_the_nfs_server_is_unreachable() -> None:
    location = NfsLocation("127.0.0.1", "/export", _free_port(), 3)
    identity = IdentityService(vendor_version="t", health=nfs_health(lambda: [location], timeout=1.0))
    with pytest.raises(CsiError) as caught:
        identity.Probe(pb.ProbeRequest())
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "unreachable" in caught.value.message


def test_probe_watches_the_shares_the_controller_provisioned_on(tmp_path: Path) -> None:
    services = build_services("controller")
    identity, controller = services["Identity"], services["Controller"]
    assert isinstance(identity, IdentityService) and isinstance(controller, ControllerService)
    with start_nfs_server(tmp_path / "export", backend="python") as server:
        _create(controller, "pvc-probe", _params(server))
        assert identity.Probe(pb.ProbeRequest()).ready.value is True
    with pytest.raises(CsiError) as caught:   # the server is gone
        identity.Probe(pb.ProbeRequest())
    assert caught.value.code == "FAILED_PRECONDITION"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.5:12049/export?version=4", NfsLocation("10.0.0.5", "/export", 12049, 4)),
     ("nfs.svc/export", NfsLocation("nfs.svc", "/export", 2049, 3))],
    ids=["port-and-version", "defaults"],
)
def test_probe_location_flag(text: str, expected: NfsLocation) -> None:
    assert parse_location(text) == expected


# ---------------------------------------------------------------------------------------------- serving

def test_secrets_are_redacted_in_logs_and_records(tmp_path: Path) -> None:
    request = pb.NodePublishVolumeRequest(volume_id="v", secrets={"password": "hunter2"})
    assert redacted(request)["secrets"] == {"password": "***stripped***"}
    calls: list[CallRecord] = []
    services = build_services("controller")
    server = build_server(services, f"unix://{tmp_path}/csi.sock", record=calls.append)
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{tmp_path}/csi.sock") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                rpc.ControllerStub(channel).CreateVolume(pb.CreateVolumeRequest(secrets={"token": "s3cret"}),
                                                         timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as unimplemented:
                rpc.NodeStub(channel).NodeGetInfo(pb.NodeGetInfoRequest(), timeout=10)
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED   # no Node in controller mode
    finally:
        server.stop(0)
    assert [(c.method, c.code) for c in calls] == [("/csi.v1.Controller/CreateVolume", "INVALID_ARGUMENT")]
    assert "s3cret" not in repr(calls) and calls[0].message == "volume name missing in request"


def test_the_call_log_follows_one_volume_and_one_pod(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    volume_id = str(VolumeId("10.0.0.5", "/export", "pvc-1", "pvc-1"))
    other_id = str(VolumeId("10.0.0.5", "/export", "pvc-2", "pvc-2"))
    target = "/var/lib/kubelet/pods/uid-a/volumes/kubernetes.io~csi/pvc-1/mount"
    lines = [
        ("/csi.v1.Controller/CreateVolume", {"name": "pvc-1", "secrets": {"k": "***stripped***"}}),
        ("/csi.v1.Controller/CreateVolume", {"name": "pvc-2"}),
        ("/csi.v1.Node/NodePublishVolume", {"volume_id": volume_id, "target_path": target}),
        ("/csi.v1.Node/NodePublishVolume", {"volume_id": other_id, "target_path": target.replace("uid-a", "uid-b")}),
        ("/csi.v1.Controller/DeleteVolume", {"volume_id": volume_id}),
    ]
    log.write_text("".join(json.dumps({"time": i, "method": m, "request": r, "code": "OK", "message": "",
                                       "duration_ms": 1.5}) + "\n" for i, (m, r) in enumerate(lines)))
    calls = read_call_log(log, tmp_path / "missing.jsonl")
    assert [c.method.rsplit("/", 1)[1] for c in calls_for_volume(calls, "pvc-1")] == [
        "CreateVolume", "NodePublishVolume", "DeleteVolume"]
    assert [c.request["volume_id"] for c in calls_for_pod(calls, "uid-b")] == [other_id]


# ---------------------------------------------------------------------------------------------- node core

def test_a_restarted_node_plugin_remembers_what_it_published(nfs_server: RunningNfsServer,  # noqa: F811
                                                             tmp_path: Path) -> None:
    from meshlab.mounting.mount import is_mounted, mount_support

    if (reason := mount_support()) is not None:
        pytest.skip(f"node publish needs a mount here: {reason}")
    volume = _create(ControllerService(), "pvc-restart", _params(nfs_server)).volume
    capability = pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(), access_mode=pb.VolumeCapability.
                                     AccessMode(mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER))
    target = tmp_path / "pods" / "uid-1" / "mount"
    target.parent.mkdir(parents=True)
    before = NodeService(node_id="n1", state_dir=tmp_path / "state")
    before.NodePublishVolume(pb.NodePublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target),
                                                         volume_capability=capability))
    after = NodeService(node_id="n1", state_dir=tmp_path / "state")   # a new process, the same state directory
    try:
        assert after.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id,
                                                                     volume_path=str(target))).usage
        with pytest.raises(CsiError) as caught:   # still ReadWriteOncePod: a second target is refused
            after.NodePublishVolume(pb.NodePublishVolumeRequest(
                volume_id=volume.volume_id, target_path=str(tmp_path / "pods" / "uid-2"),
                volume_capability=capability))
        assert caught.value.code == "FAILED_PRECONDITION"
    finally:
        after.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target)))
    assert not is_mounted(target) and not target.exists()
    assert after.published() == {}
