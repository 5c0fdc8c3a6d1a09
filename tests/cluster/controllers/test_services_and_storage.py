"""Endpoints and EndpointSlices, per-namespace defaults and PersistentVolume binding in a running lab."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from meshlab.cluster.controllers.volumebinding import PROVISIONED_BY, VolumeBindingController
from tests.cluster.controllers.conftest import ControllerLab
from tests.cluster.controllers.fake_kubelet import READY_ANNOTATION
from tests.polling import wait_for


def present(read: Any, *args: Any) -> Any:
    """The object ``read(*args)`` returns, or ``None`` while it does not exist."""
    try:
        return read(*args)
    except ApiException as err:
        if err.status != 404:
            raise
        return None


def pod(name: str, labels: dict[str, str], *, ready: bool = True, port_name: str = "http", port: int = 8080,
        **spec: Any) -> dict[str, Any]:
    annotations = {} if ready else {READY_ANNOTATION: "false"}
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "main", "image": "meshlab/echo:1",
                                     "ports": [{"name": port_name, "containerPort": port}]}], **spec}}


def test_endpoints_split_ready_and_not_ready_pods(controller_lab: ControllerLab, ns: str) -> None:
    core = controller_lab.clients.core
    core.create_namespaced_pod(ns, pod("ready", {"app": "api"}))
    core.create_namespaced_pod(ns, pod("warming", {"app": "api"}, ready=False))
    core.create_namespaced_pod(ns, pod("other", {"app": "other"}))
    core.create_namespaced_service(ns, {"metadata": {"name": "api", "labels": {"tier": "backend"}}, "spec": {
        "selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})

    def subsets() -> Any:
        ep = present(core.read_namespaced_endpoints, "api", ns)
        s = (ep.subsets if ep else None) or []
        return ep if len(s) == 1 and s[0].addresses and s[0].not_ready_addresses else None

    ep = wait_for(subsets, 10, "one ready and one not-ready address")
    ips = {p.metadata.name: p.status.pod_ip for p in core.list_namespaced_pod(ns).items}
    subset = ep.subsets[0]
    assert [(a.ip, a.target_ref.name) for a in subset.addresses] == [(ips["ready"], "ready")]
    assert [(a.ip, a.target_ref.name) for a in subset.not_ready_addresses] == [(ips["warming"], "warming")]
    assert [(p.name, p.port, p.protocol) for p in subset.ports] == [("web", 8080, "TCP")]
    assert ep.metadata.labels == {"tier": "backend", "endpoints.kubernetes.io/managed-by": "endpoint-controller"}

    slices = controller_lab.server.rest.store
    es = wait_for(lambda: [s for s, _ in slices.scan("discovery.k8s.io/endpointslices", ns)
                           if len(s.get("endpoints") or []) == 2], 10, "a slice with two endpoints")[0]
    assert es["metadata"]["labels"]["kubernetes.io/service-name"] == "api"
    assert es["metadata"]["name"].startswith("api-") and es["addressType"] == "IPv4"
    assert es["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert es["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    conditions = {e["targetRef"]["name"]: e["conditions"] for e in es["endpoints"]}
    assert conditions == {"ready": {"ready": True, "serving": True, "terminating": False},
                          "warming": {"ready": False, "serving": False, "terminating": False}}

    # Readiness flips: the address moves.
    core.patch_namespaced_pod("warming", ns, {"metadata": {"annotations": {READY_ANNOTATION: "true"}}})
    wait_for(lambda: len(core.read_namespaced_endpoints("api", ns).subsets[0].addresses or []) == 2
             and not core.read_namespaced_endpoints("api", ns).subsets[0].not_ready_addresses, 10,
             "both addresses ready")
    table = controller_lab.kubectl("get", "endpoints", "api", "-n", ns).stdout
    assert f"{ips['ready']}:8080" in table


def test_pods_without_the_named_port_serve_only_the_other_ports(controller_lab: ControllerLab, ns: str) -> None:
    core = controller_lab.clients.core
    core.create_namespaced_pod(ns, pod("full", {"app": "mix"}, port_name="metrics", port=9090))
    core.create_namespaced_pod(ns, pod("plain", {"app": "mix"}, port_name="http", port=8080))
    core.create_namespaced_service(ns, {"metadata": {"name": "mix"}, "spec": {"selector": {"app": "mix"}, "ports": [
        {"name": "web", "port": 80, "targetPort": 8080}, {"name": "metrics", "port": 9090, "targetPort": "metrics"}]}})

    def grouped() -> Any:
        subsets = core.read_namespaced_endpoints("mix", ns).subsets or []
        shape = {tuple(sorted((p.name, p.port) for p in s.ports)): [a.target_ref.name for a in s.addresses or []]
                 for s in subsets}
        return shape if len(shape) == 2 else None

    assert wait_for(grouped, 10, "two subsets") == {
        (("metrics", 9090), ("web", 8080)): ["full"], (("web", 8080),): ["plain"]}


def test_a_service_without_selector_keeps_user_endpoints(controller_lab: ControllerLab, ns: str) -> None:
    core = controller_lab.clients.core
    core.create_namespaced_service(ns, {"metadata": {"name": "external"}, "spec": {"ports": [{"port": 5432}]}})
    core.create_namespaced_endpoints(ns, {"metadata": {"name": "external"}, "subsets": [
        {"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]})
    core.create_namespaced_service(ns, {"metadata": {"name": "marker"}, "spec": {
        "selector": {"app": "none"}, "ports": [{"port": 1}]}})
    # Once the controller has written the marker's Endpoints it has looked at every Service of the namespace.
    wait_for(lambda: present(core.read_namespaced_endpoints, "marker", ns), 10, "the marker's endpoints")
    ep = core.read_namespaced_endpoints("external", ns)
    assert ep.subsets[0].addresses[0].ip == "192.0.2.10" and not (ep.metadata.labels or {})


def test_a_new_namespace_gets_its_default_service_account_and_root_ca(controller_lab: ControllerLab,
                                                                      ns: str) -> None:
    core = controller_lab.clients.core
    sa = wait_for(lambda: core.list_namespaced_service_account(ns).items, 10, "the default ServiceAccount")
    assert [s.metadata.name for s in sa] == ["default"]
    cm = wait_for(lambda: core.list_namespaced_config_map(ns).items, 10, "kube-root-ca.crt")[0]
    assert cm.metadata.name == "kube-root-ca.crt"
    assert cm.data == {"ca.crt": (controller_lab.lab.pki / "ca.crt").read_text()}
    # Both come back when deleted, and the CA is restored when edited.
    core.delete_namespaced_service_account("default", ns)
    core.patch_namespaced_config_map("kube-root-ca.crt", ns, {"data": {"ca.crt": "tampered"}})
    wait_for(lambda: core.list_namespaced_service_account(ns).items, 10, "the default ServiceAccount again")
    wait_for(lambda: core.read_namespaced_config_map("kube-root-ca.crt", ns).data["ca.crt"] != "tampered", 10,
             "the CA to be restored")


def pv(name: str, size: str, *, policy: str = "Retain", cls: str = "", labels: dict[str, str] | None = None
       ) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {
        "capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": policy,
        "storageClassName": cls, "hostPath": {"path": f"/tmp/{name}"}}}


def pvc(name: str, size: str, *, cls: str | None = "", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec}
    if cls is not None:
        body["storageClassName"] = cls
    return {"metadata": {"name": name}, "spec": body}


def phase(read: Any, *args: Any) -> str:
    """An object's ``status.phase``, or ``"HTTP 404"`` when it is not there."""
    found = present(read, *args)
    return "HTTP 404" if found is None else str(found.status.phase)


def test_static_binding_takes_the_smallest_fitting_volume_and_releases_it(controller_lab: ControllerLab,
                                                                          ns: str) -> None:
    core = controller_lab.clients.core
    big, small, tiny = (f"{ns}-big", f"{ns}-small", f"{ns}-tiny")
    core.create_persistent_volume(pv(big, "10Gi"))
    core.create_persistent_volume(pv(small, "1Gi"))
    core.create_persistent_volume(pv(tiny, "100Mi"))
    core.create_namespaced_persistent_volume_claim(ns, pvc("data", "500Mi"))
    wait_for(lambda: phase(core.read_namespaced_persistent_volume_claim, "data", ns) == "Bound", 10, "Bound claim")
    claim = core.read_namespaced_persistent_volume_claim("data", ns)
    assert claim.spec.volume_name == small
    assert claim.status.capacity == {"storage": "1Gi"} and claim.status.access_modes == ["ReadWriteOnce"]
    assert claim.metadata.annotations["pv.kubernetes.io/bind-completed"] == "yes"
    volume = core.read_persistent_volume(small)
    assert (volume.status.phase, volume.spec.claim_ref.name, volume.spec.claim_ref.uid) == (
        "Bound", "data", claim.metadata.uid)
    assert phase(core.read_persistent_volume, big) == "Available"
    row = controller_lab.kubectl("get", "pvc", "data", "-n", ns).stdout.splitlines()[1].split()
    assert row[:4] == ["data", "Bound", small, "1Gi"]

    core.delete_namespaced_persistent_volume_claim("data", ns)
    wait_for(lambda: phase(core.read_persistent_volume, small) == "Released", 10, "a Released volume")


def test_a_claim_can_name_its_volume_and_delete_policy_removes_it(controller_lab: ControllerLab, ns: str) -> None:
    core = controller_lab.clients.core
    core.create_persistent_volume(pv(f"{ns}-a", "1Gi", policy="Delete"))
    core.create_persistent_volume(pv(f"{ns}-b", "5Gi", policy="Delete"))
    core.create_namespaced_persistent_volume_claim(ns, pvc("named", "1Gi", volumeName=f"{ns}-b"))
    wait_for(lambda: phase(core.read_persistent_volume, f"{ns}-b") == "Bound", 10, "the named volume bound")
    assert phase(core.read_persistent_volume, f"{ns}-a") == "Available"
    core.delete_namespaced_persistent_volume_claim("named", ns)
    wait_for(lambda: phase(core.read_persistent_volume, f"{ns}-b") == "HTTP 404", 10, "the volume deleted")


def test_a_claim_of_an_unknown_provisioner_waits_for_it(controller_lab: ControllerLab, ns: str) -> None:
    core, storage = controller_lab.clients.core, controller_lab.clients.storage
    storage.create_storage_class({"metadata": {"name": f"{ns}-ext"}, "provisioner": "example.com/nfs"})
    core.create_namespaced_persistent_volume_claim(ns, pvc("waiting", "1Gi", cls=f"{ns}-ext"))
    message = ("Waiting for a volume to be created either by the external provisioner 'example.com/nfs' or manually "
               "by the system administrator. If volume creation is delayed, please verify that the provisioner is "
               "running and correctly registered.")

    def event() -> Any:
        return [e for e in core.list_namespaced_event(ns).items if e.reason == "ExternalProvisioning"]

    assert wait_for(event, 10, "an ExternalProvisioning event")[0].message == message
    claim = core.read_namespaced_persistent_volume_claim("waiting", ns)
    assert claim.status.phase == "Pending"
    assert claim.metadata.annotations["volume.kubernetes.io/storage-provisioner"] == "example.com/nfs"


class FakeProvisioner:
    provisioner_name = "test.meshlab.io/fake"

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    async def provision(self, pvc: dict[str, Any], storage_class: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"spec": {"hostPath": {"path": f"/tmp/{pvc['metadata']['uid']}"}}}

    async def delete(self, pv: dict[str, Any]) -> None:
        with self.lock:
            self.deleted.append(pv["metadata"]["name"])


def test_a_registered_provisioner_provisions_on_first_consumer_and_deletes(controller_lab: ControllerLab,
                                                                           ns: str) -> None:
    core, storage = controller_lab.clients.core, controller_lab.clients.storage
    fake = FakeProvisioner()
    binder = controller_lab.controller(VolumeBindingController)
    controller_lab.loop.call_soon_threadsafe(binder.register, fake)
    storage.create_storage_class({"metadata": {"name": f"{ns}-fake"}, "provisioner": fake.provisioner_name,
                                  "volumeBindingMode": "WaitForFirstConsumer"})
    core.create_namespaced_persistent_volume_claim(ns, pvc("lazy", "2Gi", cls=f"{ns}-fake"))
    wait_for(lambda: [e for e in core.list_namespaced_event(ns).items if e.reason == "WaitForFirstConsumer"], 10,
             "WaitForFirstConsumer")
    assert phase(core.read_namespaced_persistent_volume_claim, "lazy", ns) == "Pending"

    core.create_namespaced_pod(ns, pod("user", {"app": "user"}, volumes=[
        {"name": "data", "persistentVolumeClaim": {"claimName": "lazy"}}]))
    wait_for(lambda: core.read_namespaced_pod("user", ns).spec.node_name == "lab-node", 10, "the pod scheduled")
    claim = core.read_namespaced_persistent_volume_claim("lazy", ns)
    assert claim.status.phase == "Bound" and claim.spec.volume_name == f"pvc-{claim.metadata.uid}"
    assert claim.metadata.annotations["volume.kubernetes.io/selected-node"] == "lab-node"
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.metadata.annotations[PROVISIONED_BY] == fake.provisioner_name
    assert (volume.spec.persistent_volume_reclaim_policy, volume.spec.capacity) == ("Delete", {"storage": "2Gi"})
    reasons = [e.reason for e in core.list_namespaced_event(ns).items]
    assert "Provisioning" in reasons and "ProvisioningSucceeded" in reasons

    core.delete_namespaced_pod("user", ns)
    core.delete_namespaced_persistent_volume_claim("lazy", ns)
    wait_for(lambda: phase(core.read_persistent_volume, volume.metadata.name) == "HTTP 404", 10, "the volume gone")
    assert fake.deleted == [volume.metadata.name]
