"""PersistentVolume ↔ PersistentVolumeClaim binding, with a hook for dynamic provisioning.

This is kube-controller-manager's ``persistentvolume-binder``. An unbound claim takes the smallest
*Available* volume that fits it: same ``storageClassName``, same ``volumeMode``, every requested access
mode offered, capacity at least the request, labels matching the claim's ``selector``; a volume pre-bound
to it (``spec.claimRef``) or named by it (``spec.volumeName``) comes first. Binding writes both sides
(``claimRef`` and ``volumeName``, the ``pv.kubernetes.io/bind-completed`` and ``bound-by-controller``
annotations) and then ``status.phase`` Bound. With nothing to bind, a claim of a StorageClass is
provisioned: by a registered :class:`Provisioner` when one is registered under the class's ``provisioner``
name, otherwise by an external provisioner (the claim is annotated
``volume.kubernetes.io/storage-provisioner`` for it, and an ``ExternalProvisioning`` event says it is
waiting). Classes with ``volumeBindingMode: WaitForFirstConsumer`` wait until the scheduler picks a node for
a pod using the claim. A volume whose claim is deleted becomes *Released*: ``Retain`` keeps it, ``Delete``
removes it (through its provisioner when it was provisioned). See "Persistent Volumes" in the Kubernetes
docs.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any, Protocol

from meshlab.cluster.controllers import ownership
from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.controllers.reconciling import Reconciler
from meshlab.cluster.decoding import QuantityError, parse_quantity
from meshlab.cluster.resources import ResourceType
from meshlab.cluster.rest import RestStorage
from meshlab.cluster.selectors import match_label_selector
from meshlab.errors import ApiError

Obj = dict[str, Any]

COMPONENT = "persistentvolume-controller"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


class Provisioner(Protocol):
    """Creates volumes for the claims of StorageClasses whose ``provisioner`` is :attr:`provisioner_name`.

    ``provision`` returns a PersistentVolume (the controller fills in what it leaves out: name
    ``pvc-<claim uid>``, ``claimRef``, class, reclaim policy, access modes, capacity); ``delete`` removes
    the storage behind a released volume whose reclaim policy is ``Delete``.
    """

    provisioner_name: str

    async def provision(self, pvc: Obj, storage_class: Obj) -> Obj: ...

    async def delete(self, pv: Obj) -> None: ...


# --- matching -------------------------------------------------------------------------------------------

def storage(value: Any) -> Fraction:
    try:
        return parse_quantity(str(value))[0] if value is not None else Fraction(0)
    except QuantityError:
        return Fraction(0)


def requested(pvc: Obj) -> Fraction:
    return storage((((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))


def capacity(pv: Obj) -> Fraction:
    return storage(((pv.get("spec") or {}).get("capacity") or {}).get("storage"))


def claim_class(pvc: Obj) -> str:
    return str((pvc.get("spec") or {}).get("storageClassName") or "")


def volume_class(pv: Obj) -> str:
    return str((pv.get("spec") or {}).get("storageClassName") or "")


def refers_to(ref: Obj | None, pvc: Obj) -> bool:
    """Whether a volume's ``claimRef`` names this claim (a ref without uid is a pre-binding by name)."""
    meta = ownership.meta(pvc)
    return (ref is not None and ref.get("name") == meta.get("name") and ref.get("namespace") == meta.get("namespace")
            and ref.get("uid") in (None, "", meta.get("uid")))


def mismatch(pv: Obj, pvc: Obj) -> str:
    """Why ``pv`` cannot satisfy ``pvc`` (``checkVolumeSatisfyClaim``'s wording), or ``""``."""
    if capacity(pv) < requested(pvc):
        return "requested PV is too small"
    if volume_class(pv) != claim_class(pvc):
        return "storageClassName does not match"
    if ((pv.get("spec") or {}).get("volumeMode") or "Filesystem") != (
            (pvc.get("spec") or {}).get("volumeMode") or "Filesystem"):
        return "incompatible volumeMode"
    wanted_modes = set((pvc.get("spec") or {}).get("accessModes") or [])
    if not wanted_modes <= set((pv.get("spec") or {}).get("accessModes") or []):
        return "incompatible accessMode"
    return ""


def find_volume(pvc: Obj, pvs: list[Obj]) -> Obj | None:
    """``findMatchingVolume``: a volume pre-bound to the claim, else the smallest Available one that fits."""
    best: Obj | None = None
    selector = (pvc.get("spec") or {}).get("selector")
    for pv in pvs:
        spec = pv.get("spec") or {}
        if ownership.being_deleted(pv) or mismatch(pv, pvc):
            continue
        if spec.get("claimRef"):
            if refers_to(spec["claimRef"], pvc):
                return pv
            continue
        if (pv.get("status") or {}).get("phase") != "Available":
            continue
        if selector and not match_label_selector(selector, ownership.meta(pv).get("labels") or {}):
            continue
        if best is None or capacity(pv) < capacity(best):
            best = pv
    return best


def default_class(classes: dict[str, Obj]) -> str:
    defaults = sorted((sc.get("metadata") or {}).get("creationTimestamp", "") + "\0" + name
                      for name, sc in classes.items()
                      if ((sc.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS) == "true")
    return defaults[-1].split("\0", 1)[1] if defaults else ""


def volume_phase(pv: Obj, claims: dict[tuple[str, str], Obj]) -> str:
    ref = (pv.get("spec") or {}).get("claimRef")
    if not ref:
        return "Available"
    if not ref.get("uid"):
        return "Available"  # pre-bound by name, waiting for its claim
    claim = claims.get((ref.get("namespace", ""), ref.get("name", "")))
    if claim is None or ownership.uid(claim) != ref.get("uid"):
        return "Released"
    if (claim.get("spec") or {}).get("volumeName") == ownership.meta(pv)["name"]:
        return "Bound"
    return (pv.get("status") or {}).get("phase") or "Pending"


def provisioned_volume(pv: Obj, pvc: Obj, sc: Obj, provisioner: str) -> Obj:
    """Complete a provisioner's volume the way the external-provisioner library does."""
    out = copy.deepcopy(pv)
    meta = out.setdefault("metadata", {})
    meta.setdefault("name", f"pvc-{ownership.uid(pvc)}")
    meta.setdefault("annotations", {})[PROVISIONED_BY] = provisioner
    spec = out.setdefault("spec", {})
    spec["claimRef"] = claim_ref(pvc)
    spec["storageClassName"] = ownership.meta(sc)["name"]
    spec.setdefault("persistentVolumeReclaimPolicy", sc.get("reclaimPolicy") or "Delete")
    spec.setdefault("accessModes", list((pvc.get("spec") or {}).get("accessModes") or []))
    spec.setdefault("volumeMode", (pvc.get("spec") or {}).get("volumeMode") or "Filesystem")
    request = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    if request is not None:
        spec.setdefault("capacity", {"storage": request})
    if sc.get("mountOptions"):
        spec.setdefault("mountOptions", list(sc["mountOptions"]))
    return {"apiVersion": "v1", "kind": "PersistentVolume", **out}


def claim_ref(pvc: Obj) -> Obj:
    meta = ownership.meta(pvc)
    return {"kind": "PersistentVolumeClaim", "namespace": meta.get("namespace", ""), "name": meta["name"],
            "uid": meta.get("uid", ""), "apiVersion": "v1", "resourceVersion": meta.get("resourceVersion", "")}


# --- the controller --------------------------------------------------------------------------------------

class VolumeBindingController(Reconciler):
    watches = ("/persistentvolumes", "/persistentvolumeclaims", "storage.k8s.io/storageclasses")
    user = "system:serviceaccount:kube-system:persistent-volume-binder"
    # The binder resyncs every 15 s, repeating its events for waiting claims (hence "x19 over 4m41s").
    period = 15.0

    def __init__(self, rest: RestStorage, *, provisioners: tuple[Provisioner, ...] = ()) -> None:
        super().__init__(rest)
        self.provisioners: dict[str, Provisioner] = {}
        for provisioner in provisioners:
            self.register(provisioner)

    def register(self, provisioner: Provisioner) -> None:
        """Provision the claims of StorageClasses naming ``provisioner.provisioner_name`` in-process."""
        self.provisioners[provisioner.provisioner_name] = provisioner
        self.poke()

    async def sync(self) -> None:
        pvcs = self.objects("/persistentvolumeclaims")
        claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in pvcs}
        for pv in self.objects("/persistentvolumes"):
            await self.guard(f"volume {pv['metadata']['name']}", self.sync_volume(pv, claims))
        classes = {sc["metadata"]["name"]: sc for sc in self.objects("storage.k8s.io/storageclasses")}
        # Older claims first, as the binder's queue would see them. (Volumes were synced first so that
        # new ones are Available before claims look for one.)
        for pvc in sorted(pvcs, key=lambda c: c["metadata"].get("creationTimestamp", "")):
            if not ownership.being_deleted(pvc):
                name = f"{pvc['metadata']['namespace']}/{pvc['metadata']['name']}"
                await self.guard(f"claim {name}", self.sync_claim(pvc, classes))

    async def sync_volume(self, pv: Obj, claims: dict[tuple[str, str], Obj]) -> None:
        if ownership.being_deleted(pv):
            return
        phase = volume_phase(pv, claims)
        if phase != (pv.get("status") or {}).get("phase"):
            pv = await self._set_phase(self.kind("", "v1", "persistentvolumes"), pv, {"phase": phase})
        if phase == "Released" and (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            await self._reclaim(pv)

    async def _reclaim(self, pv: Obj) -> None:
        by = (ownership.meta(pv).get("annotations") or {}).get(PROVISIONED_BY)
        if by and by not in self.provisioners:
            return  # an external provisioner deletes what it provisioned
        if by:
            try:
                await self.provisioners[by].delete(pv)
            except Exception as err:  # a provisioner's failure must not stop the controller
                await record_event(self.rest, pv, type="Warning", reason="VolumeFailedDelete", message=str(err),
                                   component=by)
                self.requeue_after(5.0)
                return
        await self.rest.delete(self.kind("", "v1", "persistentvolumes"), "", pv["metadata"]["name"],
                               {"preconditions": {"uid": ownership.uid(pv)}}, self.opts)

    async def sync_claim(self, pvc: Obj, classes: dict[str, Obj]) -> None:
        pv_rt = self.kind("", "v1", "persistentvolumes")
        volume_name = (pvc.get("spec") or {}).get("volumeName")
        if volume_name:
            found = self.rest.store.get(self.rest.key(pv_rt, "", volume_name))
            await self._sync_named(pvc, found[1] if found else None)
            return
        if "storageClassName" not in (pvc.get("spec") or {}) and default_class(classes):
            # Retroactive default StorageClass assignment (GA in 1.28).
            updated = copy.deepcopy(pvc)
            updated["spec"]["storageClassName"] = default_class(classes)
            await self.rest.update(self.kind("", "v1", "persistentvolumeclaims"), pvc["metadata"]["namespace"],
                                   pvc["metadata"]["name"], updated, self.opts)
            return
        class_name = claim_class(pvc)
        sc = classes.get(class_name)
        annotations = ownership.meta(pvc).get("annotations") or {}
        delayed = sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        if delayed and SELECTED_NODE not in annotations:
            await self._pending(pvc, "Normal", "WaitForFirstConsumer",
                                "waiting for first consumer to be created before binding")
            return
        pv = find_volume(pvc, self.objects("/persistentvolumes"))
        if pv is not None:
            await self._bind(pv, pvc)
        elif not class_name:
            await self._pending(pvc, "Normal", "FailedBinding",
                                "no persistent volumes available for this claim and no storage class is set")
        elif sc is None:
            await self._pending(pvc, "Warning", "ProvisioningFailed",
                                f'storageclass.storage.k8s.io "{class_name}" not found')
        else:
            await self._provision(pvc, sc)

    async def _sync_named(self, pvc: Obj, pv: Obj | None) -> None:
        """A claim naming its volume: bind to it, confirm the binding, or say what went wrong."""
        pvc_rt = self.kind("", "v1", "persistentvolumeclaims")
        completed = (ownership.meta(pvc).get("annotations") or {}).get(BIND_COMPLETED)
        ref = ((pv or {}).get("spec") or {}).get("claimRef")
        if pv is not None and (not ref or refers_to(ref, pvc)):
            if ref and ref.get("uid"):
                await self._claim_bound(pvc, pv)
            elif problem := mismatch(pv, pvc):
                await self._pending(pvc, "Warning", "VolumeMismatch",
                                    f'Cannot bind to requested volume "{pv["metadata"]["name"]}": {problem}')
            else:
                await self._bind(pv, pvc)
        elif completed:
            if (pvc.get("status") or {}).get("phase") != "Lost":
                await self._set_phase(pvc_rt, pvc, {"phase": "Lost"})
                await record_event(self.rest, pvc, type="Warning", reason="ClaimLost",
                                   message="Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                                   component=COMPONENT)
        elif pv is not None:
            await self._pending(pvc, "Warning", "FailedBinding",
                                f'volume "{pv["metadata"]["name"]}" already bound to a different claim.')
        else:
            await self._set_phase(pvc_rt, pvc, {"phase": "Pending"})  # the named volume may appear later

    async def _bind(self, pv: Obj, pvc: Obj) -> None:
        pv_rt = self.kind("", "v1", "persistentvolumes")
        volume = copy.deepcopy(pv)
        if not volume["spec"].get("claimRef"):
            volume["metadata"].setdefault("annotations", {})[BOUND_BY_CONTROLLER] = "yes"
        volume["spec"]["claimRef"] = claim_ref(pvc)
        volume = await self.rest.update(pv_rt, "", pv["metadata"]["name"], volume, self.opts)
        await self._set_phase(pv_rt, volume, {"phase": "Bound"})
        await self._claim_bound(pvc, volume)

    async def _claim_bound(self, pvc: Obj, pv: Obj) -> None:
        pvc_rt = self.kind("", "v1", "persistentvolumeclaims")
        claim = copy.deepcopy(pvc)
        annotations = claim["metadata"].setdefault("annotations", {})
        if not claim["spec"].get("volumeName"):
            claim["spec"]["volumeName"] = pv["metadata"]["name"]
            annotations[BOUND_BY_CONTROLLER] = "yes"
        annotations[BIND_COMPLETED] = "yes"
        if claim != pvc:
            claim = await self.rest.update(pvc_rt, claim["metadata"]["namespace"], claim["metadata"]["name"], claim,
                                           self.opts)
        spec = pv.get("spec") or {}
        await self._set_phase(pvc_rt, claim, {"phase": "Bound", "accessModes": list(spec.get("accessModes") or []),
                                              "capacity": dict(spec.get("capacity") or {})})

    async def _provision(self, pvc: Obj, sc: Obj) -> None:
        name = str(sc.get("provisioner") or "")
        annotations = ownership.meta(pvc).get("annotations") or {}
        if annotations.get(STORAGE_PROVISIONER) != name:
            claim = copy.deepcopy(pvc)
            claim["metadata"]["annotations"] = {**annotations, STORAGE_PROVISIONER: name,
                                                BETA_STORAGE_PROVISIONER: name}
            await self.rest.update(self.kind("", "v1", "persistentvolumeclaims"), pvc["metadata"]["namespace"],
                                   pvc["metadata"]["name"], claim, self.opts)
            return
        provisioner = self.provisioners.get(name)
        if provisioner is None:
            await self._pending(pvc, "Normal", "ExternalProvisioning",
                                f"Waiting for a volume to be created either by the external provisioner '{name}' or "
                                "manually by the system administrator. If volume creation is delayed, please verify "
                                "that the provisioner is running and correctly registered.")
            return
        key = f'{pvc["metadata"]["namespace"]}/{pvc["metadata"]["name"]}'
        await record_event(self.rest, pvc, type="Normal", reason="Provisioning",
                           message=f'External provisioner is provisioning volume for claim "{key}"', component=name)
        try:
            made = provisioned_volume(await provisioner.provision(pvc, sc), pvc, sc, name)
            created = await self.rest.create(self.kind("", "v1", "persistentvolumes"), "", made, self.opts)
        except ApiError:
            raise
        except Exception as err:  # the provisioner's own failure is the claim's event, not a crash
            await self._pending(pvc, "Warning", "ProvisioningFailed",
                                f'failed to provision volume with StorageClass "{ownership.meta(sc)["name"]}": {err}')
            self.requeue_after(5.0)
            return
        await record_event(self.rest, pvc, type="Normal", reason="ProvisioningSucceeded",
                           message=f"Successfully provisioned volume {created['metadata']['name']}", component=name)

    async def _pending(self, pvc: Obj, type_: str, reason: str, message: str) -> None:
        await self._set_phase(self.kind("", "v1", "persistentvolumeclaims"), pvc, {"phase": "Pending"})
        await record_event(self.rest, pvc, type=type_, reason=reason, message=message, component=COMPONENT)

    async def _set_phase(self, rt: ResourceType, obj: Obj, status: Obj) -> Obj:
        if (obj.get("status") or {}) == status:
            return obj
        updated = copy.deepcopy(obj)
        updated["status"] = status
        meta = updated["metadata"]
        return await self.rest.update(rt, meta.get("namespace", ""), meta["name"], updated, self.opts,
                                      subresource="status")
