"""csi-sanity (kubernetes-csi/csi-test pkg/sanity) ported to pytest, run against ``meshlab csi-driver``.

The driver runs as a subprocess (``--mode both``) on a unix socket under the test's temporary directory,
as csi-sanity runs it (``--csi.endpoint=unix:///...``); volumes live on a real NFS server (the
``nfs_server`` fixture: meshlab's Python NFSv3 server, and NFS-Ganesha when root). Row ids are the
checklist numbers of ``reference/storage.md`` §4. As in csi-sanity, a row whose capability the driver
does not advertise is skipped with that reason; the others must pass, including the cases the upstream
NFS driver skips (C11/C12 idempotency, C26 VVC on a missing volume). :func:`expect_error_code` mirrors
csi-sanity's ``ExpectErrorCode``: no response, the exact gRPC code, and no status details (the spec: the
``details`` of a CSI error MUST be empty). Node rows need a real mount (FUSE in the lab) and skip with
``mount_support()``'s reason when none can work here.
"""

from __future__ import annotations

import os
import re
import secrets as random_tokens
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from meshlab.csiproto import csi_pb2 as pb
from meshlab.csiproto import csi_pb2_grpc as rpc
from meshlab.storage.nfsd.running import RunningNfsServer
from tests.storage.conftest import nfs_server  # noqa: F401  (the fixture, shared with the storage tests)

GiB = 1 << 30
TEST_VOLUME_SIZE = 10 * GiB   # csi-sanity's default
IDEMPOTENT_COUNT = 10
NODE_ID = "sanity-node"
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
Mode = pb.VolumeCapability.AccessMode
CtrlRPC = pb.ControllerServiceCapability.RPC
NodeRPC = pb.NodeServiceCapability.RPC


# ---------------------------------------------------------------------------------------------- the driver

@dataclass
class Driver:
    """The running driver: stubs on its socket and what it advertises."""

    endpoint: str
    identity: rpc.IdentityStub
    controller: rpc.ControllerStub
    node: rpc.NodeStub
    call_log: Path
    controller_caps: set[int] = field(default_factory=set)
    node_caps: set[int] = field(default_factory=set)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    # A short path: unix socket paths are limited to 107 bytes.
    work = tmp_path_factory.mktemp("csi")
    endpoint = f"unix://{work}/csi.sock"
    log = (work / "driver.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlab.cli", "csi-driver", "--endpoint", endpoint, "--mode", "both",
         "--node-id", NODE_ID, "--state-dir", str(work / "state"), "--call-log", str(work / "calls.jsonl")],
        stdout=log, stderr=subprocess.STDOUT)
    channel = grpc.insecure_channel(endpoint)
    try:
        identity = rpc.IdentityStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=2)
                break
            except grpc.RpcError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"meshlab csi-driver did not start: {(work / 'driver.log').read_text()[-2000:]}")
                time.sleep(0.1)
        d = Driver(endpoint, identity, rpc.ControllerStub(channel), rpc.NodeStub(channel), work / "calls.jsonl")
        d.controller_caps = {c.rpc.type for c in d.controller.ControllerGetCapabilities(
            pb.ControllerGetCapabilitiesRequest()).capabilities}
        d.node_caps = {c.rpc.type for c in d.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities}
        yield d
    finally:
        channel.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# ---------------------------------------------------------------------------------------------- helpers

def call(method: Callable[..., Any], request: Message) -> tuple[Any, grpc.RpcError | None]:
    """(response, None) on success, (None, the error) on failure: what csi-sanity's Go calls return."""
    try:
        return method(request, timeout=60), None
    except grpc.RpcError as err:
        return None, err


def expect_error_code(response: Any, err: grpc.RpcError | None, code: grpc.StatusCode) -> None:
    """csi-sanity's ExpectErrorCode: an error, no response, exactly ``code``; plus empty status details."""
    assert err is not None, f"expected {code.name}, got a response: {response}"
    assert response is None
    assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
    trailers = dict(err.trailing_metadata() or ())
    assert "grpc-status-details-bin" not in trailers, "CSI errors must carry no status details"


def unique(prefix: str) -> str:
    return f"{prefix}-{random_tokens.token_hex(5)}"


def mount_capability(mode: int = Mode.SINGLE_NODE_WRITER) -> pb.VolumeCapability:
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(), access_mode=Mode_(mode))


def Mode_(mode: int) -> pb.VolumeCapability.AccessMode:
    return pb.VolumeCapability.AccessMode(mode=mode)  # type: ignore[arg-type]


@dataclass
class Sanity:
    """One test's view: the driver, the NFS parameters, and cleanup like csi-sanity's resources.go."""

    driver: Driver
    server: RunningNfsServer
    work: Path
    volumes: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    published: list[tuple[str, str]] = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        loc = self.server.location
        return {"server": loc.server, "share": loc.export, "port": str(loc.port), "version": str(loc.version)}

    def create_request(self, name: str, size: int = TEST_VOLUME_SIZE, limit: int = 0,
                       mode: int = Mode.SINGLE_NODE_WRITER) -> pb.CreateVolumeRequest:
        return pb.CreateVolumeRequest(name=name, volume_capabilities=[mount_capability(mode)], parameters=self.params,
                                      capacity_range=pb.CapacityRange(required_bytes=size, limit_bytes=limit))

    def create(self, name: str | None = None, **kwargs: Any) -> pb.Volume:
        response, err = call(self.driver.controller.CreateVolume, self.create_request(name or unique("sanity"),
                                                                                      **kwargs))
        assert err is None, f"CreateVolume: {err.code().name} {err.details()}"
        self.volumes.append(response.volume.volume_id)
        return response.volume

    def snapshot(self, name: str, source_volume_id: str) -> tuple[Any, grpc.RpcError | None]:
        response, err = call(self.driver.controller.CreateSnapshot,
                             pb.CreateSnapshotRequest(name=name, source_volume_id=source_volume_id))
        if err is None:
            self.snapshots.append(response.snapshot.snapshot_id)
        return response, err

    def publish(self, volume_id: str, target: Path, mode: int = Mode.SINGLE_NODE_WRITER,
                readonly: bool = False) -> tuple[Any, grpc.RpcError | None]:
        request = pb.NodePublishVolumeRequest(volume_id=volume_id, target_path=str(target),
                                              volume_capability=mount_capability(mode), readonly=readonly)
        response, err = call(self.driver.node.NodePublishVolume, request)
        if err is None:
            self.published.append((volume_id, str(target)))
        return response, err

    def cleanup(self) -> None:
        for volume_id, target in reversed(self.published):
            call(self.driver.node.NodeUnpublishVolume,
                 pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target))
        for snapshot_id in reversed(self.snapshots):
            call(self.driver.controller.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=snapshot_id))
        for volume_id in reversed(self.volumes):
            call(self.driver.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume_id))


@pytest.fixture
def sanity(driver: Driver, nfs_server: RunningNfsServer, tmp_path: Path) -> Iterator[Sanity]:  # noqa: F811
    s = Sanity(driver, nfs_server, tmp_path)
    yield s
    s.cleanup()


@pytest.fixture
def needs_mount() -> None:
    from meshlab.mounting.mount import mount_support

    reason = mount_support()
    if reason is not None:
        pytest.skip(f"node publish needs a mount here: {reason}")


def skip_unless(advertised: set[int], capability: int, enum: Any) -> None:
    if capability not in advertised:
        pytest.skip(f"{enum.Name(capability)} not advertised by the driver")


# ---------------------------------------------------------------------------------------------- Identity

KNOWN_PLUGIN_SERVICES = {"CONTROLLER_SERVICE", "VOLUME_ACCESSIBILITY_CONSTRAINTS", "GROUP_CONTROLLER_SERVICE",
                         "SNAPSHOT_METADATA_SERVICE"}


def test_I1_get_plugin_capabilities_returns_known_capabilities(driver: Driver) -> None:
    response = driver.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    for cap in response.capabilities:
        if cap.HasField("service"):
            assert pb.PluginCapability.Service.Type.Name(cap.service.type) in KNOWN_PLUGIN_SERVICES
        else:
            assert cap.volume_expansion.type in (pb.PluginCapability.VolumeExpansion.ONLINE,
                                                 pb.PluginCapability.VolumeExpansion.OFFLINE)


def test_I2_probe(driver: Driver) -> None:
    _, err = call(driver.identity.Probe, pb.ProbeRequest())
    assert err is None or err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_I3_get_plugin_info_name(driver: Driver) -> None:
    response = driver.identity.GetPluginInfo(pb.GetPluginInfoRequest())
    assert response.name == "nfs.csi.meshlab.io"
    assert len(response.name) <= 63 and re.fullmatch(r"[a-zA-Z][A-Za-z0-9-._]{0,61}[a-zA-Z]", response.name)
    assert response.vendor_version


# ---------------------------------------------------------------------------------------------- error table

@dataclass(frozen=True)
class Case:
    """One "this request gets exactly this code" row (``None``: OK). ``needs``: a capability gate."""

    service: str
    method: str
    request: Callable[[Sanity], Message]
    code: grpc.StatusCode | None
    needs: tuple[str, int] | None = None


def _real_volume(s: Sanity) -> str:
    return s.create().volume_id


CASES: dict[str, Case] = {
    # Controller
    "C7 CreateVolume without a name": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        volume_capabilities=[mount_capability()], parameters=s.params), grpc.StatusCode.INVALID_ARGUMENT,
        ("controller", CtrlRPC.CREATE_DELETE_VOLUME)),
    "C8 CreateVolume without capabilities": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        name=unique("sanity"), parameters=s.params), grpc.StatusCode.INVALID_ARGUMENT,
        ("controller", CtrlRPC.CREATE_DELETE_VOLUME)),
    "C15 CreateVolume from a missing snapshot": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        name=unique("sanity"), volume_capabilities=[mount_capability()], parameters=s.params,
        volume_content_source=pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(
            snapshot_id="non-existing-snapshot-id"))), grpc.StatusCode.NOT_FOUND,
        ("controller", CtrlRPC.CREATE_DELETE_SNAPSHOT)),
    "C17 CreateVolume from a missing volume": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        name=unique("sanity"), volume_capabilities=[mount_capability()], parameters=s.params,
        volume_content_source=pb.VolumeContentSource(volume=pb.VolumeContentSource.VolumeSource(
            volume_id=unique("fake-vol-id")))), grpc.StatusCode.NOT_FOUND, ("controller", CtrlRPC.CLONE_VOLUME)),
    "C20 DeleteVolume without an id": Case("controller", "DeleteVolume", lambda s: pb.DeleteVolumeRequest(),
                                           grpc.StatusCode.INVALID_ARGUMENT,
                                           ("controller", CtrlRPC.CREATE_DELETE_VOLUME)),
    "C21 DeleteVolume of an unknown id is OK": Case("controller", "DeleteVolume", lambda s: pb.DeleteVolumeRequest(
        volume_id="fake-vol-id"), None, ("controller", CtrlRPC.CREATE_DELETE_VOLUME)),
    "C23 ValidateVolumeCapabilities without an id": Case(
        "controller", "ValidateVolumeCapabilities", lambda s: pb.ValidateVolumeCapabilitiesRequest(),
        grpc.StatusCode.INVALID_ARGUMENT),
    "C24 ValidateVolumeCapabilities without capabilities": Case(
        "controller", "ValidateVolumeCapabilities",
        lambda s: pb.ValidateVolumeCapabilitiesRequest(volume_id=_real_volume(s)), grpc.StatusCode.INVALID_ARGUMENT),
    "C26 ValidateVolumeCapabilities of a missing volume": Case(
        "controller", "ValidateVolumeCapabilities", lambda s: pb.ValidateVolumeCapabilitiesRequest(
            volume_id=unique("fake-vol-id"), volume_capabilities=[mount_capability()]), grpc.StatusCode.NOT_FOUND),
    "C4 ListVolumes with a bad token": Case("controller", "ListVolumes", lambda s: pb.ListVolumesRequest(
        starting_token="invalid-token"), grpc.StatusCode.ABORTED, ("controller", CtrlRPC.LIST_VOLUMES)),
    "C27 ControllerPublishVolume without a volume id": Case(
        "controller", "ControllerPublishVolume", lambda s: pb.ControllerPublishVolumeRequest(),
        grpc.StatusCode.INVALID_ARGUMENT, ("controller", CtrlRPC.PUBLISH_UNPUBLISH_VOLUME)),
    "C36 ControllerUnpublishVolume without a volume id": Case(
        "controller", "ControllerUnpublishVolume", lambda s: pb.ControllerUnpublishVolumeRequest(),
        grpc.StatusCode.INVALID_ARGUMENT, ("controller", CtrlRPC.PUBLISH_UNPUBLISH_VOLUME)),
    "D1 DeleteSnapshot without an id": Case("controller", "DeleteSnapshot", lambda s: pb.DeleteSnapshotRequest(),
                                            grpc.StatusCode.INVALID_ARGUMENT,
                                            ("controller", CtrlRPC.CREATE_DELETE_SNAPSHOT)),
    "D2 DeleteSnapshot of an unknown id is OK": Case(
        "controller", "DeleteSnapshot", lambda s: pb.DeleteSnapshotRequest(snapshot_id="reallyfakesnapshotid"), None,
        ("controller", CtrlRPC.CREATE_DELETE_SNAPSHOT)),
    "N2 CreateSnapshot without a source": Case("controller", "CreateSnapshot", lambda s: pb.CreateSnapshotRequest(
        name="name"), grpc.StatusCode.INVALID_ARGUMENT, ("controller", CtrlRPC.CREATE_DELETE_SNAPSHOT)),
    "N1 CreateSnapshot without a name": Case("controller", "CreateSnapshot", lambda s: pb.CreateSnapshotRequest(
        source_volume_id="testId"), grpc.StatusCode.INVALID_ARGUMENT, ("controller", CtrlRPC.CREATE_DELETE_SNAPSHOT)),
    "E1 ControllerExpandVolume without an id": Case(
        "controller", "ControllerExpandVolume", lambda s: pb.ControllerExpandVolumeRequest(
            capacity_range=pb.CapacityRange(required_bytes=TEST_VOLUME_SIZE)), grpc.StatusCode.INVALID_ARGUMENT,
        ("controller", CtrlRPC.EXPAND_VOLUME)),
    "meshlab: ControllerExpandVolume of a missing volume": Case(
        "controller", "ControllerExpandVolume", lambda s: pb.ControllerExpandVolumeRequest(
            volume_id=unique("fake-vol-id"), capacity_range=pb.CapacityRange(required_bytes=GiB)),
        grpc.StatusCode.NOT_FOUND, ("controller", CtrlRPC.EXPAND_VOLUME)),
    "E2 ControllerExpandVolume without a capacity range": Case(
        "controller", "ControllerExpandVolume", lambda s: pb.ControllerExpandVolumeRequest(),
        grpc.StatusCode.INVALID_ARGUMENT, ("controller", CtrlRPC.EXPAND_VOLUME)),
    # Node
    "ND3 NodePublishVolume without a volume id": Case("node", "NodePublishVolume",
                                                      lambda s: pb.NodePublishVolumeRequest(),
                                                      grpc.StatusCode.INVALID_ARGUMENT),
    "ND4 NodePublishVolume without a target path": Case("node", "NodePublishVolume", lambda s:
                                                        pb.NodePublishVolumeRequest(volume_id=unique("id")),
                                                        grpc.StatusCode.INVALID_ARGUMENT),
    "ND5 NodePublishVolume without a capability": Case("node", "NodePublishVolume", lambda s:
                                                       pb.NodePublishVolumeRequest(volume_id=unique("id"),
                                                                                   target_path=str(s.work / "t")),
                                                       grpc.StatusCode.INVALID_ARGUMENT),
    "ND7 NodeUnpublishVolume without a volume id": Case("node", "NodeUnpublishVolume",
                                                        lambda s: pb.NodeUnpublishVolumeRequest(),
                                                        grpc.StatusCode.INVALID_ARGUMENT),
    "ND8 NodeUnpublishVolume without a target path": Case("node", "NodeUnpublishVolume", lambda s:
                                                          pb.NodeUnpublishVolumeRequest(volume_id=unique("id")),
                                                          grpc.StatusCode.INVALID_ARGUMENT),
    "ND10 NodeStageVolume without a volume id": Case(
        "node", "NodeStageVolume", lambda s: pb.NodeStageVolumeRequest(
            staging_target_path=str(s.work / "staging"), volume_capability=mount_capability(),
            publish_context={"device": "/dev/mock"}), grpc.StatusCode.INVALID_ARGUMENT,
        ("node", NodeRPC.STAGE_UNSTAGE_VOLUME)),
    "ND13 NodeUnstageVolume without a volume id": Case(
        "node", "NodeUnstageVolume", lambda s: pb.NodeUnstageVolumeRequest(staging_target_path=str(s.work)),
        grpc.StatusCode.INVALID_ARGUMENT, ("node", NodeRPC.STAGE_UNSTAGE_VOLUME)),
    "ND14a NodeGetVolumeStats without a volume id": Case(
        "node", "NodeGetVolumeStats", lambda s: pb.NodeGetVolumeStatsRequest(volume_path=str(s.work)),
        grpc.StatusCode.INVALID_ARGUMENT, ("node", NodeRPC.GET_VOLUME_STATS)),
    "ND14b NodeGetVolumeStats without a path": Case(
        "node", "NodeGetVolumeStats", lambda s: pb.NodeGetVolumeStatsRequest(volume_id=unique("id")),
        grpc.StatusCode.INVALID_ARGUMENT, ("node", NodeRPC.GET_VOLUME_STATS)),
    "ND15 NodeGetVolumeStats of an unknown volume": Case(
        "node", "NodeGetVolumeStats", lambda s: pb.NodeGetVolumeStatsRequest(
            volume_id=unique("fake-vol-id"), volume_path="some/path"), grpc.StatusCode.NOT_FOUND,
        ("node", NodeRPC.GET_VOLUME_STATS)),
    "ND17 NodeExpandVolume without a volume id": Case(
        "node", "NodeExpandVolume", lambda s: pb.NodeExpandVolumeRequest(volume_path=str(s.work)),
        grpc.StatusCode.INVALID_ARGUMENT, ("node", NodeRPC.EXPAND_VOLUME)),
    # meshlab's own rows: the driver's documented refusals
    "meshlab: unknown StorageClass parameter": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        name=unique("sanity"), volume_capabilities=[mount_capability()], parameters={**s.params, "colour": "red"}),
        grpc.StatusCode.INVALID_ARGUMENT),
    "meshlab: subDir escaping the share": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        name=unique("sanity"), volume_capabilities=[mount_capability()],
        parameters={**s.params, "subDir": "../../etc"}), grpc.StatusCode.INVALID_ARGUMENT),
    "meshlab: block access type": Case("controller", "CreateVolume", lambda s: pb.CreateVolumeRequest(
        name=unique("sanity"), parameters=s.params, volume_capabilities=[pb.VolumeCapability(
            block=pb.VolumeCapability.BlockVolume(), access_mode=Mode_(Mode.SINGLE_NODE_WRITER))]),
        grpc.StatusCode.INVALID_ARGUMENT),
    "meshlab: capacity above the maximum": Case("controller", "CreateVolume",
                                                lambda s: s.create_request(unique("sanity"), size=1 << 50),
                                                grpc.StatusCode.OUT_OF_RANGE),
    "meshlab: NodePublishVolume to a relative path": Case(
        "node", "NodePublishVolume", lambda s: pb.NodePublishVolumeRequest(
            volume_id=_real_volume(s), target_path="relative/target", volume_capability=mount_capability()),
        grpc.StatusCode.INVALID_ARGUMENT),
    "meshlab: inline volume with an unknown attribute": Case(
        "node", "NodePublishVolume", lambda s: pb.NodePublishVolumeRequest(
            volume_id=unique("csi"), target_path=str(s.work / "t"), volume_capability=mount_capability(),
            volume_context={**s.params, "colour": "red", EPHEMERAL: "true"}), grpc.StatusCode.INVALID_ARGUMENT),
    "meshlab: inline volume escaping the share": Case(
        "node", "NodePublishVolume", lambda s: pb.NodePublishVolumeRequest(
            volume_id=unique("csi"), target_path=str(s.work / "t"), volume_capability=mount_capability(),
            volume_context={**s.params, "subDir": "../..", EPHEMERAL: "true"}), grpc.StatusCode.INVALID_ARGUMENT),
    "meshlab: NodeStageVolume is unimplemented": Case("node", "NodeStageVolume", lambda s: pb.NodeStageVolumeRequest(
        volume_id=unique("id")), grpc.StatusCode.UNIMPLEMENTED),
}


@pytest.mark.parametrize("row", list(CASES), ids=list(CASES))
def test_error_table(row: str, sanity: Sanity) -> None:
    case = CASES[row]
    if case.needs is not None:
        side, capability = case.needs
        if side == "controller":
            skip_unless(sanity.driver.controller_caps, capability, CtrlRPC.Type)
        else:
            skip_unless(sanity.driver.node_caps, capability, NodeRPC.Type)
    stub = getattr(sanity.driver, case.service)
    response, err = call(getattr(stub, case.method), case.request(sanity))
    if case.code is None:
        assert err is None, f"expected OK, got {err.code().name}: {err.details()}"
    else:
        expect_error_code(response, err, case.code)


# ---------------------------------------------------------------------------------------------- Controller flows

KNOWN_CONTROLLER_CAPS = set(CtrlRPC.Type.values()) - {CtrlRPC.UNKNOWN}


def test_C1_controller_capabilities_are_known(driver: Driver) -> None:
    assert driver.controller_caps and driver.controller_caps <= KNOWN_CONTROLLER_CAPS
    assert {CtrlRPC.CREATE_DELETE_VOLUME, CtrlRPC.EXPAND_VOLUME, CtrlRPC.CLONE_VOLUME,
            CtrlRPC.SINGLE_NODE_MULTI_WRITER, CtrlRPC.CREATE_DELETE_SNAPSHOT} <= driver.controller_caps


def test_C9_C10_create_with_capacity_makes_the_directory(sanity: Sanity) -> None:
    name = unique("sanity")
    volume = sanity.create(name)
    assert volume.volume_id
    assert volume.capacity_bytes == 0 or volume.capacity_bytes >= TEST_VOLUME_SIZE
    assert (sanity.server.export_dir / name).is_dir()   # made through NFS, visible on the server's disk


def test_C11_same_name_same_capacity_is_the_same_volume(sanity: Sanity) -> None:
    name = unique("sanity")
    first, second = sanity.create(name), sanity.create(name)
    assert first.volume_id == second.volume_id
    assert second.capacity_bytes == 0 or second.capacity_bytes >= TEST_VOLUME_SIZE


def test_C12_same_name_different_capacity_already_exists(sanity: Sanity) -> None:
    name = unique("sanity")
    first = sanity.create(name, size=TEST_VOLUME_SIZE, limit=TEST_VOLUME_SIZE)
    assert first.capacity_bytes == TEST_VOLUME_SIZE   # csi-sanity would skip the row on 0; meshlab records it
    response, err = call(sanity.driver.controller.CreateVolume,
                         sanity.create_request(name, size=2 * TEST_VOLUME_SIZE, limit=2 * TEST_VOLUME_SIZE))
    expect_error_code(response, err, grpc.StatusCode.ALREADY_EXISTS)


def test_C13_maximum_length_name(sanity: Sanity) -> None:
    volume = sanity.create("x" * 128)
    assert volume.volume_id


def test_C16_clone_copies_the_source(sanity: Sanity) -> None:
    skip_unless(sanity.driver.controller_caps, CtrlRPC.CLONE_VOLUME, CtrlRPC.Type)
    source_name = unique("sanity")
    source = sanity.create(source_name)
    (sanity.server.export_dir / source_name / "data.txt").write_text("cloned bytes")
    clone_name = unique("sanity")
    request = sanity.create_request(clone_name)
    request.volume_content_source.volume.volume_id = source.volume_id
    response, err = call(sanity.driver.controller.CreateVolume, request)
    assert err is None, err.details()
    sanity.volumes.append(response.volume.volume_id)
    assert response.volume.content_source.volume.volume_id == source.volume_id
    assert (sanity.server.export_dir / clone_name / "data.txt").read_text() == "cloned bytes"


def test_C14_volume_from_a_snapshot_has_the_snapshot_contents(sanity: Sanity) -> None:
    skip_unless(sanity.driver.controller_caps, CtrlRPC.CREATE_DELETE_SNAPSHOT, CtrlRPC.Type)
    source_name = unique("sanity")
    source = sanity.create(source_name)
    (sanity.server.export_dir / source_name / "data.txt").write_text("before the snapshot")
    snap, err = sanity.snapshot(unique("snap"), source.volume_id)
    assert err is None, err.details()
    assert snap.snapshot.ready_to_use and snap.snapshot.source_volume_id == source.volume_id
    assert snap.snapshot.size_bytes == len("before the snapshot")
    (sanity.server.export_dir / source_name / "data.txt").write_text("after")
    name = unique("sanity")
    request = sanity.create_request(name)
    request.volume_content_source.snapshot.snapshot_id = snap.snapshot.snapshot_id
    response, err = call(sanity.driver.controller.CreateVolume, request)
    assert err is None, err.details()
    sanity.volumes.append(response.volume.volume_id)
    assert response.volume.content_source.snapshot.snapshot_id == snap.snapshot.snapshot_id
    assert (sanity.server.export_dir / name / "data.txt").read_text() == "before the snapshot"


@pytest.mark.parametrize("name_length", [20, 128], ids=["N3-short-name", "N5-maximum-length-name"])
def test_N3_N5_snapshot_twice_with_the_same_source_is_the_same(sanity: Sanity, name_length: int) -> None:
    skip_unless(sanity.driver.controller_caps, CtrlRPC.CREATE_DELETE_SNAPSHOT, CtrlRPC.Type)
    volume = sanity.create()
    name = unique("snap").ljust(name_length, "x")
    first, err1 = sanity.snapshot(name, volume.volume_id)
    second, err2 = sanity.snapshot(name, volume.volume_id)
    assert err1 is None and err2 is None
    assert first.snapshot.snapshot_id == second.snapshot.snapshot_id


def test_N4_same_snapshot_name_different_source_already_exists(sanity: Sanity) -> None:
    skip_unless(sanity.driver.controller_caps, CtrlRPC.CREATE_DELETE_SNAPSHOT, CtrlRPC.Type)
    name = unique("snap")
    _, err = sanity.snapshot(name, sanity.create().volume_id)
    assert err is None, err.details()
    response, err = sanity.snapshot(name, sanity.create().volume_id)
    expect_error_code(response, err, grpc.StatusCode.ALREADY_EXISTS)


def test_D3_delete_snapshot(sanity: Sanity) -> None:
    skip_unless(sanity.driver.controller_caps, CtrlRPC.CREATE_DELETE_SNAPSHOT, CtrlRPC.Type)
    snap, err = sanity.snapshot(unique("snap"), sanity.create().volume_id)
    assert err is None, err.details()
    snapshots_dir = sanity.server.export_dir / ".meshlab-snapshots"
    assert len(list(snapshots_dir.iterdir())) >= 1
    before = set(snapshots_dir.iterdir())
    response, err = call(sanity.driver.controller.DeleteSnapshot,
                         pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot.snapshot_id))
    assert err is None and response is not None
    assert len(before - set(snapshots_dir.iterdir())) == 1


def test_C22_delete_removes_the_directory(sanity: Sanity) -> None:
    name = unique("sanity")
    volume = sanity.create(name)
    response, err = call(sanity.driver.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert err is None and response is not None
    assert not (sanity.server.export_dir / name).exists()


def test_C25_validate_confirms_the_capabilities(sanity: Sanity) -> None:
    volume = sanity.create()
    response = sanity.driver.controller.ValidateVolumeCapabilities(pb.ValidateVolumeCapabilitiesRequest(
        volume_id=volume.volume_id, volume_capabilities=[mount_capability()]))
    assert response.HasField("confirmed")
    assert list(response.confirmed.volume_capabilities) == [mount_capability()]


def test_E3_expand_reports_the_new_capacity(sanity: Sanity) -> None:
    skip_unless(sanity.driver.controller_caps, CtrlRPC.EXPAND_VOLUME, CtrlRPC.Type)
    volume = sanity.create()
    target = TEST_VOLUME_SIZE + GiB
    response = sanity.driver.controller.ControllerExpandVolume(pb.ControllerExpandVolumeRequest(
        volume_id=volume.volume_id, capacity_range=pb.CapacityRange(required_bytes=target)))
    assert response.capacity_bytes == target
    # the promise is recorded: asking for the old size under the same name is now incompatible
    response2, err = call(sanity.driver.controller.CreateVolume,
                          sanity.create_request(volume.volume_id.split("#")[3], limit=TEST_VOLUME_SIZE))
    expect_error_code(response2, err, grpc.StatusCode.ALREADY_EXISTS)


# ---------------------------------------------------------------------------------------------- Node flows

def test_ND1_node_capabilities_are_known(driver: Driver) -> None:
    assert driver.node_caps and driver.node_caps <= set(NodeRPC.Type.values()) - {NodeRPC.UNKNOWN}


def test_ND2_node_get_info(driver: Driver) -> None:
    response = driver.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert response.node_id == NODE_ID and response.max_volumes_per_node >= 0


@pytest.mark.usefixtures("needs_mount")
def test_ND6_single_node_single_writer_second_target_fails(sanity: Sanity) -> None:
    skip_unless(sanity.driver.node_caps, NodeRPC.SINGLE_NODE_MULTI_WRITER, NodeRPC.Type)
    volume = sanity.create(mode=Mode.SINGLE_NODE_SINGLE_WRITER)
    _, err = sanity.publish(volume.volume_id, sanity.work / "target", Mode.SINGLE_NODE_SINGLE_WRITER)
    assert err is None, err.details()
    response, err = sanity.publish(volume.volume_id, sanity.work / "other_target", Mode.SINGLE_NODE_SINGLE_WRITER)
    expect_error_code(response, err, grpc.StatusCode.FAILED_PRECONDITION)


@pytest.mark.usefixtures("needs_mount")
def test_ND9_unpublish_removes_the_target_path(sanity: Sanity) -> None:
    volume = sanity.create()
    target = sanity.work / "target"
    _, err = sanity.publish(volume.volume_id, target)
    assert err is None, err.details()
    assert target.is_dir()
    sanity.driver.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id,
                                                                         target_path=str(target)))
    assert not os.path.exists(target)


@pytest.mark.usefixtures("needs_mount")
def test_ND16_volume_stats_on_the_wrong_path_not_found(sanity: Sanity) -> None:
    skip_unless(sanity.driver.node_caps, NodeRPC.GET_VOLUME_STATS, NodeRPC.Type)
    volume = sanity.create()
    _, err = sanity.publish(volume.volume_id, sanity.work / "target")
    assert err is None, err.details()
    response, err = call(sanity.driver.node.NodeGetVolumeStats,
                         pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path="some/path"))
    expect_error_code(response, err, grpc.StatusCode.NOT_FOUND)


@pytest.mark.usefixtures("needs_mount")
def test_ND20_volume_lifecycle_should_work(sanity: Sanity) -> None:
    assert sanity.driver.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
    name = unique("sanity")
    volume = sanity.create(name)
    target = sanity.work / "target"
    _, err = sanity.publish(volume.volume_id, target)
    assert err is None, err.details()
    (target / "hello.txt").write_text("through the mount")
    assert (sanity.server.export_dir / name / "hello.txt").read_text() == "through the mount"
    stats = sanity.driver.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id,
                                                                               volume_path=str(target)))
    assert stats.usage


@pytest.mark.usefixtures("needs_mount")
def test_ND21_volume_lifecycle_should_be_idempotent(sanity: Sanity) -> None:
    volume = sanity.create()
    target = sanity.work / "target"
    for _ in range(IDEMPOTENT_COUNT):
        _, err = sanity.publish(volume.volume_id, target)
        assert err is None, err.details()
    for _ in range(IDEMPOTENT_COUNT):
        _, err = call(sanity.driver.node.NodeUnpublishVolume,
                      pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target)))
        assert err is None, err.details()
    assert not target.exists()


@pytest.mark.usefixtures("needs_mount")
def test_meshlab_multi_writer_volume_is_shared_by_two_targets(sanity: Sanity) -> None:
    volume = sanity.create(mode=Mode.MULTI_NODE_MULTI_WRITER)
    first, second = sanity.work / "pod-a", sanity.work / "pod-b"
    for target in (first, second):
        _, err = sanity.publish(volume.volume_id, target, Mode.MULTI_NODE_MULTI_WRITER)
        assert err is None, err.details()
    (first / "shared.txt").write_text("written by pod a")
    assert (second / "shared.txt").read_text() == "written by pod a"
    response, err = sanity.publish(volume.volume_id, first, Mode.MULTI_NODE_MULTI_WRITER, readonly=True)
    expect_error_code(response, err, grpc.StatusCode.ALREADY_EXISTS)   # same target, different arguments


def test_meshlab_call_log_records_calls_without_secrets(sanity: Sanity) -> None:
    from meshlab.storage.csi.trace import calls_for_volume, read_call_log

    name = unique("sanity")
    request = sanity.create_request(name)
    request.secrets["password"] = "hunter2"
    response, err = call(sanity.driver.controller.CreateVolume, request)
    assert err is None, err.details()
    sanity.volumes.append(response.volume.volume_id)
    deadline = time.monotonic() + 20   # the interceptor writes after answering
    while not calls_for_volume(read_call_log(sanity.driver.call_log), name) and time.monotonic() < deadline:
        time.sleep(0.05)
    [created] = calls_for_volume(read_call_log(sanity.driver.call_log), name)
    assert (created.method, created.code) == ("/csi.v1.Controller/CreateVolume", "OK")
    assert "hunter2" not in sanity.driver.call_log.read_text()


@pytest.mark.usefixtures("needs_mount")
def test_meshlab_inline_ephemeral_volume_mounts_from_its_attributes(sanity: Sanity) -> None:
    # What the kubelet sends for a pod's volumes[].csi: its own handle, the attributes as volume_context.
    handle, subdir = unique("csi"), unique("inline")
    target = sanity.work / "pod-inline"
    request = pb.NodePublishVolumeRequest(
        volume_id=handle, target_path=str(target), volume_capability=mount_capability(),
        volume_context={**sanity.params, "subDir": f"inline/{subdir}", EPHEMERAL: "true",
                        "csi.storage.k8s.io/pod.name": "web-0"})
    for _ in range(2):   # idempotent, like every publish
        _, err = call(sanity.driver.node.NodePublishVolume, request)
        assert err is None, err.details()
    sanity.published.append((handle, str(target)))
    (target / "note.txt").write_text("inline")
    assert (sanity.server.export_dir / "inline" / subdir / "note.txt").read_text() == "inline"
    sanity.driver.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=handle, target_path=str(target)))
    assert not target.exists()
