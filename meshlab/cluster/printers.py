"""What ``kubectl get`` shows for each built-in kind: the columns and the cells of one row.

Since Kubernetes 1.11 the apiserver does the printing. Each kind has a printer (Kubernetes'
``pkg/printers/internalversion/printers.go``): column definitions (name, JSON type, format, and a priority
-- 0 for the default view, 1 for columns kubectl shows only under ``-o wide``) and a function from one
object to one row of cells. The server always computes the wide cells too (``GenerateOptions{Wide: true}``);
kubectl drops priority > 0 columns itself and upper-cases the names (``Up-to-date`` prints as
``UP-TO-DATE``). Column names and order here are those of Kubernetes 1.33. One deliberate difference: where
the real server declares a ``string`` column but sends numbers or booleans (DATA, SECRETS, UP-TO-DATE,
AVAILABLE, COUNT, ALLOWVOLUMEEXPANSION) the column here is declared with the type its cells really have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meshlab.cluster.cells import (
    Cells,
    Obj,
    access_modes,
    age,
    as_bool,
    as_dict,
    as_int,
    as_list,
    as_str,
    container_cells,
    dicts,
    format_label_selector,
    format_labels,
    host_port,
    human_duration,
    list_with_more,
    meta,
    name_of,
    or_unset,
    parse_time,
    quantity,
    selector_string,
    since,
    template_spec,
)


@dataclass(frozen=True)
class Column:
    """One ``metav1.TableColumnDefinition``; all five fields are always serialised."""

    name: str
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    cells: Callable[[Obj, datetime], Cells]
    # Extra ``TableRow.conditions`` (only pods have any: Completed for Succeeded/Failed pods).
    conditions: Callable[[Obj], list[dict[str, str]]] | None = None


NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
AGE = Column("Age", description="CreationTimestamp: when this object was created, as an age.")


def wide(name: str, type_: str = "string", description: str = "") -> Column:
    return Column(name, type_, priority=1, description=description)


# --- pods --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodSummary:
    reason: str
    ready: int
    total: int
    restarts: int
    last_restart: datetime | None


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None or (current is not None and current >= candidate):
        return current
    return candidate


def _last_finished(status: Obj) -> datetime | None:
    last_state = as_dict(status.get("lastState"))
    return parse_time(as_dict(last_state.get("terminated")).get("finishedAt"))


def _terminated_reason(terminated: Obj) -> str:
    reason = as_str(terminated.get("reason"))
    if reason:
        return reason
    signal = as_int(terminated.get("signal"))
    return f"Signal:{signal}" if signal else f"ExitCode:{as_int(terminated.get('exitCode'))}"


def summarize_pod(pod: Obj) -> PodSummary:
    """READY, STATUS and RESTARTS of a pod, following the apiserver's ``printPod`` step by step."""
    spec, status = as_dict(pod.get("spec")), as_dict(pod.get("status"))
    phase = as_str(status.get("phase"))
    reason = as_str(status.get("reason")) or phase
    conditions = dicts(status.get("conditions"))
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions):
        reason = "SchedulingGated"

    init_specs = as_list(spec.get("initContainers"))
    # Native sidecars (init containers with restartPolicy Always) count as regular containers.
    sidecars = {as_str(c.get("name")) for c in dicts(init_specs) if c.get("restartPolicy") == "Always"}
    total = len(as_list(spec.get("containers"))) + sum(
        1 for c in dicts(init_specs) if c.get("restartPolicy") == "Always")
    ready = restarts = sidecar_restarts = 0
    last: datetime | None = None
    sidecar_last: datetime | None = None
    initializing = False
    for index, cs in enumerate(dicts(status.get("initContainerStatuses"))):
        count, finished = as_int(cs.get("restartCount")), _last_finished(cs)
        restarts, last = restarts + count, _later(last, finished)
        is_sidecar = as_str(cs.get("name")) in sidecars
        if is_sidecar:
            sidecar_restarts, sidecar_last = sidecar_restarts + count, _later(sidecar_last, finished)
        state = as_dict(cs.get("state"))
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if isinstance(terminated, dict) and as_int(terminated.get("exitCode")) == 0:
            continue
        if is_sidecar and cs.get("started") is True:
            ready += cs.get("ready") is True
            continue
        waiting_reason = as_str(as_dict(waiting).get("reason"))
        if isinstance(terminated, dict):
            reason = "Init:" + _terminated_reason(terminated)
        elif waiting_reason and waiting_reason != "PodInitializing":
            reason = "Init:" + waiting_reason
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break

    initialized = next((c.get("status") == "True" for c in conditions if c.get("type") == "Initialized"),
                       False)
    if not initializing or initialized:
        restarts, last = sidecar_restarts, sidecar_last
        has_running = False
        for cs in reversed(dicts(status.get("containerStatuses"))):
            restarts, last = restarts + as_int(cs.get("restartCount")), _later(last, _last_finished(cs))
            state = as_dict(cs.get("state"))
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if isinstance(waiting, dict) and as_str(waiting.get("reason")):
                reason = as_str(waiting.get("reason"))
            elif isinstance(terminated, dict):
                reason = _terminated_reason(terminated)
            elif cs.get("ready") is True and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        # A finished container next to a running one: the pod is still up.
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if pod_ready else "NotReady"

    if meta(pod).get("deletionTimestamp"):
        if as_str(status.get("reason")) == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return PodSummary(reason, ready, total, restarts, last)


def pod_status_reason(pod: dict[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods``: phase, or the reason a container is waiting/terminated."""
    return summarize_pod(pod if isinstance(pod, dict) else {}).reason


def _pod_cells(pod: Obj, now: datetime) -> Cells:
    summary = summarize_pod(pod)
    restarts = str(summary.restarts)
    if summary.restarts and summary.last_restart is not None:
        restarts = f"{summary.restarts} ({human_duration(now - summary.last_restart)} ago)"
    spec, status = as_dict(pod.get("spec")), as_dict(pod.get("status"))
    pod_ips = dicts(status.get("podIPs"))
    # v1 -> internal conversion fills podIPs from podIP, so an object with only podIP shows it too.
    ip = as_str(pod_ips[0].get("ip")) if pod_ips else as_str(status.get("podIP"))
    gates = dicts(spec.get("readinessGates"))
    gates_cell = "<none>"
    if gates:
        conditions = dicts(status.get("conditions"))
        passed = 0
        for gate in gates:
            found = next((c for c in conditions if c.get("type") == gate.get("conditionType")), None)
            passed += found is not None and found.get("status") == "True"
        gates_cell = f"{passed}/{len(gates)}"
    return [name_of(pod), f"{summary.ready}/{summary.total}", summary.reason, restarts, age(pod, now),
            ip or "<none>", as_str(spec.get("nodeName")) or "<none>",
            as_str(status.get("nominatedNodeName")) or "<none>", gates_cell]


def _pod_conditions(pod: Obj) -> list[dict[str, str]]:
    phase = as_dict(pod.get("status")).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return []


POD = Printer(
    (NAME, Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
     Column("Status", description="The aggregate status of the containers in this pod."),
     Column("Restarts", description="The number of times the containers in this pod have been restarted "
                                    "and when the last container in this pod has restarted."),
     AGE, wide("IP", description="IP address allocated to the pod."),
     wide("Node", description="The node the pod is scheduled onto."),
     wide("Nominated Node", description="The node the scheduler may preempt other pods on for this one."),
     wide("Readiness Gates", description="Extra conditions the pod needs before it is ready.")),
    _pod_cells, _pod_conditions)


# --- core/v1 -----------------------------------------------------------------------------------------

def _namespace_cells(ns: Obj, now: datetime) -> Cells:
    return [name_of(ns), as_str(as_dict(ns.get("status")).get("phase")), age(ns, now)]


def _service_external_ip(spec: Obj, status: Obj) -> str:
    external = [as_str(ip) for ip in as_list(spec.get("externalIPs"))]
    kind = as_str(spec.get("type")) or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        ingress = dicts(as_dict(status.get("loadBalancer")).get("ingress"))
        # Wide output (which the server always computes) is not clipped to 16 characters.
        balancers = sorted({as_str(i.get("ip")) or as_str(i.get("hostname")) for i in ingress} - {""})
        return ",".join(balancers + external) or "<pending>"
    if kind == "ExternalName":
        return as_str(spec.get("externalName"))
    return "<unknown>"


def _service_ports(ports: Any) -> str:
    pieces = []
    for port in dicts(ports):
        protocol = as_str(port.get("protocol")) or "TCP"  # the apiserver defaults it
        node_port = as_int(port.get("nodePort"))
        middle = f":{node_port}" if node_port > 0 else ""
        pieces.append(f"{as_int(port.get('port'))}{middle}/{protocol}")
    return ",".join(pieces) or "<none>"


def _service_cells(svc: Obj, now: datetime) -> Cells:
    spec, status = as_dict(svc.get("spec")), as_dict(svc.get("status"))
    cluster_ips = [as_str(ip) for ip in as_list(spec.get("clusterIPs"))]
    cluster_ip = (cluster_ips[0] if cluster_ips else as_str(spec.get("clusterIP"))) or "<none>"
    return [name_of(svc), as_str(spec.get("type")) or "ClusterIP", cluster_ip,
            _service_external_ip(spec, status), _service_ports(spec.get("ports")), age(svc, now),
            format_labels(spec.get("selector"))]


def _endpoints_cells(ep: Obj, now: datetime) -> Cells:
    subsets = dicts(ep.get("subsets"))
    listed: list[str] = []
    total = 0
    for subset in subsets:
        ips = [as_str(a.get("ip")) for a in dicts(subset.get("addresses"))]
        ports = dicts(subset.get("ports"))
        if not ports:  # headless services may have no ports
            listed += ips
            total += len(ips)
        for port in ports:
            listed += [host_port(ip, as_int(port.get("port"))) for ip in ips]
            total += len(ips)
    return [name_of(ep), list_with_more(listed, total) if subsets else "<none>", age(ep, now)]


def _configmap_cells(cm: Obj, now: datetime) -> Cells:
    count = len(as_dict(cm.get("data"))) + len(as_dict(cm.get("binaryData")))
    return [name_of(cm), count, age(cm, now)]


def _secret_cells(secret: Obj, now: datetime) -> Cells:
    return [name_of(secret), as_str(secret.get("type")), len(as_dict(secret.get("data"))), age(secret, now)]


def _service_account_cells(sa: Obj, now: datetime) -> Cells:
    return [name_of(sa), len(as_list(sa.get("secrets"))), age(sa, now)]


def _event_cells(event: Obj, now: datetime) -> Cells:
    first = since(event.get("firstTimestamp"), now)
    if parse_time(event.get("firstTimestamp")) is None:
        first = since(event.get("eventTime"), now)
    last = since(event.get("lastTimestamp"), now)
    if parse_time(event.get("lastTimestamp")) is None:
        last = first
    count = as_int(event.get("count"))
    series = event.get("series")
    if isinstance(series, dict):
        last, count = since(series.get("lastObservedTime"), now), as_int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the events.k8s.io API carry no count
    involved, source = as_dict(event.get("involvedObject")), as_dict(event.get("source"))
    kind, target = as_str(involved.get("kind")).lower(), as_str(involved.get("name"))
    component = as_str(source.get("component")) or as_str(event.get("reportingController"))
    host = as_str(source.get("host")) or as_str(event.get("reportingInstance"))
    return [last, as_str(event.get("type")), as_str(event.get("reason")),
            f"{kind}/{target}" if target else kind, as_str(involved.get("fieldPath")),
            f"{component}, {host}" if host else component, as_str(event.get("message")).strip(),
            first, count, name_of(event)]


def _storage_class_annotation(obj: Obj) -> str | None:
    annotations = as_dict(meta(obj).get("annotations"))
    key = "volume.beta.kubernetes.io/storage-class"  # the beta annotation wins over the field
    return as_str(annotations[key]) if key in annotations else None


def _terminating_phase(obj: Obj) -> str:
    phase = as_str(as_dict(obj.get("status")).get("phase"))
    return "Terminating" if meta(obj).get("deletionTimestamp") else phase


def _pv_cells(pv: Obj, now: datetime) -> Cells:
    spec = as_dict(pv.get("spec"))
    claim = spec.get("claimRef")
    claim_cell = ""
    if isinstance(claim, dict):
        claim_cell = f"{as_str(claim.get('namespace'))}/{as_str(claim.get('name'))}"
    storage_class = _storage_class_annotation(pv)
    return [name_of(pv), quantity(as_dict(spec.get("capacity")).get("storage")),
            access_modes(spec.get("accessModes")), as_str(spec.get("persistentVolumeReclaimPolicy")),
            _terminating_phase(pv), claim_cell,
            as_str(spec.get("storageClassName")) if storage_class is None else storage_class,
            or_unset(spec.get("volumeAttributesClassName")), as_str(as_dict(pv.get("status")).get("reason")),
            age(pv, now), or_unset(spec.get("volumeMode"))]


def _pvc_cells(pvc: Obj, now: datetime) -> Cells:
    spec, status = as_dict(pvc.get("spec")), as_dict(pvc.get("status"))
    volume = as_str(spec.get("volumeName"))
    capacity = modes = ""
    if volume:  # capacity and modes are those of the bound volume, so only shown once bound
        capacity = quantity(as_dict(status.get("capacity")).get("storage"))
        modes = access_modes(status.get("accessModes"))
    storage_class = _storage_class_annotation(pvc)
    return [name_of(pvc), _terminating_phase(pvc), volume, capacity, modes,
            as_str(spec.get("storageClassName")) if storage_class is None else storage_class,
            or_unset(spec.get("volumeAttributesClassName")), age(pvc, now), or_unset(spec.get("volumeMode"))]


def _node_cells(node: Obj, now: datetime) -> Cells:
    spec, status = as_dict(node.get("spec")), as_dict(node.get("status"))
    ready = [c for c in dicts(status.get("conditions")) if c.get("type") == "Ready"]
    state = ["Unknown"]
    if ready:  # the last Ready condition wins, as a Go map keyed by type would keep it
        state = ["Ready" if ready[-1].get("status") == "True" else "NotReady"]
    if spec.get("unschedulable") is True:
        state.append("SchedulingDisabled")
    roles = set()
    for key, value in as_dict(meta(node).get("labels")).items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and as_str(value):
            roles.add(as_str(value))
    info = as_dict(status.get("nodeInfo"))
    addresses = dicts(status.get("addresses"))

    def address(kind: str) -> str:
        return next((as_str(a.get("address")) for a in addresses if a.get("type") == kind), "<none>")

    return [name_of(node), ",".join(state), ",".join(sorted(roles)) or "<none>", age(node, now),
            as_str(info.get("kubeletVersion")), address("InternalIP"), address("ExternalIP"),
            as_str(info.get("osImage")) or "<unknown>", as_str(info.get("kernelVersion")) or "<unknown>",
            as_str(info.get("containerRuntimeVersion")) or "<unknown>"]


# --- apps/v1 -----------------------------------------------------------------------------------------

def _replicas(spec: Obj) -> int:
    # The apiserver defaults spec.replicas to 1 on write; an undefaulted object shows the same.
    return as_int(spec["replicas"]) if "replicas" in spec else 1


def _deployment_cells(deploy: Obj, now: datetime) -> Cells:
    spec, status = as_dict(deploy.get("spec")), as_dict(deploy.get("status"))
    selector = selector_string(spec.get("selector"))
    return [name_of(deploy), f"{as_int(status.get('readyReplicas'))}/{_replicas(spec)}",
            as_int(status.get("updatedReplicas")), as_int(status.get("availableReplicas")), age(deploy, now),
            *container_cells(template_spec(deploy)), "<invalid>" if selector is None else selector]


def _replicaset_cells(rs: Obj, now: datetime) -> Cells:
    spec, status = as_dict(rs.get("spec")), as_dict(rs.get("status"))
    return [name_of(rs), _replicas(spec), as_int(status.get("replicas")), as_int(status.get("readyReplicas")),
            age(rs, now), *container_cells(template_spec(rs)), format_label_selector(spec.get("selector"))]


def _daemonset_cells(ds: Obj, now: datetime) -> Cells:
    spec, status = as_dict(ds.get("spec")), as_dict(ds.get("status"))
    counts = [as_int(status.get(k)) for k in ("desiredNumberScheduled", "currentNumberScheduled",
                                             "numberReady", "updatedNumberScheduled", "numberAvailable")]
    return [name_of(ds), *counts, format_labels(template_spec(ds).get("nodeSelector")), age(ds, now),
            *container_cells(template_spec(ds)), format_label_selector(spec.get("selector"))]


# --- storage, discovery, admission, coordination, apiextensions ---------------------------------------

def _storage_class_cells(sc: Obj, now: datetime) -> Cells:
    annotations = as_dict(meta(sc).get("annotations"))
    default = any(annotations.get(k) == "true" for k in ("storageclass.kubernetes.io/is-default-class",
                                                          "storageclass.beta.kubernetes.io/is-default-class"))
    return [name_of(sc) + (" (default)" if default else ""), as_str(sc.get("provisioner")),
            as_str(sc.get("reclaimPolicy")) or "Delete", as_str(sc.get("volumeBindingMode")) or "Immediate",
            as_bool(sc.get("allowVolumeExpansion"), False), age(sc, now)]


def _csi_driver_cells(driver: Obj, now: datetime) -> Cells:
    spec = as_dict(driver.get("spec"))
    tokens = spec.get("tokenRequests")
    audiences = "<unset>" if tokens is None else ",".join(as_str(t.get("audience")) for t in dicts(tokens))
    modes = ",".join(as_str(m) for m in as_list(spec.get("volumeLifecycleModes"))) or "<none>"
    return [name_of(driver), as_bool(spec.get("attachRequired"), True),
            as_bool(spec.get("podInfoOnMount"), False), as_bool(spec.get("storageCapacity"), False),
            audiences, as_bool(spec.get("requiresRepublish"), False), modes, age(driver, now)]


def _csi_node_cells(node: Obj, now: datetime) -> Cells:
    return [name_of(node), len(as_list(as_dict(node.get("spec")).get("drivers"))), age(node, now)]


def _endpoint_slice_cells(eps: Obj, now: datetime) -> Cells:
    ports = []
    for port in dicts(eps.get("ports")):
        number, name = port.get("port"), port.get("name")
        ports.append(str(as_int(number)) if number is not None else as_str(name) if name is not None else "*")
    addresses = [as_str(a) for e in dicts(eps.get("endpoints")) for a in as_list(e.get("addresses"))]
    return [name_of(eps), as_str(eps.get("addressType")), list_with_more(ports, len(ports)) or "<unset>",
            list_with_more(addresses, len(addresses)) or "<unset>", age(eps, now)]


def _webhooks_cells(config: Obj, now: datetime) -> Cells:
    return [name_of(config), len(as_list(config.get("webhooks"))), age(config, now)]


def _lease_cells(lease: Obj, now: datetime) -> Cells:
    return [name_of(lease), as_str(as_dict(lease.get("spec")).get("holderIdentity")), age(lease, now)]


def _created_at_cells(obj: Obj, now: datetime) -> Cells:
    created = parse_time(meta(obj).get("creationTimestamp"))
    # rest.DefaultTableConvertor prints the creation time itself, not an age; Go's zero time when unset.
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created else "0001-01-01T00:00:00Z"
    return [name_of(obj), stamp]


def _simple(*columns: Column) -> tuple[Column, ...]:
    return (NAME, *columns, AGE)


_CONTAINERS = wide("Containers", description="Names of each container in the template.")
_IMAGES = wide("Images", description="Images referenced by each container in the template.")
_SELECTOR = wide("Selector", description="Label query over the pods this object manages.")

BUILTIN_PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "Pod"): POD,
    ("", "Namespace"): Printer(_simple(Column("Status", description="The status of the namespace")),
                               _namespace_cells),
    ("", "Service"): Printer(
        (NAME, Column("Type"), Column("Cluster-IP"), Column("External-IP"), Column("Port(s)"), AGE,
         wide("Selector", description="Route traffic to pods with labels matching this selector.")),
        _service_cells),
    ("", "Endpoints"): Printer(_simple(Column("Endpoints")), _endpoints_cells),
    ("", "ConfigMap"): Printer(_simple(Column("Data", "integer")), _configmap_cells),
    ("", "Secret"): Printer(_simple(Column("Type"), Column("Data", "integer")), _secret_cells),
    ("", "ServiceAccount"): Printer(_simple(Column("Secrets", "integer")), _service_account_cells),
    ("", "Event"): Printer(
        (Column("Last Seen"), Column("Type"), Column("Reason"), Column("Object"), wide("Subobject"),
         wide("Source"), Column("Message"), wide("First Seen"), wide("Count", "integer"),
         Column("Name", priority=1, format="name")),
        _event_cells),
    ("", "PersistentVolume"): Printer(
        (NAME, Column("Capacity"), Column("Access Modes"), Column("Reclaim Policy"), Column("Status"),
         Column("Claim"), Column("StorageClass"), Column("VolumeAttributesClass"), Column("Reason"), AGE,
         wide("VolumeMode")),
        _pv_cells),
    ("", "PersistentVolumeClaim"): Printer(
        (NAME, Column("Status"), Column("Volume"), Column("Capacity"), Column("Access Modes"),
         Column("StorageClass"), Column("VolumeAttributesClass"), AGE, wide("VolumeMode")),
        _pvc_cells),
    ("", "Node"): Printer(
        (NAME, Column("Status"), Column("Roles"), AGE, Column("Version"), wide("Internal-IP"),
         wide("External-IP"), wide("OS-Image"), wide("Kernel-Version"), wide("Container-Runtime")),
        _node_cells),
    ("apps", "Deployment"): Printer(
        (NAME, Column("Ready"), Column("Up-to-date", "integer"), Column("Available", "integer"), AGE,
         _CONTAINERS, _IMAGES, _SELECTOR),
        _deployment_cells),
    ("apps", "ReplicaSet"): Printer(
        (NAME, Column("Desired", "integer"), Column("Current", "integer"), Column("Ready", "integer"), AGE,
         _CONTAINERS, _IMAGES, _SELECTOR),
        _replicaset_cells),
    ("apps", "DaemonSet"): Printer(
        (NAME, Column("Desired", "integer"), Column("Current", "integer"), Column("Ready", "integer"),
         Column("Up-to-date", "integer"), Column("Available", "integer"), Column("Node Selector"), AGE,
         _CONTAINERS, _IMAGES, _SELECTOR),
        _daemonset_cells),
    ("storage.k8s.io", "StorageClass"): Printer(
        _simple(Column("Provisioner"), Column("ReclaimPolicy"), Column("VolumeBindingMode"),
                Column("AllowVolumeExpansion", "boolean")),
        _storage_class_cells),
    ("storage.k8s.io", "CSIDriver"): Printer(
        _simple(Column("AttachRequired", "boolean"), Column("PodInfoOnMount", "boolean"),
                Column("StorageCapacity", "boolean"), Column("TokenRequests"),
                Column("RequiresRepublish", "boolean"), Column("Modes")),
        _csi_driver_cells),
    ("storage.k8s.io", "CSINode"): Printer(_simple(Column("Drivers", "integer")), _csi_node_cells),
    ("discovery.k8s.io", "EndpointSlice"): Printer(
        _simple(Column("AddressType"), Column("Ports"), Column("Endpoints")), _endpoint_slice_cells),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): Printer(
        _simple(Column("Webhooks", "integer")), _webhooks_cells),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): Printer(
        _simple(Column("Webhooks", "integer")), _webhooks_cells),
    ("coordination.k8s.io", "Lease"): Printer(_simple(Column("Holder")), _lease_cells),
    # CRDs have no printer of their own: the generic convertor shows NAME and CREATED AT.
    ("apiextensions.k8s.io", "CustomResourceDefinition"): Printer(
        (NAME, Column("Created At", "date")), _created_at_cells),
}
