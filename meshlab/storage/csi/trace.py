"""Read the driver's call log (``meshlab csi-driver --call-log calls.jsonl``) and pick one volume's calls.

Each line is one CSI call as :class:`meshlab.storage.csi.serving.LoggingInterceptor` saw it: time, method,
the request with secrets redacted, the gRPC code and message, the duration. A volume is followed through
its lifetime by its CreateVolume ``name`` (``pvc-<uid>``, which the provisioner derives from the PVC) and
its ``volume_id``, which every later call carries and which embeds that name (:mod:`.volume_id`); a pod's
NodePublishVolume/NodeUnpublishVolume calls are found by the pod UID in the target path
(``/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from meshlab.storage.csi.serving import CallRecord
from meshlab.storage.csi.volume_id import SnapshotId, VolumeId

__all__ = ["calls_for_pod", "calls_for_volume", "read_call_log"]


def read_call_log(*paths: Path) -> list[CallRecord]:
    """Every call in the given logs (controller and node logs may be merged), oldest first."""
    calls = []
    for path in paths:
        if not Path(path).exists():
            continue
        for line in Path(path).read_text().splitlines():
            if line.strip():
                raw = json.loads(line)
                calls.append(CallRecord(time=raw["time"], method=raw["method"], request=raw["request"],
                                        code=raw["code"], message=raw["message"],
                                        duration_s=raw["duration_ms"] / 1000))
    return sorted(calls, key=lambda call: call.time)


def _volume_name(request: dict[str, object]) -> str | None:
    for key in ("volume_id", "source_volume_id"):
        text = request.get(key)
        if isinstance(text, str):
            parsed = VolumeId.parse(text)
            if parsed is not None:
                return parsed.name
    snapshot = request.get("snapshot_id")
    if isinstance(snapshot, str) and SnapshotId.parse(snapshot) is not None:
        return None
    name = request.get("name")
    return name if isinstance(name, str) else None


def calls_for_volume(calls: Iterable[CallRecord], name: str) -> list[CallRecord]:
    """The calls about the volume CreateVolume was asked to make under ``name`` (e.g. ``pvc-<uid>``)."""
    return [call for call in calls if _volume_name(call.request) == name and "Snapshot" not in call.method]


def calls_for_pod(calls: Iterable[CallRecord], pod_uid: str) -> list[CallRecord]:
    """The node calls made for the pod with UID ``pod_uid`` (its target paths contain the UID)."""
    marker = f"/pods/{pod_uid}/"
    return [call for call in calls
            if marker in str(call.request.get("target_path", "")) + str(call.request.get("volume_path", ""))]
