"""``meshlab storage install|uninstall|status``: NFS server, CSI driver and StorageClass, from the manifests.

Installing applies ``nfs-server.yaml`` (namespace ``meshlab-storage``, the NFS server Deployment and Service),
waits for the server to be Ready, then applies ``csi-nfs.yaml`` (CSIDriver, controller Deployment with the
driver and the provisioner, node DaemonSet with the driver and the registrar, StorageClass ``meshlab-nfs``)
plus ``csi-nfs-rbac.yaml`` where the cluster serves RBAC, and ``flexvolume.yaml`` (a DaemonSet copying the
FlexVolume driver ``meshlab~nfs/nfs`` into the kubelet's plugin directory), and waits until every node's CSINode
lists the driver
(the kubelet registered it through the registrar's socket) — the same steps a ``kubectl apply`` on a real
cluster takes. Two things differ in the embedded lab, and only in the objects, not in the files: its Services
carry no NFS traffic (the lab's kube-proxy forwards HTTP) and a replaced pod gets a new address — while every
PV's volume id records the server it was made on — so the NFS server runs on the node's network
(``hostNetwork``) at a port of its own (chosen once per lab, kept on re-install) and the StorageClass names
``127.0.0.1`` and that port; and the export lives in ``<lab>/storage/nfs-data`` rather than an emptyDir, so a
replaced server pod keeps its files. The functions take a :class:`meshlab.lab.Lab` handle; building the objects is pure.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from meshlab.errors import LabError
from meshlab.storage import manifests

if TYPE_CHECKING:  # driven through a Lab handle; storage never imports the lab machinery itself
    from meshlab.lab import Lab

Obj = dict[str, Any]

MANIFESTS = Path(manifests.__file__).parent
NFS_SERVER = MANIFESTS / "nfs-server.yaml"
CSI_NFS = MANIFESTS / "csi-nfs.yaml"
CSI_NFS_RBAC = MANIFESTS / "csi-nfs-rbac.yaml"
FLEXVOLUME = MANIFESTS / "flexvolume.yaml"
FLEX_DAEMONSET = "flexvolume-installer"
NAMESPACE = "meshlab-storage"
DRIVER = "nfs.csi.meshlab.io"
STORAGE_CLASS = "meshlab-nfs"
SERVER_DEPLOYMENT = "nfs-server"
CONTROLLER = "csi-nfs-controller"
NODE_DAEMONSET = "csi-nfs-node"
NFS_VERSIONS = {"python": "3", "ganesha": "4"}
LAB_NODE_ADDRESS = "127.0.0.1"   # the embedded lab node's address (a hostNetwork pod's)
LAB_PORTS = (20490, 29490)       # where a lab's NFS server port is chosen


def documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def nfs_server_objects(*, data_dir: Path | None = None, backend: str = "python",
                       node_port: int | None = None) -> list[Obj]:
    """``nfs-server.yaml``'s objects; ``data_dir`` puts the export on that host directory and ``node_port``
    serves it on the node's own address at that port (the lab's stable address, see :func:`install`)."""
    if backend not in NFS_VERSIONS:
        raise LabError(f"unknown NFS server backend {backend!r} (python or ganesha)")
    docs = documents(NFS_SERVER)
    for doc in docs:
        if doc["kind"] == "Service" and node_port is not None:
            doc["spec"]["ports"][0]["targetPort"] = node_port
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        container = pod["containers"][0]
        args = list(container["args"])
        args[args.index("--backend") + 1] = backend
        if node_port is not None:
            args[args.index("--port") + 1] = str(node_port)
            pod["hostNetwork"] = True
            container["ports"] = [{"name": "nfs", "containerPort": node_port, "protocol": "TCP"}]
            container["readinessProbe"]["tcpSocket"]["port"] = node_port
        container["args"] = args
        if data_dir is not None:
            pod["volumes"] = [{"name": "data", "hostPath": {"path": str(data_dir), "type": "DirectoryOrCreate"}}
                              if v["name"] == "data" else v for v in pod["volumes"]]
    return docs


def csi_objects(*, server: str | None = None, port: int | None = None, backend: str = "python") -> list[Obj]:
    """``csi-nfs.yaml``'s objects; ``server``/``port`` replace the StorageClass's NFS server (the lab's)."""
    docs = documents(CSI_NFS)
    for doc in docs:
        if doc["kind"] == "StorageClass":
            if server:
                doc["parameters"]["server"] = server
            if port is not None:
                doc["parameters"]["port"] = str(port)
            doc["parameters"]["version"] = NFS_VERSIONS[backend]
    return docs


def lab_port(lab_path: Path, current: int | None, *, is_free: Callable[[int], bool]) -> int:
    """The NFS port of a lab's server: the one it has (stable across re-installs), else the first free one
    from a base derived from the lab's directory (so two labs on one machine rarely collide)."""
    if current:
        return current
    base = LAB_PORTS[0] + zlib.crc32(str(lab_path).encode()) % (LAB_PORTS[1] - LAB_PORTS[0])
    for offset in range(LAB_PORTS[1] - LAB_PORTS[0]):
        port = LAB_PORTS[0] + (base - LAB_PORTS[0] + offset) % (LAB_PORTS[1] - LAB_PORTS[0])
        if is_free(port):
            return port
    raise LabError(f"no free TCP port in {LAB_PORTS[0]}-{LAB_PORTS[1]} on 127.0.0.1 for the NFS server")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _current_port(lab: Lab) -> int | None:
    """The NFS port of the installed lab server (its Deployment's ``--port``), if it runs on the node."""
    try:
        dep = _plain(lab, lab.clients.apps.read_namespaced_deployment(SERVER_DEPLOYMENT, NAMESPACE))
    except ApiException as err:
        if err.status == 404:
            return None
        raise LabError(f"reading deployment {SERVER_DEPLOYMENT} failed: {err.status} {err.reason}") from err
    pod = dep["spec"]["template"]["spec"]
    args = list(pod["containers"][0].get("args") or [])
    return int(args[args.index("--port") + 1]) if pod.get("hostNetwork") and "--port" in args else None


def storage_class(docs: list[Obj]) -> Obj:
    return next(d for d in docs if d["kind"] == "StorageClass")


def serves_rbac(lab: Lab) -> bool:
    groups = client.ApisApi(lab.clients.api_client).get_api_versions().groups or []
    return any(g.name == "rbac.authorization.k8s.io" for g in groups)


def _plain(lab: Lab, obj: Any) -> Any:
    return lab.clients.api_client.sanitize_for_serialization(obj)


def _replace_changed_class(lab: Lab, wanted: Obj) -> None:
    """StorageClass parameters are immutable: delete a class whose parameters must change (e.g. a new server
    address after the server pod was replaced) so that the apply creates it afresh."""
    try:
        current = _plain(lab, lab.clients.storage.read_storage_class(wanted["metadata"]["name"]))
    except ApiException as err:
        if err.status == 404:
            return
        raise LabError(f"reading storageclass {wanted['metadata']['name']} failed: {err.status} {err.reason}") from err
    if (current.get("parameters") or {}) != wanted.get("parameters") or current.get("provisioner") != wanted.get(
            "provisioner") or current.get("reclaimPolicy") != wanted.get("reclaimPolicy"):
        lab.clients.storage.delete_storage_class(wanted["metadata"]["name"])


def install(lab: Lab, *, timeout: float = 120, backend: str = "python") -> list[str]:
    """Deploy the NFS server and the CSI driver, wait until the driver is registered on every node; returns
    ``kind/name`` of what was applied."""
    if lab.embedded is not None:
        # The lab's Services carry no NFS traffic and a replaced pod gets a new address, while every PV's volume
        # id keeps the server it was made on: the server listens on the node's address at a port of its own.
        port = lab_port(lab.embedded.path, _current_port(lab), is_free=_port_free)
        server_docs = nfs_server_objects(data_dir=lab.embedded.path / "storage" / "nfs-data", backend=backend,
                                         node_port=port)
        docs = csi_objects(server=LAB_NODE_ADDRESS, port=port, backend=backend)
    else:
        server_docs, docs = nfs_server_objects(backend=backend), csi_objects(backend=backend)
    applied = lab.apply(server_docs)
    lab.wait_ready("deployment", SERVER_DEPLOYMENT, namespace=NAMESPACE, timeout=timeout)
    _replace_changed_class(lab, storage_class(docs))
    applied += lab.apply(docs)
    if serves_rbac(lab):
        applied += lab.apply(CSI_NFS_RBAC.read_text())
    lab.wait_ready("deployment", CONTROLLER, namespace=NAMESPACE, timeout=timeout)
    applied += lab.apply(FLEXVOLUME.read_text())
    lab.wait_ready("daemonset", NODE_DAEMONSET, namespace=NAMESPACE, timeout=timeout)
    lab.wait_ready("daemonset", FLEX_DAEMONSET, namespace=NAMESPACE, timeout=timeout)
    wait_registered(lab, timeout=timeout)
    return [f"{o['kind'].lower()}/{o['metadata']['name']}" for o in applied]


def registered_nodes(lab: Lab) -> dict[str, bool]:
    """Node name -> whether its CSINode lists the driver."""
    nodes = [n["metadata"]["name"] for n in _plain(lab, lab.clients.core.list_node()).get("items") or []]
    csinodes = {c["metadata"]["name"]: c for c in _plain(lab, lab.clients.storage.list_csi_node()).get("items") or []}
    return {name: any(d.get("name") == DRIVER for d in ((csinodes.get(name) or {}).get("spec") or {}).get("drivers")
                      or []) for name in nodes}


def wait_registered(lab: Lab, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        nodes = registered_nodes(lab)
        missing = sorted(name for name, ok in nodes.items() if not ok)
        if nodes and not missing:
            return
        if time.monotonic() > deadline:
            raise LabError(f"the kubelet of {', '.join(missing) or 'no node'} has not registered {DRIVER} after "
                           f"{timeout:.0f}s (no CSINode entry): see `kubectl -n {NAMESPACE} logs ds/{NODE_DAEMONSET} "
                           "-c csi-registrar`")
        time.sleep(0.2)


def claims_of_class(lab: Lab) -> list[str]:
    claims = _plain(lab, lab.clients.core.list_persistent_volume_claim_for_all_namespaces()).get("items") or []
    return sorted(f"{c['metadata']['namespace']}/{c['metadata']['name']}" for c in claims
                  if (c.get("spec") or {}).get("storageClassName") == STORAGE_CLASS)


def uninstall(lab: Lab, *, force: bool = False, timeout: float = 60) -> list[str]:
    """Remove the driver, the StorageClass and the NFS server (its namespace); refuses while claims of
    ``meshlab-nfs`` exist unless ``force`` (their volumes could then never be deleted by the driver)."""
    claims = claims_of_class(lab)
    if claims and not force:
        raise LabError(f"claims of {STORAGE_CLASS} still exist ({', '.join(claims)}): delete them first, or "
                       "uninstall with --force (their volumes' directories then stay on the export)")
    deleted = lab.delete(FLEXVOLUME.read_text()) + lab.delete(csi_objects())
    if serves_rbac(lab):
        deleted += lab.delete(CSI_NFS_RBAC.read_text())
    deleted += lab.delete(documents(NFS_SERVER))
    lab.wait_gone("namespace", NAMESPACE, timeout=timeout)
    return deleted


@dataclass(frozen=True)
class StorageStatus:
    server: str                    # "1/1 ready", "not installed"
    controller: str
    node: str                      # "1/1 ready"
    flexvolume: str                # the FlexVolume installer DaemonSet, "1/1 ready"
    storage_class: dict[str, str]  # its parameters, {} when missing
    registered: dict[str, bool]    # node -> CSINode lists the driver
    claims: list[str]

    @property
    def healthy(self) -> bool:
        parts = (self.server, self.controller, self.node, self.flexvolume)
        return (all(p.endswith(" ready") and not p.startswith("0/") for p in parts) and bool(self.storage_class)
                and bool(self.registered) and all(self.registered.values()))


def _deployment(lab: Lab, name: str) -> str:
    try:
        dep = _plain(lab, lab.clients.apps.read_namespaced_deployment(name, NAMESPACE))
    except ApiException as err:
        if err.status == 404:
            return "not installed"
        raise LabError(f"reading deployment {name} failed: {err.status} {err.reason}") from err
    return f"{(dep.get('status') or {}).get('readyReplicas') or 0}/{dep['spec'].get('replicas', 1)} ready"


def _daemonset(lab: Lab, name: str) -> str:
    try:
        ds = _plain(lab, lab.clients.apps.read_namespaced_daemon_set(name, NAMESPACE))
    except ApiException as err:
        if err.status == 404:
            return "not installed"
        raise LabError(f"reading daemonset {name} failed: {err.status} {err.reason}") from err
    ds_status = ds.get("status") or {}
    return f"{ds_status.get('numberReady') or 0}/{ds_status.get('desiredNumberScheduled') or 0} ready"


def status(lab: Lab) -> StorageStatus:
    try:
        sc = _plain(lab, lab.clients.storage.read_storage_class(STORAGE_CLASS))
        parameters = dict(sc.get("parameters") or {})
    except ApiException as err:
        if err.status != 404:
            raise LabError(f"reading storageclass {STORAGE_CLASS} failed: {err.status} {err.reason}") from err
        parameters = {}
    return StorageStatus(_deployment(lab, SERVER_DEPLOYMENT), _deployment(lab, CONTROLLER),
                         _daemonset(lab, NODE_DAEMONSET), _daemonset(lab, FLEX_DAEMONSET), parameters,
                         registered_nodes(lab), claims_of_class(lab))


def format_status(s: StorageStatus) -> str:
    lines = [f"deployment {NAMESPACE}/{SERVER_DEPLOYMENT}: {s.server}",
             f"deployment {NAMESPACE}/{CONTROLLER}: {s.controller}",
             f"daemonset {NAMESPACE}/{NODE_DAEMONSET}: {s.node}",
             f"daemonset {NAMESPACE}/{FLEX_DAEMONSET}: {s.flexvolume}"]
    if s.storage_class:
        params = ", ".join(f"{k}={v}" for k, v in sorted(s.storage_class.items()))
        lines.append(f"storageclass {STORAGE_CLASS}: {params}")
    else:
        lines.append(f"storageclass {STORAGE_CLASS}: missing")
    lines += [f"node {name}: {DRIVER} {'registered' if ok else 'NOT registered'}" for name, ok in
              sorted(s.registered.items())]
    lines.append(f"claims of {STORAGE_CLASS}: {len(s.claims)}" + (f" ({', '.join(s.claims)})" if s.claims else ""))
    return "\n".join(lines)
