"""The notebooks' facade: plain synchronous calls that a lesson can make in one line.

``lab = meshlab.lab.up()`` starts (or finds) the embedded lab and returns a :class:`Lab`;
``meshlab.lab.connect(kubeconfig)`` returns the same kind of handle on any cluster named by a kubeconfig.
Everything a :class:`Lab` does goes through the official ``kubernetes`` client or the real ``kubectl``, so a
lesson behaves the same on the embedded lab and on a real cluster.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import dynamic
from kubernetes.client.rest import ApiException

from meshlab import kube
from meshlab.cluster import supervisor
from meshlab.cluster.kube_proxy import service_url
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
        """Server-side apply every object in ``manifest`` (YAML text, a path to a YAML file, one object, or
        several)."""
        applied = []
        for doc in self._documents(manifest):
            resource = self._resource(doc)
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

    def url(self, service: str, port: int, *, namespace: str = "default", path: str = "/") -> str:
        """A URL on this machine that reaches ``service:port`` through the lab's kube-proxy (load-balanced
        over the ready endpoints, as a ClusterIP would be), for a browser or ``urllib`` in a notebook."""
        if self.embedded is None:
            raise LabError("url() needs the embedded lab; on a real cluster use `kubectl port-forward "
                           f"-n {namespace} svc/{service} {port}` and http://127.0.0.1:{port}{path}")
        info = self.embedded.server_info() or {}
        if "proxy_port" not in info:
            raise LabError("the lab's kube-proxy is not running: restart the lab with meshlab.lab.up()")
        return service_url(int(info["proxy_port"]), service, port, namespace=namespace, path=path)

    def get(self, service: str, port: int, path: str = "/", *, namespace: str = "default",
            timeout: float = 10) -> str:
        """GET ``path`` from ``service:port`` (see :meth:`url`) and return the body as text."""
        url = self.url(service, port, namespace=namespace, path=path)
        try:
            # no proxy from the environment: the URL is on this machine
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=timeout) as resp:
                return str(resp.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as err:
            raise LabError(f"GET {service}:{port}{path} answered {err.code}: "
                           f"{err.read().decode(errors='replace').strip()}") from err
        except OSError as err:
            raise LabError(f"GET {service}:{port}{path} failed: {err}") from err

    def delete(self, what: str | dict[str, Any] | Iterable[dict[str, Any]], name: str | None = None, *,
               namespace: str = "default") -> list[str]:
        """Delete objects: ``delete("deployment", "web")``, or every object of a manifest (YAML or dicts).

        Returns ``kind/name`` of what was deleted; objects already gone are skipped, as ``kubectl delete
        --ignore-not-found`` does.
        """
        if isinstance(what, str) and name is not None:
            out = self.kubectl("delete", what, name, "-n", namespace, "--ignore-not-found", "-o", "name")
            return out.split()
        deleted = []
        for doc in self._documents(what):
            resource = self._resource(doc)
            meta = doc.get("metadata") or {}
            ns = meta.get("namespace") or namespace
            try:
                resource.delete(name=meta["name"], namespace=ns if resource.namespaced else None)
            except ApiException as err:
                if err.status == 404:
                    continue
                raise LabError(f"deleting {doc['kind']} {meta.get('name')!r} failed: {_status_message(err)}") from err
            deleted.append(f"{doc['kind'].lower()}/{meta['name']}")
        return deleted

    def wait_ready(self, kind: str, name: str, *, namespace: str = "default", timeout: float = 60) -> dict[str, Any]:
        """Wait until a Deployment (all replicas updated and available), DaemonSet, Pod (Ready) or other
        object (exists) is ready; returns it, or raises LabError saying what it was still waiting for."""
        kind = kind.lower().removesuffix("s")
        deadline = time.monotonic() + timeout
        why = "it does not exist yet"
        while True:
            obj = self._read(kind, name, namespace)
            if obj is not None:
                ready, why = _readiness(kind, obj)
                if ready:
                    return obj
            if time.monotonic() >= deadline:
                raise LabError(f"{kind} {namespace}/{name} was not ready after {timeout:.0f}s: {why}")
            time.sleep(0.2)

    def wait_gone(self, kind: str, name: str, *, namespace: str = "default", timeout: float = 60) -> None:
        """Wait until an object is gone (a namespace has finished terminating, ...); LabError if it stays."""
        kind = kind.lower().removesuffix("s")
        deadline = time.monotonic() + timeout
        while (obj := self._read(kind, name, namespace)) is not None:
            if time.monotonic() >= deadline:
                where = name if kind == "namespace" else f"{namespace}/{name}"
                phase = (obj.get("status") or {}).get("phase")
                raise LabError(f"{kind} {where} is still there after {timeout:.0f}s"
                               + (f" ({phase})" if phase else ""))
            time.sleep(0.2)

    def _read(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        readers: dict[str, Callable[[str, str], Any]] = {
            "namespace": lambda name, _: self.clients.core.read_namespace(name),
            "deployment": self.clients.apps.read_namespaced_deployment,
            "daemonset": self.clients.apps.read_namespaced_daemon_set,
            "replicaset": self.clients.apps.read_namespaced_replica_set,
            "pod": self.clients.core.read_namespaced_pod,
            "service": self.clients.core.read_namespaced_service,
        }
        try:
            if kind in readers:
                return dict(self.clients.api_client.sanitize_for_serialization(readers[kind](name, namespace)))
            out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        except ApiException as err:
            if err.status == 404:
                return None
            raise LabError(f"reading {kind} {namespace}/{name} failed: {_status_message(err)}") from err
        except LabError as err:
            if "NotFound" in str(err) or "not found" in str(err):
                return None
            raise
        return dict(json.loads(out))

    def _documents(self, manifest: str | dict[str, Any] | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(manifest, str):
            path = Path(manifest)
            if "\n" not in manifest and path.suffix in (".yaml", ".yml", ".json") and path.exists():
                manifest = path.read_text()
            return [d for d in yaml.safe_load_all(manifest) if d]
        if isinstance(manifest, dict):
            return [manifest]
        return list(manifest)

    def _resource(self, doc: dict[str, Any]) -> Any:
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(self.clients.api_client)
        try:
            return self._dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        except (KeyError, TypeError) as err:
            raise LabError(f"not a Kubernetes object (apiVersion and kind are required): {doc!r:.80}") from err
        except dynamic.exceptions.ResourceNotFoundError as err:
            raise LabError(f"the cluster does not serve {doc['kind']} in {doc['apiVersion']}") from err

    def close(self) -> None:
        self.clients.close()


def _readiness(kind: str, obj: dict[str, Any]) -> tuple[bool, str]:
    """Whether an object is ready, as ``kubectl rollout status`` / ``kubectl wait`` would judge it."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    if kind == "deployment":
        want = spec.get("replicas", 1)
        if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
            return False, "the controller has not observed the latest spec yet"
        for field, label in (("updatedReplicas", "updated"), ("availableReplicas", "available")):
            if (status.get(field) or 0) < want:
                return False, f"{status.get(field) or 0} of {want} replicas {label}"
        if (status.get("replicas") or 0) > want:
            return False, f"{status['replicas'] - want} old replicas are still terminating"
        return True, ""
    if kind == "daemonset":
        want = status.get("desiredNumberScheduled") or 0
        ready = status.get("numberReady") or 0
        return (want > 0 and ready >= want), f"{ready} of {want} pods ready"
    if kind == "pod":
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        if conditions.get("Ready") == "True":
            return True, ""
        waiting = [c.get("state", {}).get("waiting", {}).get("reason") for c in status.get("containerStatuses") or []]
        reasons = ", ".join(r for r in waiting if r)
        return False, f"phase {status.get('phase', 'Pending')}" + (f" ({reasons})" if reasons else "")
    if kind == "replicaset":
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas") or 0
        return ready >= want, f"{ready} of {want} replicas ready"
    return True, ""


def _status_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{err.status} {err.reason}"


def up(name: str = "default") -> Lab:
    """Start the embedded lab ``name`` (or find it running) and connect to it.

    A lab this process started is stopped when the process exits (a notebook kernel, a script), so nothing
    is left behind; a lab that was already running (started by ``meshlab lab``, ``meshlab cluster up`` or
    another notebook) is reused and left running. Under ``meshlab lab --kubeconfig PATH`` (which sets
    ``MESHLAB_KUBECONFIG``) the lessons use that cluster instead.
    """
    if os.environ.get("MESHLAB_KUBECONFIG"):
        return connect(os.environ["MESHLAB_KUBECONFIG"])
    labdir = LabDir.named(name)
    started_here = supervisor.running(labdir) is None
    supervisor.up(labdir)
    if started_here:
        atexit.register(supervisor.down, labdir)
    return Lab(labdir.kubeconfig, embedded=labdir)


def connect(kubeconfig: str | Path | None = None) -> Lab:
    """A handle on a real cluster (``kubeconfig``) or, with no argument, on the running embedded lab."""
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        # An embedded lab's own kubeconfig (``<state>/kubeconfig`` beside its pki/): the same handle as up()'s.
        if path.name == "kubeconfig" and (path.parent / "pki" / "ca.crt").exists():
            return Lab(path, embedded=LabDir(path.parent, path.parent.name))
        return Lab(path)
    labdir = LabDir.named("default")
    if supervisor.running(labdir) is None:
        raise LabError("the embedded lab is not running: start it with meshlab.lab.up() or `meshlab cluster up`")
    return Lab(labdir.kubeconfig, embedded=labdir)


def down(name: str = "default") -> bool:
    """Stop the embedded lab ``name``; False when it was not running."""
    return supervisor.down(LabDir.named(name))
