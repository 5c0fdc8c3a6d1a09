"""The Deployment controller: roll a pod template out through ReplicaSets, one step per sync.

Each sync follows kube-controller-manager's ``deployment`` controller: claim the ReplicaSets the selector
matches; a Deployment being deleted only reports status; a paused one, or one whose ``spec.replicas`` just
changed, is only scaled (proportionally across its ReplicaSets); otherwise the strategy runs.
``RollingUpdate`` creates the new ReplicaSet if needed, grows it within ``maxSurge``, shrinks the old ones
within ``maxUnavailable``, and once complete deletes old empty ReplicaSets beyond
``revisionHistoryLimit``. ``Recreate`` scales every old ReplicaSet to zero, waits until their pods are
gone, then creates the new one at full size. Each scaling is recorded as a ``ScalingReplicaSet`` event
(``Scaled up replica set web-5d4f8 from 0 to 3``). The decisions live in
:mod:`~meshlab.cluster.controllers.rollouts`; ``kubectl rollout status|history|undo`` read and write only
what this controller maintains (revisions on ReplicaSets, ``observedGeneration``, replica counts and the
``Progressing`` condition).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from meshlab.cluster.controllers import ownership, progress, rollouts
from meshlab.cluster.controllers.events import record_event
from meshlab.cluster.controllers.readiness import pod_terminal
from meshlab.cluster.controllers.reconciling import Reconciler, utcnow
from meshlab.errors import AlreadyExists

Obj = dict[str, Any]

COMPONENT = "deployment-controller"


@dataclass
class _Rollout:
    """One Deployment's sync: the latest stored copies of it and of its ReplicaSets."""

    d: Obj
    rss: list[Obj]
    now: dt.datetime

    @property
    def name(self) -> str:
        return str(self.d["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.d["metadata"]["namespace"])

    def replace(self, rs: Obj) -> Obj:
        self.rss = [rs if ownership.uid(old) == ownership.uid(rs) else old for old in self.rss]
        return rs

    def current(self, rs: Obj | None) -> Obj | None:
        if rs is None:
            return None
        return next((r for r in self.rss if ownership.uid(r) == ownership.uid(rs)), None)

    def split(self, new_rs: Obj | None) -> tuple[Obj | None, list[Obj]]:
        new_rs = self.current(new_rs)
        return new_rs, [rs for rs in self.rss if new_rs is None or ownership.uid(rs) != ownership.uid(new_rs)]


def old_pods_running(new_rs: Obj | None, old_rss: list[Obj], pods: list[Obj]) -> bool:
    """For ``Recreate``: whether any pod of an old ReplicaSet still exists in a non-terminal phase."""
    if sum(rollouts.status_count(rs, "replicas") for rs in old_rss):
        return True
    old_uids = {ownership.uid(rs) for rs in old_rss} - ({ownership.uid(new_rs)} if new_rs else set())
    return any((ref := ownership.controller_ref(p)) is not None and ref.get("uid") in old_uids and not pod_terminal(p)
               for p in pods)


class DeploymentController(Reconciler):
    watches = ("apps/deployments", "apps/replicasets", "/pods")
    user = "system:serviceaccount:kube-system:deployment-controller"

    async def sync(self) -> None:
        now = utcnow()
        rss: dict[str, list[Obj]] = defaultdict(list)
        pods: dict[str, list[Obj]] = defaultdict(list)
        for rs in self.objects("apps/replicasets"):
            rss[rs["metadata"].get("namespace", "")].append(rs)
        for pod in self.objects("/pods"):
            pods[pod["metadata"].get("namespace", "")].append(pod)
        for d in self.objects("apps/deployments"):
            ns = d["metadata"].get("namespace", "")
            await self.guard(f"deployment {ns}/{d['metadata']['name']}", self.sync_one(d, rss[ns], pods[ns], now))

    async def sync_one(self, d: Obj, rss: list[Obj], pods: list[Obj], now: dt.datetime) -> None:
        ctx = _Rollout(copy.deepcopy(d), [], now)
        claimed = await self._claim(ctx.d, rss)
        if claimed is None:
            return  # a retry is queued; a partial view would create a ReplicaSet it is adopting
        ctx.rss = claimed
        if ownership.being_deleted(ctx.d):
            new_rs, old = await self._new_and_old(ctx, create=False)
            await self._write_status(ctx, progress.calculate_status(ctx.d, self._all(new_rs, old), new_rs, now))
            return
        paused_status = progress.paused_condition(ctx.d, now)
        if paused_status is not None:
            await self._write_status(ctx, paused_status)
        spec = ctx.d.get("spec") or {}
        if spec.get("paused"):
            await self._scale_only(ctx)
            return
        new_rs, old = await self._new_and_old(ctx, create=False)
        if rollouts.scaling_event(ctx.d, [new_rs, *old]):
            await self._scale_only(ctx)
        elif (spec.get("strategy") or {}).get("type") == "Recreate":
            await self._recreate(ctx, pods)
        else:
            await self._rolling_update(ctx)

    # -- the strategies ------------------------------------------------------------------------------------

    async def _rolling_update(self, ctx: _Rollout) -> None:
        new_rs, old = await self._new_and_old(ctx, create=True)
        if new_rs is None:
            return
        target = rollouts.new_rs_target(ctx.d, [new_rs, *old], new_rs)
        if target != rollouts.replicas(new_rs):
            await self._scale(ctx, new_rs, target)
            await self._rollout_status(ctx, new_rs)
            return
        plan = rollouts.old_rs_targets(ctx.d, new_rs, old)
        for rs in old:
            if rs["metadata"]["name"] in plan:
                await self._scale(ctx, rs, plan[rs["metadata"]["name"]])
        if not plan and progress.complete(ctx.d, ctx.d.get("status") or {}):
            await self._cleanup(ctx, old)
        await self._rollout_status(ctx, new_rs)

    async def _recreate(self, ctx: _Rollout, pods: list[Obj]) -> None:
        new_rs, old = await self._new_and_old(ctx, create=False)
        scaled_down = rollouts.active(list(old))
        for rs in scaled_down:
            await self._scale(ctx, rs, 0)
        new_rs, old = ctx.split(new_rs)
        if scaled_down or old_pods_running(new_rs, old, pods):
            await self._rollout_status(ctx, new_rs)
            return
        if new_rs is None:
            new_rs, old = await self._new_and_old(ctx, create=True)
            if new_rs is None:
                return
        if rollouts.replicas(new_rs) != rollouts.replicas(ctx.d):
            await self._scale(ctx, new_rs, rollouts.replicas(ctx.d))
        if progress.complete(ctx.d, ctx.d.get("status") or {}):
            await self._cleanup(ctx, old)
        await self._rollout_status(ctx, new_rs)

    async def _scale_only(self, ctx: _Rollout) -> None:
        new_rs, old = await self._new_and_old(ctx, create=False)
        for name, size in rollouts.proportional_targets(ctx.d, new_rs, old).items():
            rs = next(r for r in ctx.rss if r["metadata"]["name"] == name)
            await self._scale(ctx, rs, size, annotate=True)
        new_rs, old = ctx.split(new_rs)
        if (ctx.d.get("spec") or {}).get("paused"):
            await self._cleanup(ctx, old)
            new_rs, old = ctx.split(new_rs)
        await self._write_status(ctx, progress.calculate_status(ctx.d, self._all(new_rs, old), new_rs, ctx.now))

    # -- steps -------------------------------------------------------------------------------------------

    async def _claim(self, d: Obj, rss: list[Obj]) -> list[Obj] | None:
        """The ReplicaSets ``d`` owns after adopting and releasing; ``None`` when an adoption failed."""
        rs_rt = self.kind("apps", "v1", "replicasets")
        claims = ownership.claim(d, (d.get("spec") or {}).get("selector"), rss)
        mine = list(claims.owned)
        for rs in claims.adopt:
            adopted = await self.guard("adopt", self.rest.update(
                rs_rt, rs["metadata"]["namespace"], rs["metadata"]["name"],
                ownership.with_owner(rs, ownership.owner_reference(d)), self.opts))
            if adopted is None:
                return None
            mine.append(adopted)
        for rs in claims.release:
            await self.guard("release", self.rest.update(
                rs_rt, rs["metadata"]["namespace"], rs["metadata"]["name"],
                ownership.without_owners(rs, [ownership.uid(d)]), self.opts))
        return mine

    async def _new_and_old(self, ctx: _Rollout, *, create: bool) -> tuple[Obj | None, list[Obj]]:
        """``getAllReplicaSetsAndSyncRevision``: the new ReplicaSet (created when asked) and the old ones."""
        rs_rt = self.kind("apps", "v1", "replicasets")
        d = ctx.d
        new_rs = rollouts.find_new(d, ctx.rss)
        new_rs, old = ctx.split(new_rs)
        next_revision = max((rollouts.revision(rs) for rs in old), default=0) + 1
        if new_rs is not None:
            annotations = rollouts.new_rs_annotations(d, new_rs, next_revision, exists=True)
            min_ready = int((d.get("spec") or {}).get("minReadySeconds") or 0)
            if (annotations != (new_rs["metadata"].get("annotations") or {})
                    or int(new_rs["spec"].get("minReadySeconds") or 0) != min_ready):
                updated = copy.deepcopy(new_rs)
                updated["metadata"]["annotations"] = annotations
                updated["spec"]["minReadySeconds"] = min_ready
                new_rs = ctx.replace(await self.rest.update(rs_rt, ctx.namespace, updated["metadata"]["name"],
                                                            updated, self.opts))
            await self._set_revision(ctx, str(rollouts.revision(new_rs)))
            status = copy.deepcopy(ctx.d.get("status") or {})
            if progress.has_deadline(d) and progress.get_condition(status, "Progressing") is None:
                progress.set_condition(status, "Progressing", "True", "FoundNewReplicaSet",
                                       f'Found new replica set "{new_rs["metadata"]["name"]}"', ctx.now)
                await self._write_status(ctx, status)
            return new_rs, old
        if not create:
            return None, old
        collisions = (d.get("status") or {}).get("collisionCount")
        pod_hash = rollouts.template_hash((d.get("spec") or {}).get("template") or {}, collisions)
        size = rollouts.new_rs_replicas(d, old, None)
        wanted = rollouts.new_replica_set(d, pod_hash, next_revision, size)
        try:
            created = await self.rest.create(rs_rt, ctx.namespace, wanted, self.opts)
        except AlreadyExists:
            found = self.rest.store.get(self.rest.key(rs_rt, ctx.namespace, wanted["metadata"]["name"]))
            if found is None or not (ownership.is_controlled_by(found[1], d) and rollouts.equal_ignoring_hash(
                    found[1]["spec"]["template"], d["spec"]["template"])):
                # Someone else's ReplicaSet has our name: change the hash and try again.
                status = copy.deepcopy(ctx.d.get("status") or {})
                status["collisionCount"] = int(collisions or 0) + 1
                await self._write_status(ctx, status)
            self.requeue_after(0.05)
            return None, old
        ctx.rss.append(created)
        if size > 0:
            await record_event(self.rest, ctx.d, type="Normal", reason="ScalingReplicaSet",
                               message=f"Scaled up replica set {created['metadata']['name']} from 0 to {size}",
                               component=COMPONENT)
        await self._set_revision(ctx, str(next_revision))
        if progress.has_deadline(d):
            status = copy.deepcopy(ctx.d.get("status") or {})
            progress.set_condition(status, "Progressing", "True", "NewReplicaSetCreated",
                                   f'Created new replica set "{created["metadata"]["name"]}"', ctx.now)
            await self._write_status(ctx, status)
        return created, old

    async def _scale(self, ctx: _Rollout, rs: Obj, size: int, *, annotate: bool = False) -> None:
        before = rollouts.replicas(rs)
        wanted = rollouts.replica_annotations(ctx.d)
        annotations = rs["metadata"].get("annotations") or {}
        stale = any(annotations.get(k) != v for k, v in wanted.items())
        if before == size and not (annotate and stale):
            return
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = size
        updated["metadata"]["annotations"] = {**annotations, **wanted}
        ctx.replace(await self.rest.update(self.kind("apps", "v1", "replicasets"), ctx.namespace,
                                           rs["metadata"]["name"], updated, self.opts))
        if before != size:
            message = (f"Scaled {'up' if size > before else 'down'} replica set {rs['metadata']['name']} "
                       f"from {before} to {size}")
            await record_event(self.rest, ctx.d, type="Normal", reason="ScalingReplicaSet", message=message,
                               component=COMPONENT)

    async def _cleanup(self, ctx: _Rollout, old: list[Obj]) -> None:
        rs_rt = self.kind("apps", "v1", "replicasets")
        for rs in rollouts.cleanup_candidates(ctx.d, [r for r in map(ctx.current, old) if r is not None]):
            deleted = await self.guard("cleanup", self.rest.delete(
                rs_rt, ctx.namespace, rs["metadata"]["name"], {"preconditions": {"uid": ownership.uid(rs)}},
                self.opts))
            if deleted is not None:
                ctx.rss = [r for r in ctx.rss if ownership.uid(r) != ownership.uid(rs)]

    async def _set_revision(self, ctx: _Rollout, value: str) -> None:
        annotations = ctx.d["metadata"].get("annotations") or {}
        if annotations.get(rollouts.REVISION) == value:
            return
        updated = copy.deepcopy(ctx.d)
        updated["metadata"]["annotations"] = {**annotations, rollouts.REVISION: value}
        ctx.d = await self.rest.update(self.kind("apps", "v1", "deployments"), ctx.namespace, ctx.name, updated,
                                       self.opts)

    async def _rollout_status(self, ctx: _Rollout, new_rs: Obj | None) -> None:
        new_rs, old = ctx.split(new_rs)
        status = progress.rollout_status(ctx.d, self._all(new_rs, old), new_rs, ctx.now)
        await self._write_status(ctx, status)
        deadline = progress.deadline_at(ctx.d, status)
        if deadline is not None:
            self.requeue_after((deadline - ctx.now).total_seconds() + 0.5)

    async def _write_status(self, ctx: _Rollout, status: Obj) -> None:
        if status == (ctx.d.get("status") or {}):
            return
        updated = copy.deepcopy(ctx.d)
        updated["status"] = status
        ctx.d = await self.rest.update(self.kind("apps", "v1", "deployments"), ctx.namespace, ctx.name, updated,
                                       self.opts, subresource="status")

    @staticmethod
    def _all(new_rs: Obj | None, old: list[Obj]) -> list[Obj]:
        return [*([new_rs] if new_rs is not None else []), *old]
