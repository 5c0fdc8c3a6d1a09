"""Checks shared by the Controller and Node services: required fields and volume capabilities.

Every RPC validates its arguments first, in a fixed order, with exact messages (as the kubernetes-csi
drivers do): a missing required field or an unsupported capability is ``3 INVALID_ARGUMENT`` (CSI spec,
"Error Scheme"). NFS volumes are filesystems: the ``block`` access type is refused, every access mode of
CSI v1 (1 to 7) is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlab.csiproto import csi_pb2
from meshlab.errors import CsiError

__all__ = ["DRIVER_NAME", "capability_problem", "check_capabilities", "require"]

DRIVER_NAME = "nfs.csi.meshlab.io"
AccessMode = csi_pb2.VolumeCapability.AccessMode


def require(value: object, what: str) -> None:
    """INVALID_ARGUMENT ``"<what> missing in request"`` unless ``value`` is set."""
    if not value:
        raise CsiError("INVALID_ARGUMENT", f"{what} missing in request")


def capability_problem(capability: csi_pb2.VolumeCapability) -> str | None:
    """Why this driver cannot serve ``capability``, or None when it can."""
    if capability.HasField("block"):
        return "block volume capability not supported (NFS volumes are filesystems)"
    if not capability.HasField("mount"):
        return "volume capability has no access type (mount or block)"
    if capability.access_mode.mode == AccessMode.UNKNOWN:
        return "volume capability has no access mode"
    if capability.access_mode.mode not in AccessMode.Mode.values():
        return f"access mode {capability.access_mode.mode} is unknown to this driver"
    return None


def check_capabilities(capabilities: Sequence[csi_pb2.VolumeCapability], what: str) -> None:
    """INVALID_ARGUMENT when ``capabilities`` is empty or one of them cannot be served."""
    require(list(capabilities), what)
    for capability in capabilities:
        problem = capability_problem(capability)
        if problem is not None:
            raise CsiError("INVALID_ARGUMENT", problem)
