"""The notebooks' facade: plain synchronous calls that a lesson can make in one line.

``lab = meshlab.lab.up()`` starts (or finds) the embedded lab and returns a :class:`Lab`;
``meshlab.lab.connect(kubeconfig)`` returns the same kind of handle on any cluster named by a kubeconfig.
Everything a :class:`Lab` does goes through the official ``kubernetes`` client or the real ``kubectl``, so a
lesson behaves the same on the embedded lab and on a real cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import dynamic
from kubernetes.client.rest import ApiException

from meshlab import kube
from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir
from meshlab.errors import LabError

FIELD_MANAGER = "meshlab"


class Lab:
    """A handle on one cluster: typed clients, ``kubectl``, and ``apply``."""

    def __init__(self, kubeconfig: Path, *, embedded: LabDir | None = None) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.embedded = embedded
        self.clients = kube.clients(self.kubeconfig)
        self._dynamic: dynamic.DynamicClient | None = None

    def __repr__(self) -> str:
        if self.embedded is not None:
            return f"Lab(embedded, name={self.embedded.name!r})"
        return f"Lab(kubeconfig={str(self.kubeconfig)!r})"

    @property
    def core(self) -> Any:
        return self.clients.core

    @property
    def apps(self) -> Any:
        return self.clients.apps

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """Run the real kubectl against this cluster; returns its output or raises with its error."""
        exe = shutil.which("kubectl")
        if exe is None:
            raise LabError("kubectl is not installed: install it, or use the lab's Python calls instead")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if self.embedded is not None:
            env["KUBECACHEDIR"] = str(self.embedded.kube_cache)
        proc = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, manifest: str | dict[str, Any] | Iterable[dict[str, Any]], *,
              namespace: str = "default") -> list[dict[str, Any]]:
        """Server-side apply every object in ``manifest`` (YAML text, one object, or several)."""
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(self.clients.api_client)
        if isinstance(manifest, str):
            docs = [d for d in yaml.safe_load_all(manifest) if d]
        elif isinstance(manifest, dict):
            docs = [manifest]
        else:
            docs = list(manifest)
        applied = []
        for doc in docs:
            try:
                resource = self._dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            except (KeyError, TypeError) as err:
                raise LabError(f"not a Kubernetes object (apiVersion and kind are required): {doc!r:.80}") from err
            except dynamic.exceptions.ResourceNotFoundError as err:
                raise LabError(f"the cluster does not serve {doc['kind']} in {doc['apiVersion']}") from err
            ns = (doc.get("metadata") or {}).get("namespace") or namespace
            try:
                result = resource.server_side_apply(
                    body=doc, name=doc["metadata"]["name"], namespace=ns if resource.namespaced else None,
                    field_manager=FIELD_MANAGER, force_conflicts=True)
            except ApiException as err:
                raise LabError(f"applying {doc['kind']} {doc.get('metadata', {}).get('name')!r} failed: "
                               f"{_status_message(err)}") from err
            applied.append(result.to_dict())
        return applied

    def close(self) -> None:
        self.clients.close()


def _status_message(err: ApiException) -> str:
    import json

    try:
        return str(json.loads(err.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{err.status} {err.reason}"


def up(name: str = "default") -> Lab:
    """Start the embedded lab ``name`` (or find it running) and connect to it."""
    labdir = LabDir.named(name)
    supervisor.up(labdir)
    return Lab(labdir.kubeconfig, embedded=labdir)


def connect(kubeconfig: str | Path | None = None) -> Lab:
    """A handle on a real cluster (``kubeconfig``) or, with no argument, on the running embedded lab."""
    if kubeconfig is not None:
        return Lab(Path(kubeconfig).expanduser())
    labdir = LabDir.named("default")
    if supervisor.running(labdir) is None:
        raise LabError("the embedded lab is not running: start it with meshlab.lab.up() or `meshlab cluster up`")
    return Lab(labdir.kubeconfig, embedded=labdir)


def down(name: str = "default") -> bool:
    """Stop the embedded lab ``name``; False when it was not running."""
    return supervisor.down(LabDir.named(name))
