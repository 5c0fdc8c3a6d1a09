"""StorageClass parameters of ``nfs.csi.meshlab.io`` (CreateVolumeRequest.parameters), parsed once.

The keys follow kubernetes-csi/csi-driver-nfs (docs/driver-parameters.md): ``server`` and ``share``
(required), ``subDir`` (default: the volume name) with the templates ``${pvc.metadata.name}``,
``${pvc.metadata.namespace}`` and ``${pv.metadata.name}`` filled from the external-provisioner's
``--extra-create-metadata`` keys ``csi.storage.k8s.io/pvc/name``, ``.../pvc/namespace`` and ``.../pv/name``,
``mountPermissions`` (octal; ``0`` = leave the mode alone) and ``onDelete`` (delete | retain | archive).
meshlab adds two lab keys: ``port`` (the NFS server's TCP port, default 2049) and ``version`` (3 or 4,
default 3). Keys are case-insensitive as upstream; any other key is INVALID_ARGUMENT naming it, so a typo
in a StorageClass shows up as a Pending PVC with that message instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from meshlab.errors import CsiError
from meshlab.mounting.nfsclient import NfsLocation
from meshlab.storage.csi.volume_id import SEPARATOR, OnDelete

__all__ = ["PVC_NAME", "PVC_NAMESPACE", "PV_NAME", "VolumeParameters", "parse_parameters"]

PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"

_TEMPLATES = {
    "${pvc.metadata.name}": PVC_NAME,
    "${pvc.metadata.namespace}": PVC_NAMESPACE,
    "${pv.metadata.name}": PV_NAME,
}
_KNOWN = {"server", "share", "subdir", "mountpermissions", "ondelete", "port", "version",
          PVC_NAME, PVC_NAMESPACE, PV_NAME}
_TEMPLATE_RE = re.compile(r"\$\{[^}]*\}")


@dataclass(frozen=True)
class VolumeParameters:
    """What a StorageClass asks for: where to make the directory and how to treat it."""

    location: NfsLocation
    subdir: str | None              # templates filled in; None = use the volume name
    mount_permissions: int | None   # None = no chmod
    on_delete: OnDelete


def parse_parameters(parameters: Mapping[str, str]) -> VolumeParameters:
    """Validate and normalise ``parameters``; INVALID_ARGUMENT with the offending key otherwise."""
    params: dict[str, str] = {}
    for key, value in parameters.items():
        folded = key.lower()
        if folded not in _KNOWN:
            raise CsiError("INVALID_ARGUMENT", f"invalid parameter {key!r} in storage class "
                           f"(known: server, share, subDir, mountPermissions, onDelete, port, version)")
        if folded in params:
            raise CsiError("INVALID_ARGUMENT", f"parameter {key!r} given twice (keys are case-insensitive)")
        params[folded] = value
    server, share = params.get("server", ""), params.get("share", "")
    if not server:
        raise CsiError("INVALID_ARGUMENT", "parameter 'server' is required")
    if not share:
        raise CsiError("INVALID_ARGUMENT", "parameter 'share' is required")
    for key, value in (("server", server), ("share", share)):
        if SEPARATOR in value:
            raise CsiError("INVALID_ARGUMENT", f"parameter {key!r} must not contain {SEPARATOR!r}")
    location = NfsLocation(server=server, export=share, port=_port(params.get("port", "2049")),
                           version=_version(params.get("version", "3")))
    subdir = _fill_templates(params["subdir"], params) if "subdir" in params else None
    return VolumeParameters(location=location, subdir=subdir,
                            mount_permissions=_permissions(params.get("mountpermissions", "0")),
                            on_delete=_on_delete(params.get("ondelete", "delete")))


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise CsiError("INVALID_ARGUMENT", f"parameter 'port' must be a TCP port number, not {value!r}")
    return port


def _version(value: str) -> int:
    major = value.split(".", 1)[0]   # "4.1" -> 4: the client negotiates the minor version
    if major not in ("3", "4"):
        raise CsiError("INVALID_ARGUMENT", f"parameter 'version' must be 3 or 4, not {value!r}")
    return int(major)


def _permissions(value: str) -> int | None:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise CsiError("INVALID_ARGUMENT", f"parameter 'mountPermissions' must be octal like 0777, not {value!r}")
    return mode or None


def _on_delete(value: str) -> OnDelete:
    try:
        return OnDelete(value.lower())
    except ValueError:
        raise CsiError("INVALID_ARGUMENT",
                       f"parameter 'onDelete' must be delete, retain or archive, not {value!r}") from None


def _fill_templates(subdir: str, params: Mapping[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        key = _TEMPLATES.get(match.group(0))
        if key is None:
            raise CsiError("INVALID_ARGUMENT", f"subDir template {match.group(0)} is unknown "
                           f"(known: {', '.join(_TEMPLATES)})")
        if not params.get(key):
            raise CsiError("INVALID_ARGUMENT", f"subDir uses {match.group(0)} but the request carries no {key} "
                           "(run the provisioner with --extra-create-metadata)")
        return params[key]

    return _TEMPLATE_RE.sub(fill, subdir)
