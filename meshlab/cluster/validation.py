"""The semantic checks the apiserver runs on a decoded, defaulted object, with the real causes.

The JSON schema says which fields exist and their types; the Go validation code
(``pkg/apis/core/validation``, ``pkg/apis/apps/validation``, ``pkg/apis/storage/validation`` and
``apiextensions-apiserver/pkg/apis/apiextensions/validation``) says what values make sense: names in DNS
form, label syntax, a Pod's containers, a workload's selector matching its template, a Service's ports,
ConfigMap and Secret keys, a claim's access modes and size, a CRD's names and versions. This module runs
the subset a learner meets, in the same order and with the same field paths (``spec.template.spec.
containers[0].image``) and messages, so the errors read exactly like those of a real cluster.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from meshlab.cluster import fielderrors as fe
from meshlab.cluster.crd_validation import validate_crd
from meshlab.cluster.decoding import QuantityError, parse_quantity
from meshlab.cluster.resources import ResourceType
from meshlab.cluster.selectors import match_label_selector
from meshlab.errors import Cause

Obj = Mapping[str, Any]
_ANNOTATIONS_LIMIT = 256 * 1024
_DATA_LIMIT = 1024 * 1024
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_NONNEGATIVE = "must be greater than or equal to 0"


def validate(rt: ResourceType, obj: Obj) -> list[Cause]:
    """Every cause the real validation would report for ``obj`` (empty when it is valid)."""
    causes = validate_metadata(rt, obj.get("metadata") or {})
    check = _BY_KIND.get((rt.group, rt.kind))
    if check is not None:
        causes += check(obj)
    return causes


def _d(value: Any) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Obj]:
    return [v if isinstance(v, Mapping) else {} for v in value] if isinstance(value, list) else []


# --- metadata -------------------------------------------------------------------------------------------


def validate_metadata(rt: ResourceType, meta: Obj) -> list[Cause]:
    causes: list[Cause] = []
    check = fe.name_checker(rt.kind, rt.group)
    generate = meta.get("generateName") or ""
    if generate:
        # A generated name gets a random suffix, so a trailing dash is fine in the prefix.
        masked = generate[:-1] + "a" if generate.endswith("-") else generate
        causes += [fe.invalid("metadata.generateName", generate, msg) for msg in check(masked)]
    name = meta.get("name") or ""
    if not name and not generate:
        causes.append(fe.required("metadata.name", "name or generateName is required"))
    elif name:
        causes += [fe.invalid("metadata.name", name, msg) for msg in check(name)]
    namespace = meta.get("namespace")
    if rt.namespaced and namespace:
        causes += [fe.invalid("metadata.namespace", namespace, msg) for msg in fe.dns1123_label(namespace)]
    if isinstance(meta.get("generation"), int) and meta["generation"] < 0:
        causes.append(fe.invalid("metadata.generation", meta["generation"], _NONNEGATIVE))
    causes += validate_labels(meta.get("labels"), "metadata.labels")
    annotations = _d(meta.get("annotations"))
    for key in annotations:
        causes += [fe.invalid("metadata.annotations", key, msg) for msg in fe.qualified_name(key.lower())]
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > _ANNOTATIONS_LIMIT:
        causes.append(fe.too_long("metadata.annotations", _ANNOTATIONS_LIMIT))
    return causes


def validate_labels(labels: Any, path: str) -> list[Cause]:
    causes = []
    for key, value in _d(labels).items():
        causes += [fe.invalid(path, key, msg) for msg in fe.qualified_name(key)]
        causes += [fe.invalid(path, value, msg) for msg in fe.label_value(str(value))]
    return causes


def validate_label_selector(selector: Obj, path: str) -> list[Cause]:
    causes = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(_items(selector.get("matchExpressions"))):
        where, op, values = f"{path}.matchExpressions[{i}]", expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn") and not values:
            causes.append(fe.required(f"{where}.values",
                                      "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and values:
            causes.append(fe.forbidden(f"{where}.values",
                                       "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(fe.invalid(f"{where}.operator", op, "not a valid selector operator"))
        key = str(expr.get("key") or "")
        causes += [fe.invalid(f"{where}.key", key, m) for m in fe.qualified_name(key)]
    return causes


# --- pods -----------------------------------------------------------------------------------------------


def validate_pod_spec(spec: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    volumes: set[str] = set()
    for i, volume in enumerate(_items(spec.get("volumes"))):
        name = volume.get("name") or ""
        if not name:
            causes.append(fe.required(f"{path}.volumes[{i}].name"))
        elif name in volumes:
            causes.append(fe.duplicate(f"{path}.volumes[{i}].name", name))
        else:
            causes += [fe.invalid(f"{path}.volumes[{i}].name", name, m) for m in fe.dns1123_label(name)]
        volumes.add(name)
    names: set[str] = set()
    for i, container in enumerate(_items(spec.get("initContainers"))):
        causes += _container(container, f"{path}.initContainers[{i}]", names, volumes)
    containers = _items(spec.get("containers"))
    if not containers:
        causes.append(fe.required(f"{path}.containers"))
    for i, container in enumerate(containers):
        causes += _container(container, f"{path}.containers[{i}]", names, volumes)
    causes += _enum(spec, "restartPolicy", path, ("Always", "OnFailure", "Never"))
    causes += _enum(spec, "dnsPolicy", path, ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"))
    account = spec.get("serviceAccountName")
    if account:
        causes += [fe.invalid(f"{path}.serviceAccountName", account, m)
                   for m in fe.dns1123_subdomain(account)]
    causes += validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        causes.append(fe.invalid(f"{path}.terminationGracePeriodSeconds", grace, _NONNEGATIVE))
    return causes


def _enum(obj: Obj, key: str, path: str, valid: tuple[str, ...]) -> list[Cause]:
    value = obj.get(key)
    if not value:
        return [fe.required(fe.child(path, key))]
    return [] if value in valid else [fe.not_supported(fe.child(path, key), value, valid)]


def _container(container: Obj, path: str, names: set[str], volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = container.get("name") or ""
    if not name:
        causes.append(fe.required(f"{path}.name"))
    else:
        causes += [fe.invalid(f"{path}.name", name, m) for m in fe.dns1123_label(name)]
        if name in names:
            causes.append(fe.duplicate(f"{path}.name", name))
        names.add(name)
    image = container.get("image") or ""
    if not image:
        causes.append(fe.required(f"{path}.image"))
    elif image != image.strip():
        causes.append(fe.invalid(f"{path}.image", image, "must not have leading or trailing whitespace"))
    causes += _container_ports(_items(container.get("ports")), f"{path}.ports")
    for i, env in enumerate(_items(container.get("env"))):
        env_name = env.get("name") or ""
        if not env_name:
            causes.append(fe.required(f"{path}.env[{i}].name"))
        elif "=" in env_name or not all(" " <= ch <= "~" for ch in env_name):
            causes.append(fe.invalid(f"{path}.env[{i}].name", env_name, "a valid environment variable name "
                                     "must consist only of printable ASCII characters other than '='"))
    mounts: set[str] = set()
    for i, mount in enumerate(_items(container.get("volumeMounts"))):
        where = f"{path}.volumeMounts[{i}]"
        mount_name, mount_path = mount.get("name") or "", mount.get("mountPath")
        if not mount_name:
            causes.append(fe.required(f"{where}.name"))
        elif mount_name not in volumes:
            causes.append(fe.not_found(f"{where}.name", mount_name))
        if not mount_path:
            causes.append(fe.required(f"{where}.mountPath"))
        elif mount_path in mounts:
            causes.append(fe.invalid(f"{where}.mountPath", mount_path, "must be unique"))
        mounts.add(mount_path or "")
    causes += _enum(container, "imagePullPolicy", path, ("Always", "IfNotPresent", "Never"))
    causes += _resources(_d(container.get("resources")), f"{path}.resources")
    return causes


def _container_ports(ports: list[Obj], path: str) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        where = f"{path}[{i}]"
        name = port.get("name") or ""
        if name:
            msgs = fe.port_name(name)
            causes += [fe.invalid(f"{where}.name", name, m) for m in msgs]
            if not msgs and name in names:
                causes.append(fe.duplicate(f"{where}.name", name))
            names.add(name)
        number = port.get("containerPort") or 0
        if number == 0:
            causes.append(fe.required(f"{where}.containerPort"))
        else:
            causes += [fe.invalid(f"{where}.containerPort", number, m) for m in fe.port_number(number)]
        if port.get("hostPort"):
            host = port["hostPort"]
            causes += [fe.invalid(f"{where}.hostPort", host, m) for m in fe.port_number(host)]
        causes += _enum(port, "protocol", where, _PROTOCOLS)
    return causes


def _quantity(value: Any) -> Fraction | None:
    try:
        return parse_quantity(value)[0] if isinstance(value, str) else None
    except QuantityError:
        return None


def _resources(resources: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    limits, requests = _d(resources.get("limits")), _d(resources.get("requests"))
    for section, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            amount = _quantity(value)
            if amount is not None and amount < 0:
                causes.append(fe.invalid(f"{path}.{section}[{name}]", value, _NONNEGATIVE))
    for name, value in requests.items():
        request, limit = _quantity(value), _quantity(limits.get(name))
        if request is not None and limit is not None and request > limit:
            causes.append(fe.invalid(f"{path}.requests[{name}]", value,
                                     f"must be less than or equal to {name} limit of {limits[name]}"))
    return causes


def _pod(obj: Obj) -> list[Cause]:
    return validate_pod_spec(_d(obj.get("spec")), "spec")


# --- workloads ------------------------------------------------------------------------------------------


def _nonnegative(spec: Obj, key: str, path: str) -> list[Cause]:
    value = spec.get(key)
    if isinstance(value, int) and value < 0:
        return [fe.invalid(f"{path}.{key}", value, _NONNEGATIVE)]
    return []


def _workload(obj: Obj, kind: str) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes = _nonnegative(spec, "replicas", "spec") + _nonnegative(spec, "minReadySeconds", "spec")
    causes += _nonnegative(spec, "revisionHistoryLimit", "spec")
    selector = spec.get("selector")
    selector_ok = False
    if not isinstance(selector, Mapping):
        causes.append(fe.required("spec.selector"))
    else:
        selector_causes = validate_label_selector(selector, "spec.selector")
        causes += selector_causes
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            causes.append(fe.invalid("spec.selector", dict(selector),
                                     f"empty selector is invalid for {kind.lower()}"))
        else:
            selector_ok = not selector_causes
    template = spec.get("template")
    if not isinstance(template, Mapping):
        causes.append(fe.required("spec.template"))
        return causes
    labels = _d(_d(template.get("metadata")).get("labels"))
    if selector_ok and isinstance(selector, Mapping) and not match_label_selector(selector, labels):
        causes.append(fe.invalid("spec.template.metadata.labels", dict(labels),
                                 "`selector` does not match template `labels`"))
    meta = _d(template.get("metadata"))
    causes += validate_labels(meta.get("labels"), "spec.template.metadata.labels")
    template_spec = _d(template.get("spec"))
    causes += validate_pod_spec(template_spec, "spec.template.spec")
    policy = template_spec.get("restartPolicy")
    if policy and policy != "Always" and policy in ("OnFailure", "Never"):
        causes.append(fe.not_supported("spec.template.spec.restartPolicy", policy, ("Always",)))
    return causes


def _deployment(obj: Obj) -> list[Cause]:
    causes = _workload(obj, "Deployment")
    spec = _d(obj.get("spec"))
    strategy = _d(spec.get("strategy"))
    kind = strategy.get("type")
    if kind not in ("Recreate", "RollingUpdate"):
        causes.append(fe.not_supported("spec.strategy.type", kind, ("Recreate", "RollingUpdate")))
    elif kind == "Recreate" and strategy.get("rollingUpdate") is not None:
        causes.append(fe.forbidden("spec.strategy.rollingUpdate",
                                   "may not be specified when strategy `type` is 'Recreate'"))
    elif kind == "RollingUpdate":
        causes += _rolling_update(_d(strategy.get("rollingUpdate")), "spec.strategy.rollingUpdate")
    deadline, ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds") or 0
    if isinstance(deadline, int) and isinstance(ready, int) and deadline <= ready:
        causes.append(fe.invalid("spec.progressDeadlineSeconds", deadline,
                                 "must be greater than minReadySeconds"))
    return causes


def _int_or_percent(value: Any, path: str) -> tuple[list[Cause], float | None]:
    """(causes, value as a fraction of 100% or as an absolute count) for maxSurge/maxUnavailable."""
    if isinstance(value, int):
        if value < 0:
            return [fe.invalid(path, value, _NONNEGATIVE)], None
        return [], float(value)
    text = str(value)
    msgs = fe.percent(text)
    if msgs:
        return [fe.invalid(path, text, m) for m in msgs], None
    pct = int(text[:-1])
    if pct > 100:
        return [fe.invalid(path, text, "must not be greater than 100%")], None
    return [], float(pct)


def _rolling_update(rolling: Obj, path: str) -> list[Cause]:
    unavailable_causes, unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"),
                                                      f"{path}.maxUnavailable")
    surge_causes, surge = _int_or_percent(rolling.get("maxSurge", "25%"), f"{path}.maxSurge")
    causes = unavailable_causes + surge_causes
    if unavailable == 0 and surge == 0:
        causes.append(fe.invalid(f"{path}.maxUnavailable", rolling.get("maxUnavailable"),
                                 "may not be 0 when `maxSurge` is 0"))
    return causes


def _daemon_set(obj: Obj) -> list[Cause]:
    causes = _workload(obj, "DaemonSet")
    strategy = _d(_d(obj.get("spec")).get("updateStrategy"))
    causes += _enum(strategy, "type", "spec.updateStrategy", ("OnDelete", "RollingUpdate"))
    return causes


# --- services -------------------------------------------------------------------------------------------


def _service(obj: Obj) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes: list[Cause] = []
    kind = spec.get("type")
    headless = spec.get("clusterIP") == "None"
    ports = _items(spec.get("ports"))
    if not ports and not headless and kind != "ExternalName":
        causes.append(fe.required("spec.ports"))
    if kind == "ExternalName":
        if spec.get("clusterIP"):
            causes.append(fe.forbidden("spec.clusterIP", "must be empty for ExternalName services"))
        external = spec.get("externalName") or ""
        if not external:
            causes.append(fe.required("spec.externalName"))
        if external:
            causes += [fe.invalid("spec.externalName", external, m) for m in fe.dns1123_subdomain(external)]
    elif kind in ("NodePort", "LoadBalancer") and headless:
        causes.append(fe.invalid("spec.clusterIP", "None", f"may not be set to 'None' for {kind} services"))
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        name = port.get("name") or ""
        if len(ports) > 1 and not name:
            causes.append(fe.required(f"{where}.name"))
        elif name:
            causes += [fe.invalid(f"{where}.name", name, m) for m in fe.dns1123_label(name)]
            if name in names:
                causes.append(fe.duplicate(f"{where}.name", name))
            names.add(name)
        number = port.get("port") or 0
        causes += [fe.invalid(f"{where}.port", number, m) for m in fe.port_number(number)]
        causes += _enum(port, "protocol", where, _PROTOCOLS)
        target = port.get("targetPort")
        if isinstance(target, int):
            causes += [fe.invalid(f"{where}.targetPort", target, m) for m in fe.port_number(target)]
        elif isinstance(target, str):
            causes += [fe.invalid(f"{where}.targetPort", target, m) for m in fe.port_name(target)]
        if kind == "ClusterIP" and port.get("nodePort"):
            causes.append(fe.forbidden(f"{where}.nodePort", "may not be used when `type` is 'ClusterIP'"))
        key = (port.get("protocol"), number)
        if key in seen:
            causes.append(fe.duplicate(where, {"port": number, "protocol": port.get("protocol")}))
        seen.add(key)
    causes += validate_labels(spec.get("selector"), "spec.selector")
    causes += _enum(spec, "sessionAffinity", "spec", ("ClientIP", "None"))
    causes += _enum(spec, "type", "spec", ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"))
    return causes


# --- configuration --------------------------------------------------------------------------------------


def _keys(data: Any, path: str) -> list[Cause]:
    return [fe.invalid(f"{path}[{key}]", key, m) for key in _d(data) for m in fe.config_key(key)]


def _config_map(obj: Obj) -> list[Cause]:
    data, binary = _d(obj.get("data")), _d(obj.get("binaryData"))
    causes = _keys(data, "data") + _keys(binary, "binaryData")
    causes += [fe.invalid(f"binaryData[{key}]", key, "duplicate of key present in data") for key in binary
               if key in data]
    size = sum(len(str(v)) for v in data.values()) + sum(len(str(v)) * 3 // 4 for v in binary.values())
    if size > _DATA_LIMIT:
        causes.append(fe.too_long("", _DATA_LIMIT))
    return causes


_SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _secret(obj: Obj) -> list[Cause]:
    data = _d(obj.get("data"))
    causes = _keys(data, "data")
    kind = obj.get("type") or "Opaque"
    causes += [fe.required(f"data[{key}]") for key in _SECRET_KEYS.get(kind, ()) if key not in data]
    if kind == "kubernetes.io/service-account-token":
        annotations = _d(_d(obj.get("metadata")).get("annotations"))
        if not annotations.get("kubernetes.io/service-account.name"):
            causes.append(fe.required("metadata.annotations[kubernetes.io/service-account.name]"))
    size = 0
    for value in data.values():
        try:
            size += len(base64.b64decode(str(value)))
        except (binascii.Error, ValueError):
            size += len(str(value))
    if size > _DATA_LIMIT:
        causes.append(fe.too_long("data", _DATA_LIMIT))
    return causes


# --- storage --------------------------------------------------------------------------------------------

_ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
_PV_SOURCES = ("awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "fc",
               "flexVolume", "flocker", "gcePersistentDisk", "glusterfs", "hostPath", "iscsi", "local", "nfs",
               "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos",
               "vsphereVolume")


def _access_modes(spec: Obj, required_detail: str) -> list[Cause]:
    modes = spec.get("accessModes") or []
    if not modes:
        return [fe.required("spec.accessModes", required_detail)]
    return [fe.not_supported("spec.accessModes", m, _ACCESS_MODES) for m in modes if m not in _ACCESS_MODES]


def _pvc(obj: Obj) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes = _access_modes(spec, "at least 1 access mode is required")
    causes += validate_label_selector(_d(spec.get("selector")), "spec.selector")
    storage = _d(_d(spec.get("resources")).get("requests")).get("storage")
    if storage is None:
        causes.append(fe.required("spec.resources[storage]"))
    else:
        amount = _quantity(storage)
        if amount is not None and amount <= 0:
            causes.append(fe.invalid("spec.resources[storage]", storage, "must be greater than zero"))
    causes += _enum(spec, "volumeMode", "spec", ("Block", "Filesystem"))
    return causes


def _pv(obj: Obj) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes: list[Cause] = []
    capacity = _d(spec.get("capacity"))
    if not capacity:
        causes.append(fe.required("spec.capacity"))
    elif "storage" not in capacity or len(capacity) > 1:
        causes.append(fe.not_supported("spec.capacity", dict(capacity), ("storage",)))
    causes += _access_modes(spec, "")
    sources = [key for key in _PV_SOURCES if key in spec]
    if not sources:
        causes.append(fe.required("spec", "must specify a volume type"))
    elif len(sources) > 1:
        causes.append(fe.forbidden(f"spec.{sources[1]}", "may not specify more than 1 volume type"))
    causes += _enum(spec, "persistentVolumeReclaimPolicy", "spec", ("Delete", "Recycle", "Retain"))
    return causes


def _storage_class(obj: Obj) -> list[Cause]:
    causes = [] if obj.get("provisioner") else [fe.required("provisioner")]
    causes += _enum(obj, "reclaimPolicy", "", ("Delete", "Retain"))
    causes += _enum(obj, "volumeBindingMode", "", ("Immediate", "WaitForFirstConsumer"))
    return causes


_BY_KIND: dict[tuple[str, str], Callable[[Obj], list[Cause]]] = {
    ("", "Pod"): _pod,
    ("", "Service"): _service,
    ("", "ConfigMap"): _config_map,
    ("", "Secret"): _secret,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "PersistentVolume"): _pv,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): lambda obj: _workload(obj, "ReplicaSet"),
    ("apps", "DaemonSet"): _daemon_set,
    ("storage.k8s.io", "StorageClass"): _storage_class,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): validate_crd,
}
