"""The defaults the real apiserver fills in, so ``kubectl get -o yaml`` shows what it shows on a cluster.

Kubernetes defaults an object right after decoding it, before validation (the ``SetDefaults_*`` functions
in ``pkg/apis/core/v1/defaults.go``, ``pkg/apis/apps/v1/defaults.go``, ``pkg/apis/storage/v1/defaults.go``
and the apiextensions equivalents), and a few registry strategies add more on create (a Namespace's
``kubernetes.io/metadata.name`` label and ``kubernetes`` finalizer, a Service's IP families). A default only
fills a field that is absent, so defaulting is idempotent and may run again after every patch. Two details
learners trip over are kept: ``imagePullPolicy`` is ``Always`` for ``:latest`` or untagged images and
``IfNotPresent`` otherwise, and ``enableServiceLinks`` and ``serviceAccountName`` appear on Pods but not on
the pod templates of Deployments. ClusterIP allocation, uids, timestamps and resourceVersions are set by
the registry elsewhere.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from meshlab.cluster.resources import ResourceType

Obj = dict[str, Any]


def apply_defaults(rt: ResourceType, obj: Obj) -> Obj:
    """A copy of ``obj`` with the kind's defaults filled in."""
    out = copy.deepcopy(obj)
    default_in_place(rt, out)
    return out


def default_in_place(rt: ResourceType, obj: Obj) -> None:
    """Fill ``obj``'s defaults in place (``prepare`` uses this on its own fresh copy)."""
    fill = _BY_KIND.get((rt.group, rt.kind))
    if fill is not None:
        fill(obj)


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


def _dicts(value: Any) -> list[Obj]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- pods -----------------------------------------------------------------------------------------------


def pull_policy(image: str) -> str:
    """``Always`` when the image names no tag (or ``:latest``) and no digest, else ``IfNotPresent``."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)
    http = probe.get("httpGet")
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _container(container: Obj) -> None:
    image = container.get("image")
    # Kubernetes ignores an image it cannot parse here (validation reports it) and picks IfNotPresent.
    container.setdefault("imagePullPolicy", pull_policy(image) if isinstance(image, str) and image else
                         "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})  # a non-pointer struct: Go always prints it, empty or not
    for port in _dicts(container.get("ports")):
        port.setdefault("protocol", "TCP")
    for env in _dicts(container.get("env")):
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(container.get(key))


_MODE_SOURCES = ("configMap", "secret", "projected", "downwardAPI")


def _volume(volume: Obj) -> None:
    if set(volume) <= {"name"}:
        volume["emptyDir"] = {}  # SetDefaults_Volume: no source at all means an emptyDir
    for key in _MODE_SOURCES:
        source = volume.get(key)
        if isinstance(source, dict):
            source.setdefault("defaultMode", 420)  # 0644
    for source in _dicts((volume.get("projected") or {}).get("sources")):
        token = source.get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)


def _pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("initContainers", "containers"):
        for container in _dicts(spec.get(key)):
            _container(container)
    for volume in _dicts(spec.get("volumes")):
        _volume(volume)


def _pod(obj: Obj) -> None:
    spec = _spec(obj)
    _pod_spec(spec)
    # SetDefaults_Pod (not PodSpec): only Pods get these, never the templates of workloads.
    spec.setdefault("enableServiceLinks", True)
    # The ServiceAccount admission plugin; the deprecated serviceAccount field mirrors it.
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    # The Priority and DefaultTolerationSeconds admission plugins.
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    if isinstance(tolerations, list):
        for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(isinstance(t, dict) and t.get("key") == taint for t in tolerations):
                tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300})
    for key in ("initContainers", "containers"):
        for container in _dicts(spec.get(key)):
            resources = container.get("resources")
            if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
                requests = resources.setdefault("requests", {})
                for name, quantity in resources["limits"].items():
                    requests.setdefault(name, quantity)  # requests default to limits, on Pods only
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", qos_class(spec))


def qos_class(spec: Obj) -> str:
    """``Guaranteed`` when every container's cpu and memory requests equal limits, ``BestEffort`` when no
    container asks for anything, ``Burstable`` otherwise (``pkg/apis/core/helper/qos``)."""
    containers = _dicts(spec.get("containers")) + _dicts(spec.get("initContainers"))
    resources: list[Obj] = [c["resources"] for c in containers if isinstance(c.get("resources"), dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                return "Burstable"
    return "Guaranteed"


def _template(spec: Obj) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        if not isinstance(template.get("spec"), dict):
            template["spec"] = {}
        _pod_spec(template["spec"])


# --- workloads ------------------------------------------------------------------------------------------


def _deployment(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(spec)


def _replica_set(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    _template(spec)


def _daemon_set(obj: Obj) -> None:
    spec = _spec(obj)
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", 1)
                rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _template(spec)


# --- networking -----------------------------------------------------------------------------------------


def _service(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        config = spec.setdefault("sessionAffinityConfig", {})
        if isinstance(config, dict):
            config.setdefault("clientIP", {}).setdefault("timeoutSeconds", 10800)
    for port in _dicts(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            if "port" in port:
                port["targetPort"] = port["port"]
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        # The registry picks the families when it allocates the ClusterIP; the lab is IPv4 single-stack.
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("ipFamilies", ["IPv4"])
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _endpoints(obj: Obj) -> None:
    for subset in _dicts(obj.get("subsets")):
        for port in _dicts(subset.get("ports")):
            port.setdefault("protocol", "TCP")


def _endpoint_slice(obj: Obj) -> None:
    for port in _dicts(obj.get("ports")):
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")


# --- configuration and storage --------------------------------------------------------------------------


def _namespace(obj: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    if meta.get("name"):
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    _spec(obj).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")


def _pvc(obj: Obj) -> None:
    _spec(obj).setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _pv(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _storage_class(obj: Obj) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _csi_driver(obj: Obj) -> None:
    spec = _spec(obj)
    for key, value in (("attachRequired", True), ("podInfoOnMount", False), ("storageCapacity", False),
                       ("requiresRepublish", False), ("fsGroupPolicy", "ReadWriteOnceWithFSType"),
                       ("volumeLifecycleModes", ["Persistent"]), ("seLinuxMount", False)):
        spec.setdefault(key, copy.copy(value))


def _crd(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str) and names["kind"]:
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")


def _webhooks(mutating: bool) -> Callable[[Obj], None]:
    def fill(obj: Obj) -> None:
        for hook in _dicts(obj.get("webhooks")):
            hook.setdefault("failurePolicy", "Fail")
            hook.setdefault("matchPolicy", "Equivalent")
            hook.setdefault("namespaceSelector", {})
            hook.setdefault("objectSelector", {})
            hook.setdefault("timeoutSeconds", 10)
            if mutating:
                hook.setdefault("reinvocationPolicy", "Never")
            for rule in _dicts(hook.get("rules")):
                rule.setdefault("scope", "*")
            service = (hook.get("clientConfig") or {}).get("service")
            if isinstance(service, dict):
                service.setdefault("port", 443)

    return fill


_BY_KIND: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "Endpoints"): _endpoints,
    ("", "Namespace"): _namespace,
    ("", "Secret"): _secret,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "PersistentVolume"): _pv,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _replica_set,
    ("apps", "DaemonSet"): _daemon_set,
    ("discovery.k8s.io", "EndpointSlice"): _endpoint_slice,
    ("storage.k8s.io", "StorageClass"): _storage_class,
    ("storage.k8s.io", "CSIDriver"): _csi_driver,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _webhooks(mutating=True),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _webhooks(mutating=False),
}
