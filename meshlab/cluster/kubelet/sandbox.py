"""A pod's sandbox: its address, its directory, its volumes, and how each of its containers is launched.

What a container runtime's "pod sandbox" provides, done with plain processes: every container of the pod
shares the pod's loopback address (``status.podIP``), a second, unreported one standing in for the pod's
private ``127.0.0.1`` (``MESHLAB_POD_LOCALHOST``; a ``hostNetwork`` pod has the node's), and directory
(``<state>/pods/<uid>``, the working directory and ``HOME`` unless ``workingDir`` names an existing
directory); volumes are set up once per pod
by the volume manager and mounted at their ``mountPath`` by :mod:`~meshlab.cluster.kubelet.launch` where
the OS allows it. A container's command runs in meshlab's own Python environment (``PATH`` starts at its
``bin``), with the environment Kubernetes defines (:mod:`~meshlab.cluster.kubelet.environment`) over the
image's (``PATH``, ``HOME``, ``HOSTNAME``, ``LANG``) and the node's proxy settings. A pod without volumes
never touches the volume machinery.
"""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlab.cluster.kube_proxy import pod_proxy_url
from meshlab.cluster.kubelet import environment, images
from meshlab.cluster.kubelet.lifecycle import BackOffPolicy
from meshlab.cluster.kubelet.podnet import PodAddresses
from meshlab.cluster.kubelet.reaping import Guard
from meshlab.cluster.rest import RestStorage, WriteOptions

log = logging.getLogger("meshlab.kubelet")

Obj = dict[str, Any]

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def environment_bin() -> str:
    """The ``bin`` directory of the Python environment meshlab runs in (a venv's, usually)."""
    return sysconfig.get_path("scripts")


@dataclass
class NodeContext:
    """What every pod worker of one kubelet shares."""

    rest: RestStorage
    opts: WriteOptions
    node_name: str
    state_dir: Path
    apiserver: tuple[str, int]
    proxy_url: str | None
    allocatable: dict[str, str]
    addresses: PodAddresses
    guard: Guard
    policy: BackOffPolicy
    volumes: Any | None = None  # a volumes.VolumeManager once that module is installed
    isolation: Callable[[], Awaitable[tuple[Any, str]]] | None = None  # isolation.detect, run once
    host_ip: str = "127.0.0.1"
    watched_logs: dict[Path, Any] = field(default_factory=dict)  # log path -> LogWriter still writing

    def pod_dir(self, uid: str) -> Path:
        return self.state_dir / "pods" / uid

    def pod_log_dir(self, pod: Obj) -> Path:
        meta = pod.get("metadata") or {}
        return self.state_dir / "logs" / "pods" / f"{meta.get('namespace')}_{meta.get('name')}_{meta.get('uid')}"

    def lookup(self, kind: str, namespace: str, name: str) -> Obj | None:
        found = self.rest.store.get((f"/{kind}", namespace, name))
        return found[1] if found else None

    def services(self, namespace: str) -> list[Obj]:
        found = [obj for obj, _ in self.rest.store.scan("/services", namespace)]
        master = self.lookup("services", "default", "kubernetes")
        return [*found, master] if master is not None and namespace != "default" else found


class LaunchFailure(Exception):
    """The container cannot be started as specified; ``reason`` is its waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str


class Sandbox:
    def __init__(self, ctx: NodeContext, pod: Obj) -> None:
        self.ctx = ctx
        self.uid = str(pod["metadata"]["uid"])
        self.directory = ctx.pod_dir(self.uid)
        self.pod_ip = ""
        self.pod_localhost = ""
        self.ready = False
        self.volume_paths: dict[str, Path] = {}
        self.mode: Any = None
        self.isolation_note = ""
        self._launched: dict[str, tuple[dict[str, str], str, list[Any]]] = {}

    async def prepare(self, pod: Obj) -> None:
        """Address, directory and volumes (raises the volume manager's ``VolumeError``).

        The volume manager decides which volumes a pod has: its ``spec.volumes`` plus, as the
        ServiceAccount admission plugin would add, the service-account token volume."""
        spec = pod.get("spec") or {}
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.ctx.volumes is not None:
            self.volume_paths = await self.ctx.volumes.setup(pod, self.directory)
            if self.volume_paths and self.ctx.isolation is not None:
                self.mode, self.isolation_note = await self.ctx.isolation()
        # the sandbox (and with it the pod's address) comes after the volumes, as with a real runtime
        if spec.get("hostNetwork"):
            self.pod_ip, self.pod_localhost = self.ctx.host_ip, "127.0.0.1"  # the node's loopback is theirs
        else:
            self.pod_ip = self.ctx.addresses.allocate(self.uid)
            self.pod_localhost = self.ctx.addresses.allocate_localhost(self.uid)
        self.ready = True

    async def refresh(self, pod: Obj) -> None:
        if self.volume_paths and self.ctx.volumes is not None:
            await self.ctx.volumes.refresh(pod, self.directory)

    def isolation_weak(self) -> bool:
        return bool(self.volume_paths) and getattr(self.mode, "name", "") == "NONE"

    def pod_variables(self) -> dict[str, str]:
        """The lab's stand-in for a pod network namespace: meshlab's programs listen on the pod IP and talk
        to their pod's other containers on the pod-localhost (``meshlab/podnet.py``)."""
        return {"MESHLAB_POD_IP": str(self.pod_ip), "MESHLAB_POD_LOCALHOST": str(self.pod_localhost)}

    def base_environment(self, pod: Obj) -> dict[str, str]:
        spec = pod.get("spec") or {}
        env = {"PATH": f"{environment_bin()}:{_SYSTEM_PATH}", "HOME": str(self.directory),
               "HOSTNAME": str(spec.get("hostname") or pod["metadata"]["name"]), "LANG": "C.UTF-8",
               **self.pod_variables()}
        if self.ctx.proxy_url:
            # the pod-localhost is reached directly, as a real pod's 127.0.0.1 would be
            bypass = ",".join(dict.fromkeys([self.pod_ip, "127.0.0.1", "localhost", self.pod_localhost,
                                             self.ctx.apiserver[0]]))
            meta = pod.get("metadata") or {}
            proxy = pod_proxy_url(self.ctx.proxy_url, str(meta.get("namespace") or "default"), str(meta.get("name")))
            env.update({"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": bypass, "no_proxy": bypass})
        return env

    def launch(self, pod: Obj, container: Obj) -> Launch:
        """How to start ``container`` now (raises :class:`LaunchFailure`)."""
        try:
            return self._launch(pod, container)
        except environment.ConfigError as err:
            raise LaunchFailure("CreateContainerConfigError", str(err)) from err
        except images.ImageError as err:
            raise LaunchFailure("ErrImagePull", str(err)) from err
        except Exception as err:
            if hasattr(err, "reason") and hasattr(err, "message"):  # the volume manager's VolumeError
                raise LaunchFailure(str(err.reason), str(err.message)) from err
            raise

    def _launch(self, pod: Obj, container: Obj) -> Launch:
        image = images.parse(str(container.get("image", "")))
        namespace = pod["metadata"].get("namespace", "default")
        sources = environment.Sources(
            configmap=lambda name: self.ctx.lookup("configmaps", namespace, name),
            secret=lambda name: self.ctx.lookup("secrets", namespace, name),
            services=self.ctx.services(namespace),
        )
        defined = environment.container_environment(
            pod, container, sources=sources, pod_ip=self.pod_ip, host_ip=self.ctx.host_ip,
            apiserver=self.ctx.apiserver, allocatable=self.ctx.allocatable, pod_variables=self.pod_variables())
        env = {**self.base_environment(pod), **defined}
        # as in Kubernetes, command and args see the defined variables only, not the image's (PATH, HOME...)
        argv = environment.expand_command(images.command_line(container, image), defined)
        workdir = container.get("workingDir") or ""
        mounts: list[Any] = []
        if self.volume_paths and self.ctx.volumes is not None:
            mounts = list(self.ctx.volumes.mounts_for(pod, container, self.volume_paths))
        self._launched[container["name"]] = (env, workdir, mounts)
        return self._wrap(argv, env, workdir, mounts)

    def exec_launch(self, container: str, command: list[str]) -> Launch | None:
        """How to run ``command`` inside a started container (same env, cwd, mounts), or None."""
        found = self._launched.get(container)
        if found is None:
            return None
        env, workdir, mounts = found
        return self._wrap(list(command), env, workdir, mounts)

    def _wrap(self, argv: list[str], env: dict[str, str], workdir: str, mounts: list[Any]) -> Launch:
        if not mounts:
            cwd = workdir if workdir and os.path.isdir(workdir) else str(self.directory)
            return Launch(argv, env, cwd)
        from meshlab.cluster.kubelet import launch  # only pods with volumes get here

        wrapped = launch.wrap(argv, mounts=mounts, workdir=workdir or None, mode=self.mode)
        extra = launch.fallback_env(mounts) if getattr(self.mode, "name", "") == "NONE" else {}
        return Launch(list(wrapped), {**env, **extra}, str(self.directory))

    async def teardown(self, pod: Obj | None, *, remove: bool) -> None:
        """Unmount volumes; with ``remove`` (the pod is gone) free its address and delete its files."""
        if self.ctx.volumes is not None and self.directory.exists():
            # Always ask the volume manager, even when this worker set nothing up (e.g. after a kubelet
            # restart): its record on disk knows what is mounted. If it cannot unmount, the pod's files
            # stay — deleting them could delete data on a still-mounted volume.
            try:
                await self.ctx.volumes.teardown(pod or {"metadata": {"uid": self.uid}}, self.directory)
            except Exception as err:
                log.warning("pod %s: volumes not torn down (%s); keeping %s", self.uid, err, self.directory)
                return
            self.volume_paths = {}
        if remove:
            self.ctx.addresses.release(self.uid)
            shutil.rmtree(self.directory, ignore_errors=True)
            if pod is not None:
                shutil.rmtree(self.ctx.pod_log_dir(pod), ignore_errors=True)
