"""The CSI Identity service of ``nfs.csi.meshlab.io``: name, capabilities, health.

Every CSI plugin process serves Identity (CSI spec v1, "Identity Service RPC"): the kubelet's
node-driver-registrar and the external-provisioner call GetPluginInfo to learn the driver name,
GetPluginCapabilities to learn that a Controller service exists and that volumes may grow while in use
(``VolumeExpansion.ONLINE``), and Probe as a liveness check. Probe answers ``9 FAILED_PRECONDITION``
when a dependency is missing — here, in controller mode, when an NFS server cannot be reached: the one
named by ``--probe-nfs``, else any share the controller has provisioned on since it started.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import wrappers_pb2

from meshlab.csiproto import csi_pb2
from meshlab.errors import CsiError
from meshlab.storage.csi.capabilities import DRIVER_NAME

__all__ = ["DRIVER_NAME", "IdentityService"]

Capability = csi_pb2.PluginCapability


class IdentityService:
    """Identity RPCs; ``health()`` returns None when healthy, else what is wrong (checked by Probe)."""

    def __init__(self, *, vendor_version: str, health: Callable[[], str | None] | None = None) -> None:
        self.vendor_version = vendor_version
        self._health = health

    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=self.vendor_version)

    def GetPluginCapabilities(
        self, request: csi_pb2.GetPluginCapabilitiesRequest
    ) -> csi_pb2.GetPluginCapabilitiesResponse:
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=[
            Capability(service=Capability.Service(type=Capability.Service.CONTROLLER_SERVICE)),
            Capability(volume_expansion=Capability.VolumeExpansion(type=Capability.VolumeExpansion.ONLINE)),
        ])

    def Probe(self, request: csi_pb2.ProbeRequest) -> csi_pb2.ProbeResponse:
        problem = self._health() if self._health is not None else None
        if problem is not None:
            raise CsiError("FAILED_PRECONDITION", problem)
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
