"""The ``persistentVolumeClaim`` volume: the claim's bound PersistentVolume, mounted by its source's plugin.

A pod names a claim (``persistentVolumeClaim: {claimName, readOnly}``), not storage. As the real kubelet
(its volume manager's desired-state populator resolves a PVC volume to its PV, then the PV's source picks the
plugin), this plugin reads the claim in the pod's namespace; until it is ``Bound`` the pod waits in
``ContainerCreating`` with a ``FailedMount`` event and the kubelet retries. The bound PV
(``spec.volumeName``, whose ``claimRef`` must point back at this claim) has exactly one source key —
``nfs``, ``flexVolume``, ``csi``, ``hostPath`` ... — and the plugin registered for that key sets the volume up.
The delegate receives ``{"name": <PV name>, <key>: <PV source, readOnly true if the PV or the claim reference
says so>, "mountOptions": <PV spec.mountOptions>}`` — the PV's name, as a real kubelet's paths
(``volumes/kubernetes.io~nfs/<pv>``) and messages use it. What was delegated is recorded beside the volume so
teardown works after the claim or the PV are gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError, VolumePlugin
from meshlab.errors import NotFound

__all__ = ["PersistentVolumeClaimPlugin", "pv_volume"]

KIND = "kubernetes.io~persistentvolumeclaim"
# PersistentVolumeSpec fields that are not the volume source.
_NOT_SOURCES = frozenset({"accessModes", "capacity", "claimRef", "mountOptions", "nodeAffinity",
                          "persistentVolumeReclaimPolicy", "storageClassName", "volumeMode",
                          "volumeAttributesClassName"})


def pv_volume(pv: dict[str, Any], *, read_only: bool = False) -> tuple[str, dict[str, Any]]:
    """(source key, the volume a delegate plugin gets) for ``pv``; raises ValueError without one source."""
    spec = pv.get("spec") or {}
    keys = [key for key, value in spec.items() if key not in _NOT_SOURCES and isinstance(value, dict)]
    name = str((pv.get("metadata") or {}).get("name") or "")
    if len(keys) != 1:
        raise ValueError(f'persistentvolume "{name}" has {len(keys)} volume sources ({", ".join(keys) or "none"}); '
                         "exactly one is allowed")
    key = keys[0]
    source = dict(spec[key])
    source["readOnly"] = bool(source.get("readOnly")) or read_only
    return key, {"name": name, key: source, "mountOptions": list(spec.get("mountOptions") or [])}


class PersistentVolumeClaimPlugin:
    """``volumes: [{name, persistentVolumeClaim: {claimName, readOnly}}]``."""

    name = "persistentVolumeClaim"

    def _record(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        return ctx.volume_dir(KIND, str(volume["name"])).with_suffix(".json")

    def _pv(self, ctx: VolumeContext, name: str) -> dict[str, Any] | None:
        rt = ctx.rest.registry.lookup("", "v1", "persistentvolumes")
        if rt is None:
            raise LookupError("no resource type v1/persistentvolumes")
        try:
            return ctx.rest.get(rt, "", name)
        except NotFound:
            return None

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        ref = volume.get(self.name) or {}
        claim_name = str(ref.get("claimName") or "")
        claim = ctx.lookup("persistentvolumeclaims", claim_name) if claim_name else None
        if claim is None:
            raise ctx.failed(volume, f'persistentvolumeclaim "{claim_name}" not found')
        phase = (claim.get("status") or {}).get("phase") or "Pending"
        pv_name = str((claim.get("spec") or {}).get("volumeName") or "")
        if phase != "Bound" or not pv_name:
            raise ctx.failed(volume, f"PVC {ctx.namespace}/{claim_name} is not bound (phase {phase}): the pod "
                                     "waits until a PersistentVolume is bound to it")
        pv = self._pv(ctx, pv_name)
        if pv is None:
            raise ctx.failed(volume, f'PVC {ctx.namespace}/{claim_name} is bound to persistentvolume "{pv_name}", '
                                     "which does not exist")
        claim_ref = (pv.get("spec") or {}).get("claimRef") or {}
        claim_uid = (claim.get("metadata") or {}).get("uid")
        if (claim_ref.get("name"), claim_ref.get("namespace")) != (claim_name, ctx.namespace) or (
                claim_ref.get("uid") and claim_ref.get("uid") != claim_uid):
            raise ctx.failed(volume, f'persistentvolume "{pv_name}" is not bound to PVC {ctx.namespace}/{claim_name}'
                                     f" (its claimRef is {claim_ref.get('namespace')}/{claim_ref.get('name')})")
        try:
            key, delegated = pv_volume(pv, read_only=bool(ref.get("readOnly")))
        except ValueError as err:
            raise ctx.failed(volume, str(err)) from err
        plugin = ctx.plugins(key)
        if plugin is None:
            raise ctx.failed(volume, f'persistentvolume "{pv_name}" has a {key} source, and the embedded lab has no '
                                     f"volume plugin for {key}")
        record = self._record(ctx, volume)
        record.parent.mkdir(parents=True, exist_ok=True)
        # Written first: a half-done setup must still be torn down by the delegate.
        record.write_text(json.dumps({"plugin": key, "volume": delegated}))
        return await plugin.setup(ctx, delegated)

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        record = self._record(ctx, volume)
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            return  # setup never got as far as choosing a plugin: nothing to undo
        plugin: VolumePlugin | None = ctx.plugins(str(saved.get("plugin")))
        if plugin is None:
            raise VolumeError("FailedUnmount", f'UnmountVolume.TearDown failed for volume "{volume.get("name")}" : '
                                               f"no volume plugin {saved.get('plugin')!r} is registered")
        await plugin.teardown(ctx, dict(saved["volume"]), path)
        record.unlink(missing_ok=True)
