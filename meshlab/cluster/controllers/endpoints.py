"""Service → Endpoints and EndpointSlices: which pod addresses and ports serve each Service.

For every Service with a selector (Services without one have user-managed Endpoints, and
``default/kubernetes`` is the supervisor's), the pods of its namespace that match the selector, have an IP
and are not terminal become endpoints. A Service port's ``targetPort`` is a number, or the *name* of a
container port, resolved per pod (so pods may differ); a pod that lacks a named port serves the other ports
only. As kube-controller-manager's two controllers write them:

- ``v1`` ``Endpoints`` (named like the Service, labelled ``endpoints.kubernetes.io/managed-by``): ready
  pods in ``addresses``, not-ready ones in ``notReadyAddresses`` (all in ``addresses`` with
  ``publishNotReadyAddresses``), terminating pods left out; addresses grouped into subsets by port set.
- ``discovery.k8s.io/v1`` ``EndpointSlice`` (``generateName: <service>-``, label
  ``kubernetes.io/service-name``, owned by the Service, ``addressType: IPv4``): one slice per port set,
  every endpoint with ``conditions.ready`` (ready and not terminating), ``serving`` (ready) and
  ``terminating``; a Service with no endpoints keeps one empty slice.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from meshlab.cluster.controllers import ownership
from meshlab.cluster.controllers.readiness import pod_ready, pod_terminal
from meshlab.cluster.controllers.reconciling import Reconciler, utcnow
from meshlab.cluster.selectors import match_label_selector

Obj = dict[str, Any]

MANAGED_BY = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGER = "endpoint-controller"
SERVICE_NAME = "kubernetes.io/service-name"
SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"

PortSet = tuple[tuple[str, int, str, str], ...]  # (name, port, protocol, appProtocol), in service order


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """``podutil.FindPort``: the pod port a Service port's ``targetPort`` names (``None`` if it has none)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def pod_port_set(service: Obj, pod: Obj) -> PortSet:
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        number = find_port(pod, sp)
        if number is not None:
            out.append((sp.get("name", ""), number, sp.get("protocol", "TCP"), sp.get("appProtocol", "")))
    return tuple(out)


def selected_pods(service: Obj, pods: list[Obj], *, include_terminating: bool) -> list[Obj]:
    """``ShouldPodBeInEndpoints`` for the pods the Service's selector matches."""
    selector = {"matchLabels": (service.get("spec") or {}).get("selector") or {}}
    out = []
    for pod in pods:
        if not match_label_selector(selector, (pod.get("metadata") or {}).get("labels") or {}):
            continue
        if pod_terminal(pod) or not (pod.get("status") or {}).get("podIP"):
            continue
        if (pod.get("metadata") or {}).get("deletionTimestamp") and not include_terminating:
            continue
        out.append(pod)
    return sorted(out, key=lambda p: (p["status"]["podIP"], p["metadata"].get("uid", "")))


def _target_ref(pod: Obj) -> Obj:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta["name"], "uid": meta.get("uid", "")}


def _hostname(service: Obj, pod: Obj) -> str:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        return str(spec["hostname"])
    return ""


def _port_dicts(ports: PortSet, *, empty_name: bool = False) -> list[Obj]:
    """Ports as Endpoints (an empty name omitted) or EndpointSlices (an empty name kept) write them."""
    out = []
    for name, number, protocol, app_protocol in ports:
        port: Obj = {"name": name, "port": number, "protocol": protocol}
        if not name and not empty_name:
            port.pop("name")
        if app_protocol:
            port["appProtocol"] = app_protocol
        out.append(port)
    return out


def _headless(service: Obj) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def endpoint_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The ``subsets`` of the Service's Endpoints: addresses grouped by the ports they serve."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[PortSet, Obj] = {}
    for pod in selected_pods(service, pods, include_terminating=publish):
        ports = pod_port_set(service, pod)
        if not ports and (spec.get("ports") or not _headless(service)):
            continue
        address: Obj = {"ip": pod["status"]["podIP"], "targetRef": _target_ref(pod)}
        if pod["spec"].get("nodeName"):
            address["nodeName"] = pod["spec"]["nodeName"]
        if hostname := _hostname(service, pod):
            address["hostname"] = hostname
        subset = groups.setdefault(ports, {})
        subset.setdefault("addresses" if publish or pod_ready(pod) else "notReadyAddresses", []).append(address)
    out = []
    for ports, subset in groups.items():
        if ports:
            subset["ports"] = _port_dicts(ports)
        out.append(subset)
    return out


def desired_slices(service: Obj, pods: list[Obj]) -> dict[PortSet, list[Obj]]:
    """The endpoints of each EndpointSlice, by port set (an empty Service keeps one empty slice)."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    out: dict[PortSet, list[Obj]] = defaultdict(list)
    for pod in selected_pods(service, pods, include_terminating=True):
        ports = pod_port_set(service, pod)
        if not ports and (spec.get("ports") or not _headless(service)):
            continue
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        serving = publish or pod_ready(pod)
        endpoint: Obj = {"addresses": [pod["status"]["podIP"]],
                         "conditions": {"ready": serving and (publish or not terminating), "serving": serving,
                                        "terminating": terminating},
                         "targetRef": _target_ref(pod)}
        if pod["spec"].get("nodeName"):
            endpoint["nodeName"] = pod["spec"]["nodeName"]
        if hostname := _hostname(service, pod):
            endpoint["hostname"] = hostname
        out[ports].append(endpoint)
    return dict(out) or {(): []}


def service_labels(service: Obj) -> dict[str, str]:
    labels = dict((service.get("metadata") or {}).get("labels") or {})
    if _headless(service):
        labels[HEADLESS] = ""
    return labels


def manages(service: Obj) -> bool:
    spec = service.get("spec") or {}
    meta = service.get("metadata") or {}
    if meta.get("namespace") == "default" and meta.get("name") == "kubernetes":
        return False
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


class EndpointController(Reconciler):
    watches = ("/services", "/pods", "/endpoints")
    user = "system:serviceaccount:kube-system:endpoint-controller"

    async def sync(self) -> None:
        pods: dict[str, list[Obj]] = defaultdict(list)
        for pod in self.objects("/pods"):
            pods[pod["metadata"].get("namespace", "")].append(pod)
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in self.objects("/services")}
        for (ns, name), service in services.items():
            if manages(service) and not ownership.being_deleted(service):
                await self.guard(f"endpoints {ns}/{name}", self.sync_one(service, pods[ns]))
        ep_rt = self.kind("", "v1", "endpoints")
        for ep in self.objects("/endpoints"):
            ns, name = ep["metadata"]["namespace"], ep["metadata"]["name"]
            labels = ep["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY) == ENDPOINTS_MANAGER and (ns, name) not in services:
                await self.guard(f"delete endpoints {ns}/{name}", self.rest.delete(ep_rt, ns, name, {}, self.opts))

    async def sync_one(self, service: Obj, pods: list[Obj]) -> None:
        ep_rt = self.kind("", "v1", "endpoints")
        ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
        subsets = endpoint_subsets(service, pods)
        labels = {**service_labels(service), MANAGED_BY: ENDPOINTS_MANAGER}
        found = self.rest.store.get(self.rest.key(ep_rt, ns, name))
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        if found is None:
            body: Obj = {"metadata": {"name": name, "labels": labels, "annotations": {TRIGGER_TIME: stamp}}}
            if subsets:
                body["subsets"] = subsets
            await self.rest.create(ep_rt, ns, body, self.opts)
            return
        current = found[1]
        if (current.get("subsets") or []) == subsets and (current["metadata"].get("labels") or {}) == labels:
            return
        updated = copy.deepcopy(current)
        updated["metadata"]["labels"] = labels
        updated["metadata"]["annotations"] = {**(current["metadata"].get("annotations") or {}), TRIGGER_TIME: stamp}
        updated.pop("subsets", None)
        if subsets:
            updated["subsets"] = subsets
        await self.rest.update(ep_rt, ns, name, updated, self.opts)


class EndpointSliceController(Reconciler):
    watches = ("/services", "/pods", "discovery.k8s.io/endpointslices")
    user = "system:serviceaccount:kube-system:endpointslice-controller"

    async def sync(self) -> None:
        pods: dict[str, list[Obj]] = defaultdict(list)
        for pod in self.objects("/pods"):
            pods[pod["metadata"].get("namespace", "")].append(pod)
        slices: dict[tuple[str, str], list[Obj]] = defaultdict(list)
        for es in self.objects("discovery.k8s.io/endpointslices"):
            labels = es["metadata"].get("labels") or {}
            if labels.get(SLICE_MANAGED_BY) == SLICE_MANAGER and labels.get(SERVICE_NAME):
                slices[(es["metadata"]["namespace"], labels[SERVICE_NAME])].append(es)
        for service in self.objects("/services"):
            ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
            if manages(service) and not ownership.being_deleted(service):
                await self.guard(f"endpointslices {ns}/{name}", self.sync_one(service, pods[ns], slices[(ns, name)]))

    async def sync_one(self, service: Obj, pods: list[Obj], existing: list[Obj]) -> None:
        es_rt = self.kind("discovery.k8s.io", "v1", "endpointslices")
        ns = service["metadata"]["namespace"]
        labels = {**service_labels(service), SERVICE_NAME: service["metadata"]["name"],
                  SLICE_MANAGED_BY: SLICE_MANAGER}
        by_ports = {self._port_key(es): es for es in sorted(existing, key=lambda e: e["metadata"]["name"])}
        spare = [es for es in existing if es not in by_ports.values()]
        for ports, endpoints in desired_slices(service, pods).items():
            body: Obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                         "endpoints": endpoints, "ports": _port_dicts(ports, empty_name=True)}
            current = by_ports.pop(ports, None) or (spare.pop() if spare else None)
            if current is None:
                body["metadata"] = {"generateName": f"{service['metadata']['name']}-", "labels": labels,
                                    "ownerReferences": [ownership.owner_reference(service)]}
                await self.rest.create(es_rt, ns, body, self.opts)
                continue
            if all(current.get(k) == body[k] for k in ("addressType", "endpoints", "ports")) and (
                    current["metadata"].get("labels") or {}) == labels:
                continue
            updated = {**copy.deepcopy(current), **body}
            updated["metadata"]["labels"] = labels
            await self.rest.update(es_rt, ns, current["metadata"]["name"], updated, self.opts)
        for es in [*by_ports.values(), *spare]:
            await self.guard("delete slice", self.rest.delete(es_rt, ns, es["metadata"]["name"], {}, self.opts))

    @staticmethod
    def _port_key(es: Obj) -> PortSet:
        return tuple((p.get("name", ""), int(p.get("port") or 0), p.get("protocol", "TCP"), p.get("appProtocol", ""))
                     for p in es.get("ports") or [])
