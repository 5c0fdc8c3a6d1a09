"""The committed CSI modules are exactly what meshlab/csiproto/generate.py produces from the .proto files."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.csiproto import csi_pb2, generate

pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) regenerates the CSI modules")


def test_regenerating_gives_byte_identical_modules(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    committed = generate.generated_files()
    assert [p.name for p in written] == [p.name for p in committed]
    stale = [p.name for p in committed if (tmp_path / generate.PACKAGE / p.name).read_bytes() != p.read_bytes()]
    assert stale == [], "run `python -m meshlab.csiproto.generate` and commit the result"


@pytest.mark.parametrize(
    ("full_name", "number"),
    [
        # a few wire facts from the CSI v1 spec that a peer (kubelet, csi-sanity) depends on
        ("csi.v1.CreateVolumeRequest.secrets", 5),
        ("csi.v1.NodePublishVolumeRequest.target_path", 4),
        ("csi.v1.NodePublishVolumeRequest.readonly", 6),
        ("csi.v1.ControllerExpandVolumeRequest.capacity_range", 2),
        ("csi.v1.NodeGetVolumeStatsRequest.volume_path", 2),
    ],
)
def test_field_numbers_match_the_spec(full_name: str, number: int) -> None:
    message, field = full_name.rsplit(".", 1)
    descriptor = csi_pb2.DESCRIPTOR.message_types_by_name[message.removeprefix("csi.v1.")]
    assert descriptor.fields_by_name[field].number == number


@pytest.mark.parametrize(
    ("enum_value", "number"),
    [
        (csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER, 6),
        (csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER, 7),
        (csi_pb2.ControllerServiceCapability.RPC.EXPAND_VOLUME, 9),
        (csi_pb2.ControllerServiceCapability.RPC.SINGLE_NODE_MULTI_WRITER, 13),
        (csi_pb2.NodeServiceCapability.RPC.SINGLE_NODE_MULTI_WRITER, 5),
    ],
)
def test_enum_values_match_the_spec(enum_value: int, number: int) -> None:
    assert enum_value == number
