"""The arithmetic of Deployment rollouts, as pure functions (``pkg/controller/deployment`` and its util).

A Deployment owns one ReplicaSet per distinct pod template. The *new* ReplicaSet is the (oldest) one whose
template equals the Deployment's, ignoring the ``pod-template-hash`` label; its name is
``<deployment>-<hash>``, the hash being FNV-32a over the template (plus ``status.collisionCount``), encoded
with the apiserver's vowel-free alphabet. Revisions number the templates: a new (or revived, on rollback)
ReplicaSet gets ``max(old revisions) + 1`` in ``deployment.kubernetes.io/revision`` and remembers the
revisions it had in ``revision-history``.

A RollingUpdate moves replicas between ReplicaSets within two fence posts: ``maxSurge`` (rounded *up* from
a percentage of ``spec.replicas``) bounds the pods above ``spec.replicas``; ``maxUnavailable`` (rounded
*down*) bounds how many may be unavailable; if both come out 0, ``maxUnavailable`` is 1. The new ReplicaSet
grows to ``replicas + maxSurge - all pods``; old ones shrink while at least ``replicas - maxUnavailable``
stay available, unhealthy old pods first. When ``spec.replicas`` changes mid-rollout, the extra (or missing)
replicas are spread proportionally over the active ReplicaSets (``deployment.kubernetes.io/max-replicas``
remembers each one's share). What the Deployment then reports is computed in
:mod:`~meshlab.cluster.controllers.progress`.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from meshlab.cluster.controllers.ownership import meta, owner_reference

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Annotations a Deployment does not copy to its ReplicaSets (and `kubectl rollout undo` does not copy back).
NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                        DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"})
REVISION_HISTORY_CHARS = 2000

# k8s.io/apimachinery/pkg/util/rand: no vowels, no confusable characters.
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# --- names, hashes and revisions -------------------------------------------------------------------------

def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in text)


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """``controller.ComputeHash``: stable for equal templates, different after a collision bump."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(8, "little")
    return safe_encode(str(fnv32a(data)))


def without_hash(template: Obj) -> Obj:
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
        if not labels:
            out["metadata"].pop("labels")
    return out


def equal_ignoring_hash(a: Obj, b: Obj) -> bool:
    return without_hash(a) == without_hash(b)


def revision(rs: Obj | None) -> int:
    try:
        return int((meta(rs or {}).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def creation_order(rss: list[Obj]) -> list[Obj]:
    """Oldest first; ties (timestamps have one-second resolution) by revision, then name."""
    return sorted(rss, key=lambda rs: (meta(rs).get("creationTimestamp", ""), revision(rs), meta(rs)["name"]))


def find_new(d: Obj, rss: list[Obj]) -> Obj | None:
    template = (d.get("spec") or {}).get("template") or {}
    for rs in creation_order(rss):
        if equal_ignoring_hash((rs.get("spec") or {}).get("template") or {}, template):
            return rs
    return None


def replicas(obj: Obj | None) -> int:
    return int(((obj or {}).get("spec") or {}).get("replicas", 1)) if obj else 0


def status_count(obj: Obj | None, field: str) -> int:
    return int(((obj or {}).get("status") or {}).get(field) or 0)


def active(rss: list[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


# --- fence posts -------------------------------------------------------------------------------------------

def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an int as is, ``"25%"`` of ``total`` rounded up or down."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.endswith("%"):
        return int(text)
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def fenceposts(max_surge: int | str | None, max_unavailable: int | str | None, desired: int) -> tuple[int, int]:
    """(surge, unavailable) for ``desired`` replicas; both zero would deadlock, so unavailable becomes 1."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling(d: Obj) -> Obj | None:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    return strategy.get("rollingUpdate") or {"maxSurge": "25%", "maxUnavailable": "25%"}


def max_surge(d: Obj) -> int:
    rolling = _rolling(d)
    if rolling is None:
        return 0
    return fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas(d))[0]


def max_unavailable(d: Obj) -> int:
    rolling = _rolling(d)
    if rolling is None or replicas(d) == 0:
        return 0
    unavailable = fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"), replicas(d))[1]
    return min(unavailable, replicas(d))


# --- what to scale -------------------------------------------------------------------------------------------

def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> int:
    """``NewRSNewReplicas``: how big the new ReplicaSet may be now."""
    rolling = _rolling(d)
    if rolling is None:
        return replicas(d)
    # Kubernetes counts wanted replicas only; the lab also counts pods an old ReplicaSet still has (its
    # controller may not have deleted them yet), so that the surge bound holds for pods, not just numbers.
    current = sum(max(replicas(rs), status_count(rs, "replicas")) for rs in all_rss)
    new_size = replicas(new_rs)
    max_total = replicas(d) + scaled_value(rolling.get("maxSurge"), replicas(d), round_up=True)
    if current >= max_total:
        return new_size
    return new_size + min(max_total - current, replicas(d) - new_size)


def new_rs_target(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """``reconcileNewReplicaSet``: the new ReplicaSet's next size (equal to its size when nothing to do)."""
    if replicas(new_rs) >= replicas(d):
        return replicas(d)
    return new_rs_replicas(d, all_rss, new_rs)


def old_rs_targets(d: Obj, new_rs: Obj, old_rss: list[Obj]) -> dict[str, int]:
    """``reconcileOldReplicaSets``: new sizes of the old ReplicaSets to scale down now (by name)."""
    old_pods = sum(replicas(rs) for rs in old_rss)
    if old_pods == 0:
        return {}
    all_pods = old_pods + replicas(new_rs)
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = replicas(new_rs) - status_count(new_rs, "availableReplicas")
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    sizes = {meta(rs)["name"]: replicas(rs) for rs in old_rss}
    ordered = creation_order(old_rss)
    # First the unhealthy old replicas: they would otherwise block the rollout until it times out.
    cleaned = 0
    for rs in ordered:
        name = meta(rs)["name"]
        unhealthy = sizes[name] - status_count(rs, "availableReplicas")
        if cleaned >= max_scaled_down:
            break
        if sizes[name] == 0 or unhealthy <= 0:
            continue
        step = min(max_scaled_down - cleaned, unhealthy)
        sizes[name] -= step
        cleaned += step
    # Then healthy ones, as long as enough pods stay available.
    available = sum(status_count(rs, "availableReplicas") for rs in [*old_rss, new_rs])
    if available > min_available:
        budget = available - min_available
        for rs in ordered:
            name = meta(rs)["name"]
            if budget <= 0:
                break
            step = min(sizes[name], budget)
            sizes[name] -= step
            budget -= step
    return {name: size for name, size in sizes.items() if size != replicas(_by_name(old_rss, name))}


def _by_name(rss: list[Obj], name: str) -> Obj:
    return next(rs for rs in rss if meta(rs)["name"] == name)


def _round_half_away(value: float) -> int:
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def _annotation_int(rs: Obj, key: str) -> int | None:
    try:
        return int((meta(rs).get("annotations") or {})[key])
    except (KeyError, ValueError):
        return None


def saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    want = replicas(d)
    return (replicas(rs) == want and _annotation_int(rs, DESIRED_REPLICAS) == want
            and status_count(rs, "availableReplicas") == want)


def scaling_event(d: Obj, all_rss: list[Obj | None]) -> bool:
    """Whether ``spec.replicas`` changed since the active ReplicaSets were sized (``isScalingEvent``)."""
    for rs in active(all_rss):
        desired = _annotation_int(rs, DESIRED_REPLICAS)
        if desired is not None and desired != replicas(d):
            return True
    return False


def proportional_targets(d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> dict[str, int]:
    """``DeploymentController.scale``: sizes for every ReplicaSet after a change of ``spec.replicas``."""
    newest_first = sorted(old_rss, key=lambda rs: meta(rs).get("creationTimestamp", ""), reverse=True)
    live = active([*newest_first, new_rs])
    if not live:
        latest = new_rs if new_rs is not None else (newest_first[0] if newest_first else None)
        return {} if latest is None else {meta(latest)["name"]: replicas(d)}
    if len(live) == 1:
        return {meta(live[0])["name"]: replicas(d)}
    if saturated(d, new_rs):
        return {meta(rs)["name"]: 0 for rs in active(list(old_rss))}
    if _rolling(d) is None:
        return {}
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - sum(replicas(rs) for rs in live)
    if to_add == 0:
        return {meta(rs)["name"]: replicas(rs) for rs in live}
    # Larger first; on ties, newer first when growing and older first when shrinking.
    by_age = sorted(live, key=lambda rs: meta(rs).get("creationTimestamp", ""), reverse=to_add > 0)
    ordered = sorted(by_age, key=lambda rs: -replicas(rs))
    sizes: dict[str, int] = {}
    added = 0
    for rs in ordered:
        share = _proportion(d, rs, to_add, added)
        sizes[meta(rs)["name"]] = replicas(rs) + share
        added += share
    first = meta(ordered[0])["name"]
    sizes[first] = max(sizes[first] + to_add - added, 0)
    return sizes


def _proportion(d: Obj, rs: Obj, to_add: int, added: int) -> int:
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(d) == 0:
        fraction = -replicas(rs)
    else:
        total = replicas(d) + max_surge(d)
        annotated = _annotation_int(rs, MAX_REPLICAS) or status_count(d, "replicas")
        fraction = _round_half_away(replicas(rs) * total / annotated) - replicas(rs) if annotated else 0
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# --- the ReplicaSets a Deployment writes ----------------------------------------------------------------

def replica_annotations(d: Obj) -> dict[str, str]:
    return {DESIRED_REPLICAS: str(replicas(d)), MAX_REPLICAS: str(replicas(d) + max_surge(d))}


def new_rs_annotations(d: Obj, rs: Obj, new_revision: int, *, exists: bool) -> dict[str, str]:
    """``SetNewReplicaSetAnnotations``: the annotations the new ReplicaSet should carry."""
    out = dict(meta(rs).get("annotations") or {})
    for key, value in (meta(d).get("annotations") or {}).items():
        if key not in NOT_COPIED:
            out[key] = value
    old_text = out.get(REVISION)
    old = revision(rs)
    if old < new_revision:
        out[REVISION] = str(new_revision)
        if old_text:
            # Reviving an old ReplicaSet (a rollback): keep the revisions it had.
            history = [r for r in out.get(REVISION_HISTORY, "").split(",") if r]
            history.append(old_text)
            while history and len(",".join(history)) > REVISION_HISTORY_CHARS:
                history.pop(0)
            out[REVISION_HISTORY] = ",".join(history)
    if not exists:
        out.update(replica_annotations(d))
    return out


def new_replica_set(d: Obj, pod_hash: str, new_revision: int, size: int) -> Obj:
    spec = d.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
    selector = copy.deepcopy(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
    rs: Obj = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"{meta(d)['name']}-{pod_hash}", "namespace": meta(d).get("namespace", ""),
                     "labels": dict(template["metadata"]["labels"]), "ownerReferences": [owner_reference(d)]},
        "spec": {"replicas": size, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                 "selector": selector, "template": template},
    }
    rs["metadata"]["annotations"] = new_rs_annotations(d, rs, new_revision, exists=False)
    return rs


def cleanup_candidates(d: Obj, old_rss: list[Obj]) -> list[Obj]:
    """Old, empty ReplicaSets beyond ``revisionHistoryLimit``, lowest revision first."""
    limit = (d.get("spec") or {}).get("revisionHistoryLimit")
    if limit is None:
        return []
    alive = [rs for rs in old_rss if not meta(rs).get("deletionTimestamp")]
    surplus = len(alive) - int(limit)
    if surplus <= 0:
        return []
    out = []
    for rs in sorted(alive, key=revision)[:surplus]:
        if (status_count(rs, "replicas") or replicas(rs)
                or int(meta(rs).get("generation") or 1) > status_count(rs, "observedGeneration")):
            continue
        out.append(rs)
    return out
