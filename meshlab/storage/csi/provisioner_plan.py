"""The external-provisioner's decisions, as pure functions: which claims get a volume, what CreateVolume is
asked, what PersistentVolume records the answer, which released volumes are deleted, and when to retry.

This follows kubernetes-csi/external-provisioner (``pkg/controller/controller.go``) and the
sig-storage-lib-external-provisioner it is built on. A claim is ours when the PV controller has annotated it
``volume.kubernetes.io/storage-provisioner: <driver>`` (it does so for every unbound claim of a StorageClass
whose ``provisioner`` is not in-tree), it is not bound yet, and its class names the driver. CreateVolume is
called with the name ``pvc-<claim uid>`` (so a retry after a crash finds the same volume: CreateVolume is
idempotent by name), the requested size as ``capacity_range.required_bytes``, one mount capability per
access mode (RWO → SINGLE_NODE_WRITER, ROX → MULTI_NODE_READER_ONLY, RWX → MULTI_NODE_MULTI_WRITER, RWOP →
SINGLE_NODE_SINGLE_WRITER) carrying the class's ``mountOptions`` and the ``csi.storage.k8s.io/fstype``
parameter, and the class's parameters minus the reserved ``csi.storage.k8s.io/`` keys, plus the
"extra create metadata" (``csi.storage.k8s.io/pvc/name``, ``pvc/namespace``, ``pv/name``) that drivers use
for templated sub-directories. The PV it creates is pre-bound (``claimRef`` with the claim's uid), so the
PV controller binds the pair at once; ``pv.kubernetes.io/provisioned-by`` marks it ours. A volume whose claim
is gone (phase ``Released``) with reclaim policy ``Delete`` and provisioned by us gets DeleteVolume and then
its PV deleted; the PV controller leaves such volumes to their external provisioner. Failures are retried
with per-object exponential back-off (1 s doubling to 5 min, the external-provisioner's
``--retry-interval-start``/``--retry-interval-max``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

Obj = dict[str, Any]

STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
PREFIX = "csi.storage.k8s.io/"
FSTYPE_KEY = PREFIX + "fstype"
PVC_NAME_KEY = PREFIX + "pvc/name"
PVC_NAMESPACE_KEY = PREFIX + "pvc/namespace"
PV_NAME_KEY = PREFIX + "pv/name"

# PersistentVolume access modes -> CSI VolumeCapability.AccessMode.Mode names.
ACCESS_MODES = {
    "ReadWriteOnce": "SINGLE_NODE_WRITER",
    "ReadOnlyMany": "MULTI_NODE_READER_ONLY",
    "ReadWriteMany": "MULTI_NODE_MULTI_WRITER",
    "ReadWriteOncePod": "SINGLE_NODE_SINGLE_WRITER",
}

_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(r"^([+]?[0-9]*\.?[0-9]+)(?:[eE]([+-]?[0-9]+))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


class PlanError(ValueError):
    """A claim or class that cannot be turned into a CreateVolume request (a ``ProvisioningFailed`` event)."""


def quantity_bytes(text: str) -> int:
    """A resource quantity (``1Gi``, ``500M``, ``1e3``) in bytes, rounded up as the provisioner does."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise PlanError(f"invalid storage quantity {text!r}")
    number, exponent, suffix = match.groups()
    value = Fraction(number) * Fraction(10) ** int(exponent or 0)
    value *= Fraction(1, 1000) if suffix == "m" else _SUFFIXES[suffix or ""]
    return -(-value.numerator // value.denominator)


def bytes_quantity(size: int) -> str:
    """Bytes as the largest exact binary quantity (``1073741824`` → ``1Gi``), as ``resource.NewQuantity``."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _meta(obj).get("annotations") or {}


def volume_name(claim: Mapping[str, Any]) -> str:
    """The PV (and CreateVolume) name for a claim: ``pvc-<uid>``, stable across retries."""
    return f"pvc-{_meta(claim).get('uid', '')}"


@dataclass(frozen=True)
class CreateRequest:
    """What CreateVolume is asked (independent of the generated protobuf types)."""

    name: str
    required_bytes: int
    access_modes: tuple[str, ...]            # CSI mode names, one VolumeCapability each
    fs_type: str
    mount_flags: tuple[str, ...]
    parameters: Mapping[str, str]
    source_volume_id: str = ""               # clone: the volume handle of the data source's PV


@dataclass(frozen=True)
class CreatedVolume:
    """What CreateVolume answered."""

    volume_id: str
    capacity_bytes: int = 0
    volume_context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Provision:
    claim: Obj
    storage_class: Obj


@dataclass(frozen=True)
class Delete:
    volume: Obj

    @property
    def handle(self) -> str:
        return str(((self.volume.get("spec") or {}).get("csi") or {}).get("volumeHandle") or "")


def wants_provisioning(claim: Mapping[str, Any], classes: Mapping[str, Mapping[str, Any]], driver: str) -> bool:
    """Whether ``claim`` waits for ``driver`` to provision it (``shouldProvision``)."""
    if _meta(claim).get("deletionTimestamp") or (claim.get("spec") or {}).get("volumeName"):
        return False
    annotations = _annotations(claim)
    if driver not in (annotations.get(STORAGE_PROVISIONER), annotations.get(BETA_STORAGE_PROVISIONER)):
        return False
    sc = classes.get(str((claim.get("spec") or {}).get("storageClassName") or ""))
    if sc is None or sc.get("provisioner") != driver:
        return False
    if sc.get("volumeBindingMode") == "WaitForFirstConsumer":
        return "volume.kubernetes.io/selected-node" in annotations
    return True


def plan(claims: Iterable[Obj], volumes: Iterable[Obj], classes: Mapping[str, Obj],
         driver: str) -> list[Provision | Delete]:
    """Everything to do now: claims to provision (oldest first), then released volumes to delete."""
    volumes = list(volumes)
    existing = {str(_meta(pv).get("name")) for pv in volumes}
    todo: list[Provision | Delete] = []
    for claim in sorted(claims, key=lambda c: str(_meta(c).get("creationTimestamp") or "")):
        # A PV of that name already exists: an earlier round created it and the PV controller will bind.
        if wants_provisioning(claim, classes, driver) and volume_name(claim) not in existing:
            sc = classes[str(claim["spec"]["storageClassName"])]
            todo.append(Provision(claim, dict(sc)))
    for pv in volumes:
        spec = pv.get("spec") or {}
        if (_annotations(pv).get(PROVISIONED_BY) == driver and not _meta(pv).get("deletionTimestamp")
                and (pv.get("status") or {}).get("phase") == "Released"
                and spec.get("persistentVolumeReclaimPolicy") == "Delete"
                and (spec.get("csi") or {}).get("driver") == driver):
            todo.append(Delete(pv))
    return todo


def source_volume_id(claim: Mapping[str, Any], claims: Iterable[Mapping[str, Any]],
                     volumes: Iterable[Mapping[str, Any]]) -> str:
    """The volume handle a clone starts from (``dataSource`` of kind PersistentVolumeClaim), or ``""``."""
    source = (claim.get("spec") or {}).get("dataSource") or {}
    if not source:
        return ""
    if source.get("kind") != "PersistentVolumeClaim" or source.get("apiGroup"):
        raise PlanError(f"unsupported dataSource kind {source.get('kind')!r}: only PersistentVolumeClaim clones")
    namespace = _meta(claim).get("namespace")
    origin = next((c for c in claims if _meta(c).get("namespace") == namespace
                   and _meta(c).get("name") == source.get("name")), None)
    bound = str(((origin or {}).get("spec") or {}).get("volumeName") or "")
    if origin is None or not bound:
        raise PlanError(f'the data source claim "{source.get("name")}" is not bound to a volume yet')
    pv = next((v for v in volumes if _meta(v).get("name") == bound), None)
    handle = str((((pv or {}).get("spec") or {}).get("csi") or {}).get("volumeHandle") or "")
    if not handle:
        raise PlanError(f'the data source claim "{source.get("name")}" has no CSI volume')
    return handle


def create_request(claim: Mapping[str, Any], storage_class: Mapping[str, Any], *, source: str = "",
                   extra_metadata: bool = True) -> CreateRequest:
    """The CreateVolume request for ``claim`` of ``storage_class``; raises :class:`PlanError`."""
    spec = claim.get("spec") or {}
    modes = list(spec.get("accessModes") or [])
    if not modes:
        raise PlanError("the claim has no accessModes")
    unknown = [m for m in modes if m not in ACCESS_MODES]
    if unknown:
        raise PlanError(f"unsupported access mode {unknown[0]!r}")
    if (spec.get("volumeMode") or "Filesystem") != "Filesystem":
        raise PlanError(f"volumeMode {spec['volumeMode']!r} is not supported: only Filesystem")
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if request is None:
        raise PlanError("the claim requests no storage (spec.resources.requests.storage)")
    parameters = {str(k): str(v) for k, v in (storage_class.get("parameters") or {}).items()}
    # Reserved keys are the provisioner's own (fstype, secret references): drivers never see them.
    forwarded = {k: v for k, v in parameters.items() if not k.startswith(PREFIX)}
    if extra_metadata:
        forwarded[PVC_NAME_KEY] = str(_meta(claim).get("name") or "")
        forwarded[PVC_NAMESPACE_KEY] = str(_meta(claim).get("namespace") or "")
        forwarded[PV_NAME_KEY] = volume_name(claim)
    return CreateRequest(
        name=volume_name(claim), required_bytes=quantity_bytes(str(request)),
        access_modes=tuple(ACCESS_MODES[m] for m in modes), fs_type=parameters.get(FSTYPE_KEY, ""),
        mount_flags=tuple(str(o) for o in storage_class.get("mountOptions") or []), parameters=forwarded,
        source_volume_id=source)


def persistent_volume(claim: Mapping[str, Any], storage_class: Mapping[str, Any], driver: str,
                      created: CreatedVolume, request: CreateRequest) -> Obj:
    """The PV recording a created volume, pre-bound to its claim."""
    meta, spec = _meta(claim), claim.get("spec") or {}
    requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    # Capacity 0 means "not reported": the PV then shows what was asked (csi-driver-nfs answers 0).
    size = str(requested) if created.capacity_bytes in (0, request.required_bytes) else bytes_quantity(
        created.capacity_bytes)
    csi: Obj = {"driver": driver, "volumeHandle": created.volume_id}
    if created.volume_context:
        csi["volumeAttributes"] = dict(created.volume_context)
    if request.fs_type:
        csi["fsType"] = request.fs_type
    pv: Obj = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": request.name, "annotations": {PROVISIONED_BY: driver}},
        "spec": {
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": {"storage": size},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                         "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")},
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": _meta(storage_class).get("name", ""),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "csi": csi,
        },
    }
    if storage_class.get("mountOptions"):
        pv["spec"]["mountOptions"] = list(copy.deepcopy(storage_class["mountOptions"]))
    return pv


@dataclass
class BackOff:
    """Per-key exponential back-off: ``initial`` doubling up to ``maximum`` seconds after each failure."""

    initial: float = 1.0
    maximum: float = 300.0
    _failures: dict[str, int] = field(default_factory=dict)
    _not_before: dict[str, float] = field(default_factory=dict)

    def ready(self, key: str, now: float) -> bool:
        return now >= self._not_before.get(key, 0.0)

    def failed(self, key: str, now: float) -> float:
        """Record a failure; returns the delay before the next attempt."""
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        delay = min(self.initial * 2 ** count, self.maximum)
        self._not_before[key] = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
        self._not_before.pop(key, None)

    def next_due(self, now: float) -> float | None:
        """The earliest time after ``now`` at which a backed-off key becomes ready, or None."""
        return min((t for t in self._not_before.values() if t > now), default=None)

    def forget_except(self, keys: set[str]) -> None:
        """Drop keys whose objects are gone."""
        for key in [k for k in self._failures if k not in keys]:
            self.succeeded(key)
