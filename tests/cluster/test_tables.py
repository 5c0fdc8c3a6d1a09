"""Server-side printing: the Table the apiserver returns makes ``kubectl get`` look as on a real cluster."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlab.cluster.cells import human_duration, quantity
from meshlab.cluster.resources import BUILTIN, ResourceType, from_crd
from meshlab.cluster.tables import parse_json_path, parse_table_accept, pod_status_reason, to_table
from meshlab.errors import BadRequest

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
RT = {rt.kind: rt for rt in BUILTIN}
KUBECTL_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,"
                  "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(cell: Any) -> str:
    """How kubectl prints one cell (``%v``; a null cell is ``<none>``)."""
    if cell is None:
        return "<none>"
    if isinstance(cell, bool):
        return "true" if cell else "false"
    return str(cell)


def kubectl_get(table: dict[str, Any], *, wide: bool = False) -> tuple[list[str], list[list[str]]]:
    """What ``kubectl get [-o wide]`` prints from a Table: upper-cased names, priority 0 unless wide."""
    columns = table["columnDefinitions"]
    keep = [i for i, column in enumerate(columns) if wide or column["priority"] == 0]
    return ([columns[i]["name"].upper() for i in keep],
            [[shown(row["cells"][i]) for i in keep] for row in table["rows"]])


def meta(name: str, created: str, namespace: str | None = "default", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "resourceVersion": "4242",
                           "creationTimestamp": created, **extra}
    if namespace:
        out["namespace"] = namespace
    return out


# --- realistic objects, as the apiserver stores them ------------------------------------------------------

POD_WEB = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": meta("web-7d4b9c-x2k8p", ago(hours=3, minutes=4), labels={"app": "web"}),
    "spec": {"nodeName": "lab-node", "restartPolicy": "Always", "serviceAccountName": "default",
             "containers": [{"name": "proxy", "image": "meshlab/proxy:1.0"},
                            {"name": "web", "image": "meshlab/web:1.0"}]},
    "status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.1.5", "podIPs": [{"ip": "127.0.1.5"}],
        "startTime": ago(hours=3, minutes=4), "qosClass": "BestEffort",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"},
                       {"type": "ContainersReady", "status": "False"},
                       {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            {"name": "proxy", "image": "meshlab/proxy:1.0", "ready": False, "started": False,
             "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": ago(minutes=3),
                                          "finishedAt": ago(minutes=2)}}},
            {"name": "web", "image": "meshlab/web:1.0", "ready": True, "started": True, "restartCount": 0,
             "state": {"running": {"startedAt": ago(hours=3)}}, "lastState": {}},
        ],
    },
}

NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": meta("lab-node", ago(days=45), namespace=None,
                     labels={"kubernetes.io/hostname": "lab-node",
                             "node-role.kubernetes.io/control-plane": ""}),
    "spec": {},
    "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                              {"type": "Ready", "status": "True"}],
               "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                             {"type": "Hostname", "address": "lab-node"}],
               "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                            "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "meshlab://0.1.0"}},
}

EVENT = {
    "apiVersion": "v1", "kind": "Event",
    "metadata": meta("web-7d4b9c-x2k8p.17d2a3b4c5d6e7f8", ago(minutes=5)),
    "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-7d4b9c-x2k8p", "uid": "uid-web",
                       "apiVersion": "v1", "fieldPath": "spec.containers{web}"},
    "reason": "Pulled", "message": 'Container image "meshlab/web:1.0" already present on machine\n',
    "source": {"component": "kubelet", "host": "lab-node"}, "type": "Normal", "count": 3,
    "firstTimestamp": ago(minutes=5), "lastTimestamp": ago(seconds=45), "eventTime": None,
    "reportingComponent": "kubelet", "reportingInstance": "lab-node",
}

CONTAINERS = {"containers": [{"name": "web", "image": "meshlab/web:1.0"},
                             {"name": "proxy", "image": "meshlab/proxy:1.0"}]}

KINDS = [
    pytest.param(
        "Pod", POD_WEB,
        (["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
         ["web-7d4b9c-x2k8p", "1/2", "CrashLoopBackOff", "3 (2m ago)", "3h4m"]),
        (["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
         ["web-7d4b9c-x2k8p", "1/2", "CrashLoopBackOff", "3 (2m ago)", "3h4m", "127.0.1.5", "lab-node",
          "<none>", "<none>"]),
        id="pods"),
    pytest.param(
        "Namespace",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta("default", ago(days=45), namespace=None),
         "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}},
        (["NAME", "STATUS", "AGE"], ["default", "Active", "45d"]), None, id="namespaces"),
    pytest.param(
        "Service",
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("web", ago(minutes=5, seconds=2)),
         "spec": {"type": "ClusterIP", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
                  "ipFamilies": ["IPv4"], "selector": {"app": "web", "tier": "front"},
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
         "status": {"loadBalancer": {}}},
        (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
         ["web", "ClusterIP", "10.96.12.34", "<none>", "80/TCP", "5m2s"]),
        (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"],
         ["web", "ClusterIP", "10.96.12.34", "<none>", "80/TCP", "5m2s", "app=web,tier=front"]),
        id="services"),
    pytest.param(
        "Endpoints",
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web", ago(minutes=5)),
         "subsets": [{"addresses": [{"ip": f"127.0.0.{i}"} for i in range(5, 10)],
                      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]},
        (["NAME", "ENDPOINTS", "AGE"],
         ["web", "127.0.0.5:8080,127.0.0.6:8080,127.0.0.7:8080 + 2 more...", "5m"]), None, id="endpoints"),
    pytest.param(
        "ConfigMap",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("mesh-config", ago(hours=26)),
         "data": {"mesh.yaml": "mtls: STRICT\n", "version": "2"}, "binaryData": {"logo.png": "iVBORw0KGgo="}},
        (["NAME", "DATA", "AGE"], ["mesh-config", "3", "26h"]), None, id="configmaps"),
    pytest.param(
        "Secret",
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("db-credentials", ago(days=3)),
         "type": "Opaque", "data": {"username": "YWRtaW4=", "password": "czNjcjN0"}},
        (["NAME", "TYPE", "DATA", "AGE"], ["db-credentials", "Opaque", "2", "3d"]), None, id="secrets"),
    pytest.param(
        "ServiceAccount",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("default", ago(days=45))},
        (["NAME", "SECRETS", "AGE"], ["default", "0", "45d"]), None, id="serviceaccounts"),
    pytest.param(
        "Event", EVENT,
        (["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
         ["45s", "Normal", "Pulled", "pod/web-7d4b9c-x2k8p",
          'Container image "meshlab/web:1.0" already present on machine']),
        (["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT",
          "NAME"],
         ["45s", "Normal", "Pulled", "pod/web-7d4b9c-x2k8p", "spec.containers{web}", "kubelet, lab-node",
          'Container image "meshlab/web:1.0" already present on machine', "5m", "3",
          "web-7d4b9c-x2k8p.17d2a3b4c5d6e7f8"]),
        id="events"),
    pytest.param(
        "PersistentVolume",
        {"apiVersion": "v1", "kind": "PersistentVolume",
         "metadata": meta("pv-data", ago(days=10), namespace=None),
         "spec": {"capacity": {"storage": "1024Mi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                  "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "nfs",
                  "volumeMode": "Filesystem",
                  "nfs": {"server": "127.0.0.1", "path": "/exports/data"},
                  "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data"}},
         "status": {"phase": "Bound"}},
        (["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS",
          "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"],
         ["pv-data", "1Gi", "RWO,RWX", "Retain", "Bound", "default/data", "nfs", "<unset>", "", "10d"]),
        (["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS",
          "VOLUMEATTRIBUTESCLASS", "REASON", "AGE", "VOLUMEMODE"],
         ["pv-data", "1Gi", "RWO,RWX", "Retain", "Bound", "default/data", "nfs", "<unset>", "", "10d",
          "Filesystem"]),
        id="persistentvolumes"),
    pytest.param(
        "PersistentVolumeClaim",
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data", ago(days=2, hours=3)),
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}},
                  "storageClassName": "nfs", "volumeMode": "Filesystem", "volumeName": "pv-data"},
         "status": {"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "1Gi"}}},
        (["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
          "AGE"],
         ["data", "Bound", "pv-data", "1Gi", "RWX", "nfs", "<unset>", "2d3h"]),
        (["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
          "AGE", "VOLUMEMODE"],
         ["data", "Bound", "pv-data", "1Gi", "RWX", "nfs", "<unset>", "2d3h", "Filesystem"]),
        id="persistentvolumeclaims"),
    pytest.param(
        "Node", NODE,
        (["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
         ["lab-node", "Ready", "control-plane", "45d", "v1.33.0"]),
        (["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
          "KERNEL-VERSION", "CONTAINER-RUNTIME"],
         ["lab-node", "Ready", "control-plane", "45d", "v1.33.0", "127.0.0.1", "<none>",
          "Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64", "meshlab://0.1.0"]),
        id="nodes"),
    pytest.param(
        "Deployment",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", ago(hours=3, minutes=4)),
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": CONTAINERS}},
         "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}},
        (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["web", "2/3", "3", "2", "3h4m"]),
        (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
         ["web", "2/3", "3", "2", "3h4m", "web,proxy", "meshlab/web:1.0,meshlab/proxy:1.0", "app=web"]),
        id="deployments"),
    pytest.param(
        "ReplicaSet",
        {"apiVersion": "apps/v1", "kind": "ReplicaSet",
         "metadata": meta("web-7d4b9c", ago(hours=3, minutes=4)),
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": CONTAINERS}},
         "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2}},
        (["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["web-7d4b9c", "3", "3", "2", "3h4m"]),
        (["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
         ["web-7d4b9c", "3", "3", "2", "3h4m", "web,proxy", "meshlab/web:1.0,meshlab/proxy:1.0",
          "app=web,pod-template-hash=7d4b9c"]),
        id="replicasets"),
    pytest.param(
        "DaemonSet",
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("csi-nfs-node", ago(minutes=45)),
         "spec": {"selector": {"matchLabels": {"app": "csi-nfs-node"}},
                  "template": {"metadata": {"labels": {"app": "csi-nfs-node"}},
                               "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                        "containers": [{"name": "node", "image": "meshlab/csi-nfs:0.1"}]}}},
         "status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1,
                    "updatedNumberScheduled": 1, "numberAvailable": 1, "numberMisscheduled": 0}},
        (["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"],
         ["csi-nfs-node", "1", "1", "1", "1", "1", "kubernetes.io/os=linux", "45m"]),
        (["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE",
          "CONTAINERS", "IMAGES", "SELECTOR"],
         ["csi-nfs-node", "1", "1", "1", "1", "1", "kubernetes.io/os=linux", "45m", "node",
          "meshlab/csi-nfs:0.1", "app=csi-nfs-node"]),
        id="daemonsets"),
    pytest.param(
        "StorageClass",
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": meta("nfs", ago(days=10), namespace=None,
                          annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
         "provisioner": "nfs.csi.meshlab.io", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
         "allowVolumeExpansion": True, "parameters": {"server": "127.0.0.1", "share": "/exports"}},
        (["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"],
         ["nfs (default)", "nfs.csi.meshlab.io", "Delete", "Immediate", "true", "10d"]), None,
        id="storageclasses"),
    pytest.param(
        "CSIDriver",
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
         "metadata": meta("nfs.csi.meshlab.io", ago(days=10), namespace=None),
         "spec": {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "File",
                  "volumeLifecycleModes": ["Persistent", "Ephemeral"],
                  "tokenRequests": [{"audience": "meshlab"}]}},
        (["NAME", "ATTACHREQUIRED", "PODINFOONMOUNT", "STORAGECAPACITY", "TOKENREQUESTS", "REQUIRESREPUBLISH",
          "MODES", "AGE"],
         ["nfs.csi.meshlab.io", "false", "true", "false", "meshlab", "false", "Persistent,Ephemeral", "10d"]),
        None, id="csidrivers"),
    pytest.param(
        "CSINode",
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
         "metadata": meta("lab-node", ago(days=45), None),
         "spec": {"drivers": [{"name": "nfs.csi.meshlab.io", "nodeID": "lab-node", "topologyKeys": None}]}},
        (["NAME", "DRIVERS", "AGE"], ["lab-node", "1", "45d"]), None, id="csinodes"),
    pytest.param(
        "EndpointSlice",
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": meta("web-x7f2q", ago(minutes=5), labels={"kubernetes.io/service-name": "web"}),
         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["127.0.0.5"], "conditions": {"ready": True}},
                       {"addresses": ["127.0.0.6"], "conditions": {"ready": True}}]},
        (["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
         ["web-x7f2q", "IPv4", "8080", "127.0.0.5,127.0.0.6", "5m"]), None, id="endpointslices"),
    pytest.param(
        "CustomResourceDefinition",
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
         "metadata": meta("virtualservices.networking.istio.io", "2025-05-01T12:00:00Z", namespace=None),
         "spec": {"group": "networking.istio.io", "scope": "Namespaced", "versions": []}},
        (["NAME", "CREATED AT"], ["virtualservices.networking.istio.io", "2025-05-01T12:00:00Z"]), None,
        id="customresourcedefinitions"),
    pytest.param(
        "MutatingWebhookConfiguration",
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": meta("istio-sidecar-injector", ago(minutes=9, seconds=59), namespace=None),
         "webhooks": [{"name": "sidecar-injector.istio.io", "admissionReviewVersions": ["v1"],
                       "sideEffects": "None",
                       "clientConfig": {"service": {"name": "pilot", "namespace": "istio"}}}]},
        (["NAME", "WEBHOOKS", "AGE"], ["istio-sidecar-injector", "1", "9m59s"]), None,
        id="mutatingwebhookconfigurations"),
    pytest.param(
        "ValidatingWebhookConfiguration",
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": meta("istio-validator", ago(hours=8), namespace=None),
         "webhooks": [{"name": "a.istio.io"}, {"name": "b.istio.io"}]},
        (["NAME", "WEBHOOKS", "AGE"], ["istio-validator", "2", "8h"]), None,
        id="validatingwebhookconfigurations"),
    pytest.param(
        "Lease",
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": meta("lab-node", ago(days=45), namespace="kube-node-lease"),
         "spec": {"holderIdentity": "lab-node", "leaseDurationSeconds": 40, "renewTime": ago(seconds=3)}},
        (["NAME", "HOLDER", "AGE"], ["lab-node", "lab-node", "45d"]), None, id="leases"),
    pytest.param(
        "TokenReview",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {"name": "r"}},
        (["NAME", "AGE"], ["r", "<unknown>"]), None, id="kinds-without-printer"),
]


@pytest.mark.parametrize(("kind", "obj", "default", "wide"), KINDS)
def test_kubectl_get_shows_the_columns_and_cells_of_a_real_cluster(
        kind: str, obj: dict[str, Any], default: tuple[list[str], list[str]],
        wide: tuple[list[str], list[str]] | None) -> None:
    table = to_table(RT[kind], [obj], now=NOW)
    assert kubectl_get(table) == (default[0], [default[1]])
    wide = wide or default
    assert kubectl_get(table, wide=True) == (wide[0], [wide[1]])


@pytest.mark.parametrize(("kind", "obj", "default", "wide"), KINDS)
def test_cells_have_the_json_type_their_column_declares(
        kind: str, obj: dict[str, Any], default: Any, wide: Any) -> None:
    table = to_table(RT[kind], [obj], now=NOW)
    python_types = {"string": str, "date": str, "integer": int, "boolean": bool}
    for column, cell in zip(table["columnDefinitions"], table["rows"][0]["cells"], strict=True):
        assert type(cell) is python_types[column["type"]], column["name"]
        assert set(column) == {"name", "type", "format", "description", "priority"}
    assert table["columnDefinitions"][0 if kind != "Event" else 9]["format"] == "name"


@pytest.mark.parametrize(("kind", "wide_only"), [
    pytest.param("Pod", ["IP", "Node", "Nominated Node", "Readiness Gates"], id="pods"),
    pytest.param("Service", ["Selector"], id="services"),
    pytest.param("Node", ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"],
                 id="nodes"),
    pytest.param("Deployment", ["Containers", "Images", "Selector"], id="deployments"),
    pytest.param("ReplicaSet", ["Containers", "Images", "Selector"], id="replicasets"),
    pytest.param("DaemonSet", ["Containers", "Images", "Selector"], id="daemonsets"),
    pytest.param("Event", ["Subobject", "Source", "First Seen", "Count", "Name"], id="events"),
    pytest.param("PersistentVolume", ["VolumeMode"], id="persistentvolumes"),
    pytest.param("PersistentVolumeClaim", ["VolumeMode"], id="persistentvolumeclaims"),
    pytest.param("ConfigMap", [], id="configmaps"),
])
def test_wide_only_columns_have_priority_one(kind: str, wide_only: list[str]) -> None:
    columns = to_table(RT[kind], [], now=NOW)["columnDefinitions"]
    assert [c["name"] for c in columns if c["priority"] == 1] == wide_only
    assert {c["priority"] for c in columns} <= {0, 1}


# --- pods ---------------------------------------------------------------------------------------------

def pod(phase: str = "Running", *, statuses: list[dict[str, Any]] | None = None,
        init: list[dict[str, Any]] | None = None, init_specs: list[dict[str, Any]] | None = None,
        conditions: list[dict[str, Any]] | None = None, deleting: bool = False,
        reason: str | None = None, containers: int = 1) -> dict[str, Any]:
    metadata = meta("p", ago(minutes=1))
    if deleting:
        metadata["deletionTimestamp"] = ago(seconds=5)
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or [],
                              "containerStatuses": statuses or []}
    if init is not None:
        status["initContainerStatuses"] = init
    if reason:
        status["reason"] = reason
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": f"c{i}", "image": "meshlab/app:1"} for i in range(containers)],
                     "initContainers": init_specs or [{"name": f"i{i}", "image": "meshlab/app:1"}
                                                      for i in range(len(init or []))]},
            "status": status}


def waiting(reason: str, **kw: Any) -> dict[str, Any]:
    return {"name": "c0", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": reason}}, **kw}


def terminated(reason: str | None, exit_code: int, name: str = "c0", **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": exit_code, "finishedAt": ago(seconds=10), **extra}
    if reason:
        state["reason"] = reason
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": state}}


def running(name: str = "c0", ready: bool = True) -> dict[str, Any]:
    return {"name": name, "ready": ready, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": ago(seconds=30)}}}


READY = [{"type": "Ready", "status": "True"}]
NOT_READY = [{"type": "Ready", "status": "False"}]


POD_REASONS = [
    pytest.param(pod("Pending"), "Pending", id="pending-unscheduled"),
    pytest.param(pod("Pending", statuses=[waiting("ContainerCreating")]), "ContainerCreating",
                 id="container-creating"),
    pytest.param(pod(statuses=[running()], conditions=READY), "Running", id="running"),
    pytest.param(pod(statuses=[waiting("CrashLoopBackOff", restartCount=4)]), "CrashLoopBackOff",
                 id="crash-loop"),
    pytest.param(pod("Pending", statuses=[waiting("ErrImagePull")]), "ErrImagePull", id="err-image-pull"),
    pytest.param(pod("Pending", statuses=[waiting("ImagePullBackOff")]), "ImagePullBackOff",
                 id="image-pull-back-off"),
    pytest.param(pod("Succeeded", statuses=[terminated("Completed", 0)]), "Completed", id="completed"),
    pytest.param(pod("Failed", statuses=[terminated("Error", 1)]), "Error", id="error"),
    pytest.param(pod("Failed", statuses=[terminated("OOMKilled", 137)]), "OOMKilled", id="oom-killed"),
    pytest.param(pod("Failed", statuses=[terminated(None, 3)]), "ExitCode:3", id="exit-code-without-reason"),
    pytest.param(pod("Failed", statuses=[terminated(None, 137, signal=9)]), "Signal:9", id="signal"),
    pytest.param(pod("Pending", init=[running("i0", ready=False)], statuses=[waiting("PodInitializing")]),
                 "Init:0/1", id="init-running"),
    pytest.param(pod("Pending", init=[terminated("Completed", 0, name="i0"), running("i1", ready=False)],
                     statuses=[waiting("PodInitializing")]),
                 "Init:1/2", id="second-init-running"),
    pytest.param(pod("Pending", init=[waiting("CrashLoopBackOff", name="i0")]), "Init:CrashLoopBackOff",
                 id="init-crash-loop"),
    pytest.param(pod("Pending", init=[terminated("Error", 1, name="i0")]), "Init:Error", id="init-error"),
    pytest.param(pod("Pending", init=[terminated(None, 2, name="i0")]), "Init:ExitCode:2",
                 id="init-exit-code"),
    pytest.param(pod("Pending", init=[terminated("Completed", 0, name="i0")],
                     statuses=[waiting("PodInitializing")],
                     conditions=[{"type": "Initialized", "status": "True"}]),
                 "PodInitializing", id="pod-initializing"),
    pytest.param(pod(statuses=[running()], conditions=READY, deleting=True), "Terminating", id="terminating"),
    pytest.param(pod("Succeeded", statuses=[terminated("Completed", 0)], deleting=True), "Completed",
                 id="finished-pods-are-not-terminating"),
    pytest.param(pod(statuses=[running()], deleting=True, reason="NodeLost"), "Unknown", id="node-lost"),
    pytest.param(pod(statuses=[terminated("Completed", 0, name="c0"), running("c1")], conditions=NOT_READY,
                     containers=2),
                 "NotReady", id="not-ready-after-one-container-completed"),
    pytest.param(pod(statuses=[terminated("Completed", 0, name="c0"), running("c1")], conditions=READY,
                     containers=2),
                 "Running", id="running-after-one-container-completed"),
    pytest.param(pod("Failed", reason="Evicted"), "Evicted", id="evicted"),
    pytest.param(pod("Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                             "reason": "SchedulingGated"}]),
                 "SchedulingGated", id="scheduling-gated"),
    pytest.param({}, "", id="empty-object"),
]


@pytest.mark.parametrize(("obj", "expected"), POD_REASONS)
def test_pod_status_reason(obj: dict[str, Any], expected: str) -> None:
    assert pod_status_reason(obj) == expected


def test_native_sidecars_count_as_containers_and_started_ones_do_not_block_init() -> None:
    sidecar = {"name": "proxy", "image": "meshlab/proxy:1", "restartPolicy": "Always"}
    obj = pod(init=[running("proxy")], init_specs=[sidecar], statuses=[running("c0")], conditions=READY)
    cells = to_table(RT["Pod"], [obj], now=NOW)["rows"][0]["cells"]
    assert cells[1:4] == ["2/2", "Running", "0"]


@pytest.mark.parametrize(("statuses", "restarts"), [
    pytest.param([running()], "0", id="never-restarted"),
    pytest.param([{**running(), "restartCount": 5}], "5", id="restarted-without-last-state"),
    pytest.param([{**running(), "restartCount": 1,
                   "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(hours=2, minutes=1)}}},
                  {**running("c1"), "restartCount": 2,
                   "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(seconds=90)}}}],
                 "3 (90s ago)", id="sum-and-most-recent-restart"),
])
def test_restarts_column(statuses: list[dict[str, Any]], restarts: str) -> None:
    obj = pod(statuses=statuses, conditions=READY, containers=len(statuses))
    assert to_table(RT["Pod"], [obj], now=NOW)["rows"][0]["cells"][3] == restarts


@pytest.mark.parametrize(("phase", "conditions"), [
    pytest.param("Succeeded", [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                "message": "The pod has completed successfully."}], id="succeeded"),
    pytest.param("Failed", [{"type": "Completed", "status": "True", "reason": "Failed",
                             "message": "The pod failed."}], id="failed"),
    pytest.param("Running", None, id="running"),
])
def test_finished_pods_carry_a_completed_row_condition(phase: str, conditions: Any) -> None:
    row = to_table(RT["Pod"], [pod(phase)], now=NOW)["rows"][0]
    assert row.get("conditions") == conditions


def test_readiness_gates_count_true_conditions() -> None:
    obj = pod(statuses=[running()], conditions=[*READY, {"type": "lab.io/synced", "status": "True"},
                                                {"type": "lab.io/warm", "status": "False"}])
    obj["spec"]["readinessGates"] = [{"conditionType": "lab.io/synced"}, {"conditionType": "lab.io/warm"}]
    assert to_table(RT["Pod"], [obj], now=NOW)["rows"][0]["cells"][8] == "1/2"


# --- other kinds' cell rules --------------------------------------------------------------------------

def service(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta("s", ago(minutes=1)),
            "spec": spec, "status": status or {"loadBalancer": {}}}


@pytest.mark.parametrize(("obj", "cells"), [
    pytest.param(service({"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                          "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                    {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}),
                 ["NodePort", "10.96.0.7", "<none>", "80:30080/TCP,53:30053/UDP"], id="node-port"),
    pytest.param(service({"type": "LoadBalancer", "clusterIPs": ["10.96.0.8"],
                          "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
                 ["LoadBalancer", "10.96.0.8", "<pending>", "443:31443/TCP"], id="load-balancer-pending"),
    pytest.param(service({"type": "LoadBalancer", "clusterIPs": ["10.96.0.8"],
                          "externalIPs": ["198.51.100.1"], "ports": [{"port": 443, "protocol": "TCP"}]},
                         {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"hostname": "lb.example"}]}}),
                 ["LoadBalancer", "10.96.0.8", "203.0.113.10,lb.example,198.51.100.1", "443/TCP"],
                 id="load-balancer-with-ingress"),
    pytest.param(service({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                          "selector": {"app": "db"}, "ports": [{"port": 5432, "protocol": "TCP"}]}),
                 ["ClusterIP", "None", "<none>", "5432/TCP"], id="headless"),
    pytest.param(service({"type": "ExternalName", "externalName": "db.example.com"}),
                 ["ExternalName", "<none>", "db.example.com", "<none>"], id="external-name"),
    pytest.param(service({"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}),
                 ["ClusterIP", "10.96.0.9", "<none>", "80/TCP"], id="undefaulted-object"),
])
def test_service_cells(obj: dict[str, Any], cells: list[str]) -> None:
    assert to_table(RT["Service"], [obj], now=NOW)["rows"][0]["cells"][1:5] == cells


@pytest.mark.parametrize(("subsets", "cell"), [
    pytest.param([], "<none>", id="no-subsets"),
    pytest.param([{"addresses": [{"ip": "127.0.0.5"}], "ports": [{"port": 80}, {"port": 443}]}],
                 "127.0.0.5:80,127.0.0.5:443", id="each-port-of-each-address"),
    pytest.param([{"addresses": [{"ip": "127.0.0.5"}, {"ip": "127.0.0.6"}]}], "127.0.0.5,127.0.0.6",
                 id="headless-without-ports"),
    pytest.param([{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 80}]}], "[fd00::5]:80", id="ipv6"),
    pytest.param([{"notReadyAddresses": [{"ip": "127.0.0.5"}], "ports": [{"port": 80}]}], "",
                 id="only-not-ready"),
])
def test_endpoints_cell(subsets: list[Any], cell: str) -> None:
    obj = {"metadata": meta("e", ago(minutes=1)), "subsets": subsets}
    assert to_table(RT["Endpoints"], [obj], now=NOW)["rows"][0]["cells"][1] == cell


@pytest.mark.parametrize(("conditions", "unschedulable", "status"), [
    pytest.param([{"type": "Ready", "status": "True"}], True, "Ready,SchedulingDisabled", id="cordoned"),
    pytest.param([{"type": "Ready", "status": "False"}], False, "NotReady", id="not-ready"),
    pytest.param([{"type": "Ready", "status": "Unknown"}], False, "NotReady", id="unknown-is-not-ready"),
    pytest.param([], False, "Unknown", id="no-ready-condition"),
])
def test_node_status(conditions: list[Any], unschedulable: bool, status: str) -> None:
    obj = {"metadata": meta("n", ago(days=1), None), "spec": {"unschedulable": unschedulable},
           "status": {"conditions": conditions}}
    assert to_table(RT["Node"], [obj], now=NOW)["rows"][0]["cells"][1] == status


def test_pending_claim_shows_no_capacity_and_a_terminating_one_says_so() -> None:
    pending = {"metadata": meta("c", ago(minutes=1)), "status": {"phase": "Pending"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                        "storageClassName": "nfs"}}
    deleting = {**pending, "metadata": {**pending["metadata"], "deletionTimestamp": ago(seconds=1)}}
    rows = to_table(RT["PersistentVolumeClaim"], [pending, deleting], now=NOW)["rows"]
    assert rows[0]["cells"][1:6] == ["Pending", "", "", "", "nfs"]
    assert rows[1]["cells"][1] == "Terminating"


@pytest.mark.parametrize(("selector", "deployment", "replicaset"), [
    pytest.param({"matchLabels": {"tier": "front", "app": "web"},
                  "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                       {"key": "canary", "operator": "DoesNotExist"}]},
                 "app=web,!canary,env in (dev,prod),tier=front",
                 "app=web,!canary,env in (dev,prod),tier=front",
                 id="labels-and-expressions-sorted-by-key"),
    pytest.param({}, "", "<none>", id="empty"),
    pytest.param({"matchExpressions": [{"key": "x", "operator": "Near"}]}, "<invalid>", "<error>",
                 id="invalid-operator"),
])
def test_selector_cells(selector: dict[str, Any], deployment: str, replicaset: str) -> None:
    obj = {"metadata": meta("w", ago(minutes=1)), "spec": {"selector": selector}}
    assert to_table(RT["Deployment"], [obj], now=NOW)["rows"][0]["cells"][7] == deployment
    assert to_table(RT["ReplicaSet"], [obj], now=NOW)["rows"][0]["cells"][7] == replicaset


def test_events_of_the_events_api_use_event_time_and_series() -> None:
    event = {"metadata": meta("e", ago(minutes=20)), "type": "Warning", "reason": "BackOff",
             "involvedObject": {"kind": "Pod", "name": "web"}, "reportingController": "meshlab/kubelet",
             "eventTime": (NOW - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
             "series": {"count": 7, "lastObservedTime": ago(seconds=30)}, "message": "Back-off restarting"}
    cells = to_table(RT["Event"], [event], now=NOW)["rows"][0]["cells"]
    assert cells == ["30s", "Warning", "BackOff", "pod/web", "", "meshlab/kubelet", "Back-off restarting",
                     "20m", 7, "e"]


# --- custom resources ---------------------------------------------------------------------------------

def widget_type(columns: list[Any] | None) -> ResourceType:
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}
    if columns is not None:
        version["additionalPrinterColumns"] = columns
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.lab.meshlab.io"},
           "spec": {"group": "lab.meshlab.io", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [version]}}
    return from_crd(crd)[0]


WIDGET_COLUMNS: list[dict[str, Any]] = [
    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts"},
    {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused", "priority": 1},
    {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio", "priority": 1, "format": "float"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
WIDGET = {"apiVersion": "lab.meshlab.io/v1", "kind": "Widget",
          "metadata": meta("w1", ago(minutes=5, seconds=2)),
          "spec": {"size": 3, "hosts": ["a.lab", "b.lab"], "paused": False, "ratio": 0.5},
          "status": {"conditions": [{"type": "Progressing", "status": "True"},
                                    {"type": "Ready", "status": "False"}]}}


def test_crd_printer_columns_follow_name() -> None:
    empty = {"metadata": meta("empty", ago(seconds=3))}
    table = to_table(widget_type(WIDGET_COLUMNS), [WIDGET, empty], now=NOW)
    assert kubectl_get(table) == (["NAME", "SIZE", "READY", "HOSTS", "AGE"],
                                  [["w1", "3", "False", '["a.lab","b.lab"]', "5m2s"],
                                   ["empty", "<none>", "<none>", "<none>", "3s"]])
    assert kubectl_get(table, wide=True)[0] == ["NAME", "SIZE", "READY", "HOSTS", "PAUSED", "RATIO", "AGE"]
    assert table["rows"][0]["cells"] == ["w1", 3, "False", '["a.lab","b.lab"]', False, 0.5, "5m2s"]
    ratio = table["columnDefinitions"][5]
    assert (ratio["type"], ratio["format"], ratio["priority"]) == ("number", "float", 1)
    assert table["columnDefinitions"][1]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.size")


def test_crd_without_printer_columns_shows_name_and_age() -> None:
    table = to_table(widget_type(None), [WIDGET], now=NOW)
    assert kubectl_get(table) == (["NAME", "AGE"], [["w1", "5m2s"]])
    assert table["columnDefinitions"][1]["type"] == "date"


@pytest.mark.parametrize(("kind", "value", "cell"), [
    pytest.param("integer", 2.9, 2, id="integer-from-float-truncates"),
    pytest.param("integer", "3", None, id="integer-from-string-is-null"),
    pytest.param("integer", True, None, id="integer-from-bool-is-null"),
    pytest.param("number", 2, 2.0, id="number-from-int"),
    pytest.param("boolean", "true", None, id="boolean-from-string-is-null"),
    pytest.param("string", 7, "7", id="string-from-int"),
    pytest.param("string", 1234567.0, "1.234567e+06", id="string-from-large-float-as-go-prints-it"),
    pytest.param("string", 0.25, "0.25", id="string-from-float"),
    pytest.param("string", True, "true", id="string-from-bool"),
    pytest.param("string", {"b": 1, "a": "<x>"}, '{"a":"\\u003cx\\u003e","b":1}', id="string-from-object"),
    pytest.param("string", None, "<no value>", id="string-from-null"),
    pytest.param("date", ago(days=2, hours=3), "2d3h", id="date-as-age"),
    pytest.param("date", "yesterday", "<invalid>", id="date-unparsable"),
    pytest.param("date", 5, None, id="date-from-number-is-null"),
])
def test_crd_cells_are_converted_to_the_column_type(kind: str, value: Any, cell: Any) -> None:
    rt = widget_type([{"name": "X", "type": kind, "jsonPath": ".spec.x"}])
    obj = {"metadata": meta("w", ago(seconds=1)), "spec": {"x": value}}
    assert to_table(rt, [obj], now=NOW)["rows"][0]["cells"] == ["w", cell]


POD_LIKE = {"metadata": {"name": "p", "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.mark.parametrize(("path", "found"), [
    pytest.param(".metadata.name", ["p"], id="field"),
    pytest.param("{.metadata.name}", ["p"], id="braces"),
    pytest.param("$.metadata.name", ["p"], id="dollar"),
    pytest.param(r".metadata.labels.app\.kubernetes\.io/name", ["web"], id="escaped-dots"),
    pytest.param(".metadata.labels['app.kubernetes.io/name']", ["web"], id="quoted-key"),
    pytest.param(".spec.ports[1].port", [9000], id="index"),
    pytest.param(".spec.ports[-1].name", ["admin"], id="negative-index"),
    pytest.param(".spec.ports[*].port", [80, 9000], id="wildcard"),
    pytest.param(".spec.ports[?(@.port>8000)].name", ["admin"], id="numeric-filter"),
    pytest.param(".spec.ports[?(@.name!='http')].port", [9000], id="not-equal-filter"),
    pytest.param('.status.conditions[?(@.type=="Ready")].status', ["True"], id="condition-filter"),
    pytest.param(".spec.ports[5].port", [], id="index-out-of-range"),
    pytest.param(".spec.missing.deeper", [], id="missing"),
])
def test_json_path_subset(path: str, found: list[Any]) -> None:
    from meshlab.cluster.tables import _evaluate  # the evaluator is private; its results are the contract

    steps = parse_json_path(path)
    assert steps is not None
    assert _evaluate(steps, [POD_LIKE]) == found


@pytest.mark.parametrize("path", ["..name", ".spec[", ".spec[1:2]", "spec", ".a[?(@.b~=1)]"])
def test_unsupported_json_path_gives_null_cells(path: str) -> None:
    assert parse_json_path(path) is None
    rt = widget_type([{"name": "X", "type": "string", "jsonPath": path}])
    assert to_table(rt, [WIDGET], now=NOW)["rows"][0]["cells"] == ["w1", None]


# --- ages and quantities ------------------------------------------------------------------------------

@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=-3), "<invalid>"), (timedelta(seconds=-2), "<invalid>"),
    (timedelta(seconds=-1.5), "0s"), (timedelta(seconds=-1), "0s"), (timedelta(0), "0s"),
    (timedelta(seconds=45), "45s"), (timedelta(seconds=119), "119s"), (timedelta(seconds=120), "2m"),
    (timedelta(minutes=5, seconds=2), "5m2s"), (timedelta(minutes=9, seconds=59), "9m59s"),
    (timedelta(minutes=10), "10m"), (timedelta(minutes=10, seconds=30), "10m"),
    (timedelta(minutes=179, seconds=59), "179m"), (timedelta(hours=3), "3h"),
    (timedelta(hours=3, minutes=4), "3h4m"), (timedelta(hours=7, minutes=59), "7h59m"),
    (timedelta(hours=8, minutes=30), "8h"), (timedelta(hours=47), "47h"),
    (timedelta(hours=48), "2d"), (timedelta(days=2, hours=3), "2d3h"), (timedelta(days=7, hours=23), "7d23h"),
    (timedelta(days=8, hours=5), "8d"), (timedelta(days=45), "45d"), (timedelta(days=729), "729d"),
    (timedelta(days=730), "2y"), (timedelta(days=740), "2y10d"), (timedelta(days=2919), "7y364d"),
    (timedelta(days=2920), "8y"), (timedelta(days=3700), "10y"),
], ids=str)
def test_human_duration_boundaries(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


@pytest.mark.parametrize(("created", "age"), [
    pytest.param(None, "<unknown>", id="unset"),
    pytest.param("0001-01-01T00:00:00Z", "<unknown>", id="go-zero-time"),
    pytest.param("not-a-time", "<unknown>", id="unparsable"),
    pytest.param((NOW - timedelta(minutes=3)).isoformat(), "3m", id="offset-form"),
    pytest.param(ago(seconds=-30), "<invalid>", id="in-the-future"),
])
def test_age_cell(created: str | None, age: str) -> None:
    obj = {"metadata": {"name": "cm", "creationTimestamp": created}}
    assert to_table(RT["ConfigMap"], [obj], now=NOW)["rows"][0]["cells"][2] == age


@pytest.mark.parametrize(("raw", "canonical"), [
    ("1Gi", "1Gi"), ("1024Mi", "1Gi"), ("1536Mi", "1536Mi"), ("1.5Gi", "1536Mi"), ("0.5Gi", "512Mi"),
    ("2048Ki", "2Mi"), ("1000Ki", "1000Ki"), ("500Mi", "500Mi"), ("1000", "1k"), ("1500", "1500"),
    ("0.1", "100m"), ("100m", "100m"), ("5G", "5G"), ("1e3", "1e3"), ("512", "512"), (5, "5"),
    ("0", "0"), (None, "0"), ("garbage", "garbage"),
], ids=str)
def test_quantity_is_printed_canonically(raw: Any, canonical: str) -> None:
    assert quantity(raw) == canonical


# --- the Table envelope and content negotiation ---------------------------------------------------------

@pytest.mark.parametrize(("accept", "table"), [
    pytest.param(KUBECTL_ACCEPT, True, id="kubectl-get"),
    pytest.param("application/json;as=Table;v=v1beta1;g=meta.k8s.io", True, id="v1beta1"),
    pytest.param("application/json; as=Table; g=meta.k8s.io; v=v1", True, id="spaces-and-order"),
    pytest.param("application/json", False, id="plain-json"),
    pytest.param(None, False, id="no-header"),
    pytest.param("", False, id="empty-header"),
    pytest.param("application/json;as=Table;v=v2;g=meta.k8s.io,application/json", False,
                 id="unknown-version"),
    pytest.param("application/json;as=Table;v=v1;g=example.com", False, id="other-group"),
    pytest.param("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json", False,
                 id="partial-metadata"),
    pytest.param("application/json;q=0.5,application/json;as=Table;v=v1;g=meta.k8s.io", True, id="by-q"),
    pytest.param("application/json;as=Table;v=v1;g=meta.k8s.io;q=0,application/json", False, id="q-zero"),
    pytest.param("*/*", False, id="anything"),
])
def test_parse_table_accept(accept: str | None, table: bool) -> None:
    assert parse_table_accept(accept) is table


def test_table_envelope() -> None:
    table = to_table(RT["Pod"], [POD_WEB], now=NOW, resource_version="4242", continue_token="abc")
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert table["metadata"] == {"resourceVersion": "4242", "continue": "abc"}
    assert to_table(RT["Pod"], [], now=NOW)["metadata"] == {}
    assert to_table(RT["Pod"], [], now=NOW)["rows"] == []


@pytest.mark.parametrize(("include", "expected"), [
    pytest.param("Metadata", {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                              "metadata": POD_WEB["metadata"]}, id="metadata"),
    pytest.param("", {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                      "metadata": POD_WEB["metadata"]}, id="default-is-metadata"),
    pytest.param("Object", POD_WEB, id="object"),
    pytest.param("None", None, id="none"),
])
def test_include_object(include: str, expected: Any) -> None:
    row = to_table(RT["Pod"], [POD_WEB], now=NOW, include_object=include)["rows"][0]
    assert row.get("object") == expected


def test_unknown_include_object_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="unrecognized includeObject value"):
        to_table(RT["Pod"], [POD_WEB], now=NOW, include_object="Everything")


def test_naive_now_is_taken_as_utc() -> None:
    table = to_table(RT["Pod"], [POD_WEB], now=NOW.replace(tzinfo=None))
    assert table["rows"][0]["cells"][4] == "3h4m"


# --- printers never raise -------------------------------------------------------------------------------

TIMESTAMPS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)
           | TIMESTAMPS | st.sampled_from([
               "True", "False", "Ready", "Initialized", "PodScheduled", "SchedulingGated", "Always",
               "Completed", "PodInitializing", "NodeLost", "Running", "Succeeded", "Failed", "In", "NotIn",
               "Exists", "DoesNotExist", "LoadBalancer", "NodePort", "ExternalName", "InternalIP",
               "ExternalIP", "1Gi", "1.5Gi", "1e3", "ReadWriteOnce", "0001-01-01T00:00:00Z"]))
KEYS = st.sampled_from(["metadata", "spec", "status", "name", "type", "state", "ready"]) | st.text(max_size=4)


def _containers_of(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3)


JSON = st.recursive(SCALARS, _containers_of, max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    children: Any = ()
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    for key, child in children:
        out += _paths(child, (*prefix, key))
    return out


@st.composite
def corrupted(draw: st.DrawFn, realistic: list[tuple[ResourceType, Any]]) -> tuple[ResourceType, Any]:
    """A realistic object with a few subtrees replaced by arbitrary JSON or removed, so deep code runs on
    odd values (a random tree alone rarely gets past ``status``)."""
    rt, obj = draw(st.sampled_from(realistic))
    obj = copy.deepcopy(obj)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(obj)))
        if not path:
            return rt, draw(JSON)
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON)
        elif isinstance(parent, dict):
            del parent[path[-1]]
    return rt, obj


def _realistic() -> list[tuple[ResourceType, Any]]:
    objects = [(RT[str(p.values[0])], p.values[1]) for p in KINDS]
    objects += [(RT["Pod"], p.values[0]) for p in POD_REASONS]
    return [*objects, (ODD_CRD, WIDGET)]


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ODD_CRD = widget_type([*WIDGET_COLUMNS, {"name": "Broken", "type": "string", "jsonPath": ".a[?(@.b"},
                       {"name": "Weird", "type": "color", "jsonPath": ".x"}, "not-a-column"])


@FUZZ
@given(cases=st.lists(corrupted(_realistic()), min_size=1, max_size=3),
       other=st.sampled_from([None, *BUILTIN, widget_type(None)]),
       include=st.sampled_from(["Metadata", "Object", "None"]))
def test_to_table_never_raises_on_arbitrary_objects(cases: list[tuple[ResourceType, Any]],
                                                    other: ResourceType | None, include: str) -> None:
    rt = other or cases[0][0]  # mostly the kind the object was written for, sometimes another
    objects = [obj for _, obj in cases]
    table = to_table(rt, objects, now=NOW, include_object=include)
    assert len(table["rows"]) == len(objects)
    for row in table["rows"]:
        assert len(row["cells"]) == len(table["columnDefinitions"])
    json.dumps(table)


@FUZZ
@given(case=corrupted([(RT["Pod"], p.values[0]) for p in POD_REASONS]) | st.tuples(st.none(), JSON))
def test_pod_status_reason_never_raises(case: tuple[Any, Any]) -> None:
    assert isinstance(pod_status_reason(case[1]), str)
