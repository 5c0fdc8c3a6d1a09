"""The process kubelet: one node of the embedded lab, running each container as a local process.

It registers its Node and keeps its Lease (:mod:`~.node`), watches the pods bound to it (``spec.nodeName``)
and gives each one a worker (:mod:`~.worker`) that reconciles the pod's spec with its processes. It is
also the apiserver's :class:`~meshlab.cluster.podio.PodIO`: ``kubectl logs`` reads the container log files,
``kubectl exec`` runs a command in the container's environment. On start it first kills any container a
previous run left behind (:mod:`~.reaping`), then brings every pod still in the store back up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from meshlab.cluster.kubelet import isolation, volumes
from meshlab.cluster.kubelet import logs as logfiles
from meshlab.cluster.kubelet.lifecycle import BackOffPolicy
from meshlab.cluster.kubelet.node import NodeAgent
from meshlab.cluster.kubelet.pluginwatcher import PluginWatcher
from meshlab.cluster.kubelet.podnet import PodAddresses
from meshlab.cluster.kubelet.reaping import Guard
from meshlab.cluster.kubelet.sandbox import NodeContext
from meshlab.cluster.kubelet.volume_plugins.csi import CsiPlugin
from meshlab.cluster.kubelet.volume_plugins.flexvolume import FlexVolumePlugin
from meshlab.cluster.kubelet.volume_plugins.nfs import NfsPlugin
from meshlab.cluster.kubelet.volume_plugins.pvc import PersistentVolumeClaimPlugin
from meshlab.cluster.kubelet.worker import PodWorker
from meshlab.cluster.pki import TokenSigner
from meshlab.cluster.podio import ExecProcess, LocalProcess, LogOptions
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.cluster.store import Watcher
from meshlab.errors import ApiError, BadRequest, MountError
from meshlab.mounting.mount import mounts_under, unmount_all

log = logging.getLogger("meshlab.kubelet")

Obj = dict[str, Any]


def _volume_support(rest: RestStorage, signer: TokenSigner, state_dir: Path, ca_pem: bytes) -> tuple[Any, Any]:
    """The volume manager and the (shared, run-once) isolation probe."""
    manager = volumes.VolumeManager(rest, signer, lab_dir=state_dir, ca_pem=ca_pem)
    detected: list[asyncio.Future[tuple[Any, str]]] = []

    async def detect() -> tuple[Any, str]:
        # Detection runs a test container once (it may take a moment): off the event loop, shared.
        if not detected:
            detected.append(asyncio.ensure_future(asyncio.to_thread(isolation.detect)))
        return await detected[0]

    return manager, detect


def isolation_report() -> str:
    """One line on how volumes are isolated on this machine (for ``meshlab cluster status``)."""
    mode, text = isolation.detect()
    return f"{mode.name}: {text}"


def remove_pod_files(directory: Path) -> bool:
    """Delete a pod's directory, first unmounting what its volumes left mounted in it (an NFS volume of a pod
    deleted while the kubelet was down). Never through a mount: ``rmtree`` would delete the files on the NFS
    server. Returns whether the directory is gone; a mount that will not go keeps it (logged)."""
    try:
        unmount_all(directory)
    except MountError as err:
        log.error("kubelet: %s is kept: unmounting what is mounted in it failed: %s", directory, err)
        return False
    if left := mounts_under(directory):
        log.error("kubelet: %s is kept: still mounted there: %s", directory, ", ".join(map(str, left)))
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()


class Kubelet:
    """The lab's node agent (a supervisor part: ``start()`` / ``await stop()``) and its PodIO.

    ``state_dir`` is the lab's directory: pods live in ``pods/<uid>``, logs in ``logs/pods/...``, the
    kubelet's own records in ``kubelet/``. ``apiserver_url`` is what pods reach as the ``kubernetes``
    Service; ``proxy_url`` (the node's kube-proxy) becomes their ``HTTP_PROXY``. ``backoff`` shortens the
    crash-loop back-off (tests); ``stop()`` gives each container ``stop_grace`` seconds after SIGTERM.
    """

    def __init__(self, rest: RestStorage, *, state_dir: Path, signer: TokenSigner, apiserver_url: str,
                 ca_pem: bytes, node_name: str = "lab-node", proxy_url: str | None = None,
                 backoff: BackOffPolicy | None = None, stop_grace: float = 2.0) -> None:
        self.rest = rest
        self.node_name = node_name
        self.state_dir = Path(state_dir)
        self.ca_pem = ca_pem
        self.stop_grace = stop_grace
        url = urlsplit(apiserver_url)
        opts = WriteOptions(user={"username": f"system:node:{node_name}", "groups": ["system:nodes"]},
                            field_manager="kubelet")
        kubelet_dir = self.state_dir / "kubelet"
        self.node = NodeAgent(rest, node_name, self.state_dir, opts)
        volume_manager, detect = _volume_support(rest, signer, self.state_dir, ca_pem)
        # CSI node plugins register through sockets in <root>/plugins_registry (the lab's kubelet root is the
        # lab directory: /var/lib/kubelet/... hostPaths map there).
        self.csi = CsiPlugin(rest, node_name=node_name, root_dir=self.state_dir, opts=opts)
        # FlexVolume drivers are found in <root>/volumeplugins/<vendor~driver>/<driver>, as the real kubelet's
        # --volume-plugin-dir (a DaemonSet's /var/lib/kubelet/volumeplugins hostPath lands there).
        for plugin in (self.csi, NfsPlugin(), FlexVolumePlugin(self.state_dir / "volumeplugins"),
                       PersistentVolumeClaimPlugin()):
            volume_manager.register(plugin)
        self.plugin_watcher = PluginWatcher(self.state_dir / "plugins_registry", {"CSIPlugin": self.csi})
        self.ctx = NodeContext(
            rest=rest, opts=opts, node_name=node_name, state_dir=self.state_dir,
            apiserver=(url.hostname or "127.0.0.1", url.port or 443), proxy_url=proxy_url,
            allocatable=self.node.allocatable, addresses=PodAddresses(kubelet_dir / "pod-addresses.json"),
            guard=Guard(kubelet_dir / "processes"), policy=backoff or BackOffPolicy(), volumes=volume_manager,
            isolation=detect,
        )
        self.workers: dict[str, PodWorker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: Watcher | None = None
        self._dependencies: list[Watcher] = []
        self.ready = asyncio.Event()  # the node is registered and the pods of the store are handed out

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        octet = self.ctx.addresses.claim()
        log.info("pod network of %s: 127.%d.0.0/16", self.node_name, octet)
        self.ctx.guard.start()
        store = self.rest.store
        self._watcher, _ = store.watch("/pods", "", store.resource_version)
        # What a waiting pod may wait for: retried as soon as it appears or changes.
        for kind in ("/configmaps", "/secrets", "/serviceaccounts"):
            watcher, _ = store.watch(kind, "", store.resource_version)
            self._dependencies.append(watcher)
            self._tasks.append(asyncio.create_task(self._watch_dependency(watcher), name=f"kubelet-{kind[1:]}"))
        self._tasks.append(asyncio.create_task(self._run(), name="kubelet"))
        if self.ctx.isolation is not None:
            self._tasks.append(asyncio.create_task(self._warm_isolation(), name="kubelet-isolation"))

    async def _warm_isolation(self) -> None:
        assert self.ctx.isolation is not None
        mode, text = await self.ctx.isolation()
        log.info("volume isolation: %s (%s)", getattr(mode, "name", mode), text)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.node.register()
                break
            except Exception:  # an apiserver that refuses the Node would leave the lab without a node
                log.exception("registering node %s failed; retrying in %.1fs", self.node_name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._tasks.append(asyncio.create_task(self.node.run(), name="kubelet-heartbeat"))
        self.plugin_watcher.start()  # plugins are recorded in the Node's CSINode: the Node must exist first
        mine = [pod for pod, _ in self.rest.store.scan("/pods") if self._bound_here(pod)]
        self._collect_garbage({str(p["metadata"]["uid"]) for p in mine})
        for pod in mine:
            self._route(pod, deleted=False)
        self.ready.set()
        assert self._watcher is not None
        while True:
            change = await self._watcher.queue.get()
            if change is None:
                return
            pod = change.prev if change.type == "DELETED" and change.prev is not None else change.obj
            try:
                if self._bound_here(pod) or str(pod["metadata"].get("uid")) in self.workers:
                    self._route(pod, deleted=change.type == "DELETED")
            except Exception:
                log.exception("kubelet: handling pod %s/%s failed", change.namespace, change.name)

    async def _watch_dependency(self, watcher: Watcher) -> None:
        while (change := await watcher.queue.get()) is not None:
            for worker in list(self.workers.values()):
                if worker.last_pod["metadata"].get("namespace") == change.namespace:
                    worker.poke()

    def _bound_here(self, pod: Obj) -> bool:
        return (pod.get("spec") or {}).get("nodeName") == self.node_name

    def _collect_garbage(self, uids: set[str]) -> None:
        """Files and addresses of pods that are gone (deleted while the kubelet was down)."""
        self.ctx.addresses.retain_only(uids)
        for directory in (self.state_dir / "pods").glob("*"):
            if directory.name not in uids:
                remove_pod_files(directory)
        for directory in (self.state_dir / "logs" / "pods").glob("*"):
            if directory.name.rsplit("_", 1)[-1] not in uids:
                shutil.rmtree(directory, ignore_errors=True)

    def _route(self, pod: Obj, *, deleted: bool) -> None:
        uid = str(pod["metadata"].get("uid"))
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(None if deleted or not self._bound_here(pod) else pod)
            return
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if deleted:
            remove_pod_files(self.ctx.pod_dir(uid))
            shutil.rmtree(self.ctx.pod_log_dir(pod), ignore_errors=True)
            self.ctx.addresses.release(uid)
            return
        if terminal and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            return  # finished for good: nothing to run
        worker = PodWorker(self.ctx, pod)
        self.workers[uid] = worker
        worker.start()
        assert worker.task is not None
        worker.task.add_done_callback(lambda _: self._forget(uid, worker))

    def _forget(self, uid: str, worker: PodWorker) -> None:
        if self.workers.get(uid) is worker:
            del self.workers[uid]

    async def stop(self) -> None:
        """Stop every container (pods stay in the store) and the node's heartbeats."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watcher in [self._watcher, *self._dependencies]:
            if watcher is not None:
                self.rest.store.unwatch(watcher)
        await self.plugin_watcher.stop()
        # First, while there is time: mounts brought over from CSI drivers would outlive the drivers as dead
        # mount points on the host (running containers keep their own bind of the volume).
        await self.csi.close()
        workers = list(self.workers.values())
        await asyncio.gather(*(w.shutdown(self.stop_grace) for w in workers), return_exceptions=True)
        self.workers.clear()
        with contextlib.suppress(ApiError, Exception):
            await self.node.post_status(ready=False)
        self.ctx.guard.close()
        self.ctx.addresses.release_network()

    # -- PodIO ------------------------------------------------------------------------------------------------

    def logs(self, pod: Obj, options: LogOptions) -> AsyncIterator[bytes]:
        return self._logs(pod, options)

    async def _logs(self, pod: Obj, options: LogOptions) -> AsyncIterator[bytes]:
        name = pod["metadata"]["name"]
        files = logfiles.instance_logs(self.ctx.pod_log_dir(pod) / options.container)
        if options.previous:
            if len(files) < 2:
                raise BadRequest(f'previous terminated container "{options.container}" in pod "{name}" not found')
            path = files[-2]
        elif not files:
            raise BadRequest(_waiting_message(pod, options.container))
        else:
            path = files[-1]

        def still_writing() -> asyncio.Event | None:
            writer = self.ctx.watched_logs.get(path)
            return writer.changed if writer is not None else None

        async for chunk in logfiles.read(path, options, still_writing=still_writing):
            yield chunk

    async def exec(self, pod: Obj, container: str, command: Sequence[str], *, tty: bool,
                   stdin: bool) -> ExecProcess:
        worker = self.workers.get(str(pod["metadata"].get("uid")))
        if worker is None:
            raise BadRequest(f'container not found ("{container}")')
        try:
            proc = await worker.exec_process(container, list(command), stdin=stdin)
        except LookupError as err:
            raise BadRequest(str(err)) from err
        except FileNotFoundError as err:
            raise BadRequest(f'exec: "{command[0]}": executable file not found in $PATH') from err
        except PermissionError as err:
            raise BadRequest(f'exec: "{command[0]}": permission denied') from err
        return LocalProcess(proc)


def _waiting_message(pod: Obj, container: str) -> str:
    """Why there is no log yet, in the words of the kubelet's ``validateContainerLogStatus``."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
    reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
    if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"):
        return f'container "{container}" in pod "{name}" is waiting to start: trying and failing to pull image'
    return f'container "{container}" in pod "{name}" is waiting to start: {reason}'
