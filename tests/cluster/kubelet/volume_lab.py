"""A lab's RestStorage and a VolumeManager for volume tests: objects through the real API machinery."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import stat
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.kubelet.volume_plugins import VolumeError
from meshlab.cluster.kubelet.volumes import VolumeManager
from meshlab.cluster.pki import TokenSigner, ensure_pki
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.cluster.store import Store

T = TypeVar("T")
_names = itertools.count()


@dataclass
class Api:
    rest: RestStorage
    signer: TokenSigner
    lab_dir: Path


def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """For a module-scoped fixture: one store and RestStorage in a temporary lab directory."""
    lab_dir = tmp_path_factory.mktemp("lab")
    store = Store(lab_dir / "state.db")
    server = ApiServer(store, pki=ensure_pki(lab_dir / "pki"))
    yield Api(server.rest, server.signer, lab_dir)
    store.close()


@dataclass
class Env:
    api: Api
    namespace: str
    pod_dir: Path
    manager: VolumeManager

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        rt = self.api.rest.registry.lookup("", "v1", plural)
        assert rt is not None
        return self.run(self.api.rest.create(rt, self.namespace if rt.namespaced else "", obj, WriteOptions()))

    def update(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        rt = self.api.rest.registry.lookup("", "v1", plural)
        assert rt is not None
        obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
        return self.run(self.api.rest.update(rt, self.namespace, obj["metadata"]["name"], obj, WriteOptions()))

    def pod(self, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None,
            **spec: Any) -> dict[str, Any]:
        if mounts is None:
            mounts = [{"name": v["name"], "mountPath": f"/mnt/{v['name']}"} for v in volumes]
        container = {"name": "app", "image": "meshlab/echo:1", "volumeMounts": mounts, **spec.pop("container", {})}
        return self.create("pods", {"metadata": {"name": f"pod{next(_names)}", "labels": {"app": "demo"}},
                                    "spec": {"containers": [container], "volumes": volumes, **spec}})

    def setup(self, pod: dict[str, Any]) -> dict[str, Path]:
        return self.run(self.manager.setup(pod, self.pod_dir))

    def failure(self, pod: dict[str, Any]) -> VolumeError:
        with pytest.raises(VolumeError) as info:
            self.setup(pod)
        return info.value

    def events(self) -> list[dict[str, Any]]:
        rt = self.api.rest.registry.lookup("", "v1", "events")
        assert rt is not None
        return [e for e, _ in self.api.rest.select(rt, self.namespace)]


def new_env(api: Api) -> Env:
    """A fresh namespace with its ``default`` ServiceAccount, and a fresh VolumeManager."""
    namespace = f"vol{next(_names)}"
    e = Env(api, namespace, api.lab_dir / "pods" / namespace, VolumeManager(api.rest, api.signer, lab_dir=api.lab_dir))
    e.create("namespaces", {"metadata": {"name": namespace}})
    e.create("serviceaccounts", {"metadata": {"name": "default"}})
    return e


def no_token(**spec: Any) -> dict[str, Any]:
    return {"automountServiceAccountToken": False, **spec}


CONFIG = {"metadata": {"name": "settings"}, "data": {"a.conf": "alpha", "b.conf": "beta"},
          "binaryData": {"blob": base64.b64encode(b"\x00\x01").decode()}}
SECRET = {"metadata": {"name": "creds"}, "data": {"user": base64.b64encode(b"admin").decode(),
                                                  "pass": base64.b64encode(b"s3cret").decode()}}


def user_files(root: Path) -> dict[str, tuple[bytes, int]]:
    """What a container sees: every file reachable through the visible names (symlinks followed)."""
    seen = {}
    for dirpath, _, files in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)
        if any(part.startswith("..") for part in rel_dir.parts):
            continue
        for name in files:
            if name.startswith(".."):
                continue
            full = Path(dirpath, name)
            seen[(rel_dir / name).as_posix()] = (full.read_bytes(), stat.S_IMODE(full.stat().st_mode))
    return seen
