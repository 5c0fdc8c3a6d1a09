"""prepare(): what a write looks like after decoding, defaulting and validation, and what gets refused."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient

from meshlab import errors
from meshlab.cluster.defaulting import apply_defaults, pull_policy
from meshlab.cluster.resources import BUILTIN, Registry, ResourceType, from_crd
from meshlab.cluster.schemas import Schemas, prepare

SCHEMAS = Schemas()
REGISTRY = Registry()
Obj = dict[str, Any]


def rt_of(api_version: str, kind: str) -> ResourceType:
    rt = REGISTRY.by_kind(api_version, kind)
    assert rt is not None
    return rt


def causes_of(api_version: str, kind: str, obj: Obj) -> list[tuple[str, str]]:
    with pytest.raises(errors.Invalid) as caught:
        prepare(SCHEMAS, rt_of(api_version, kind), obj)
    assert caught.value.code == 422
    return [(c.field, c.message) for c in caught.value.causes]


POD: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
DEPLOYMENT: Obj = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
}
SERVICE: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
PVC: Obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
CONFIGMAP: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
                  "data": {"a": "1"}}
SECRET: Obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "data": {}}
NAMESPACE: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
BASES = {"Pod": POD, "Deployment": DEPLOYMENT, "Service": SERVICE, "PersistentVolumeClaim": PVC,
         "ConfigMap": CONFIGMAP, "Secret": SECRET, "Namespace": NAMESPACE}


def edit(kind: str, change: Callable[[Obj], object]) -> Obj:
    obj = copy.deepcopy(BASES[kind])
    change(obj)
    return obj


def container(obj: Obj) -> Obj:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
    return spec["containers"][0]


_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
              "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
              "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
          "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
          "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
            "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
_LABEL_KEY = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
              "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
              "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
                "'my_value',  or '12345', regex used for validation is "
                "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_CONFIG_KEY = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
               "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
_PROTOCOLS = 'supported values: "SCTP", "TCP", "UDP"'

INVALID = [
    ("[Error] no name", "Pod", lambda o: o["metadata"].pop("name"),
     [("metadata.name", "Required value: name or generateName is required")]),
    ("[Error] uppercase pod name", "Pod", lambda o: o["metadata"].update(name="Web_1"),
     [("metadata.name", f'Invalid value: "Web_1": {_SUBDOMAIN}')]),
    ("[Error] namespace name with a dot", "Namespace", lambda o: o["metadata"].update(name="team.a"),
     [("metadata.name", 'Invalid value: "team.a": must not contain dots')]),
    ("[Error] service name starting with a digit", "Service", lambda o: o["metadata"].update(name="1web"),
     [("metadata.name", f'Invalid value: "1web": {_DNS1035}')]),
    ("[Error] bad label key and value", "Pod", lambda o: o["metadata"].update(labels={"my app": "a b"}),
     [("metadata.labels", f'Invalid value: "my app": {_LABEL_KEY}'),
      ("metadata.labels", f'Invalid value: "a b": {_LABEL_VALUE}')]),
    ("[Error] annotation is a boolean", "Pod", lambda o: o["metadata"].update(annotations={"inject": True}),
     [("metadata.annotations[inject]",
       'Invalid value: "boolean": metadata.annotations[inject] in body must be of type string: "boolean"')]),
    ("[Error] no containers", "Pod", lambda o: o["spec"].update(containers=[]),
     [("spec.containers", "Required value")]),
    ("[Error] container without name or image", "Pod", lambda o: o["spec"].update(containers=[{}]),
     [("spec.containers[0].name", "Required value"), ("spec.containers[0].image", "Required value")]),
    ("[Error] container name not a DNS label", "Pod", lambda o: container(o).update(name="Web"),
     [("spec.containers[0].name", f'Invalid value: "Web": {_LABEL}')]),
    ("[Error] duplicate container names", "Pod",
     lambda o: o["spec"]["containers"].append({"name": "web", "image": "busybox"}),
     [("spec.containers[1].name", 'Duplicate value: "web"')]),
    ("[Error] port out of range and unknown protocol", "Pod",
     lambda o: container(o).update(ports=[{"containerPort": 70000, "protocol": "HTTP"}]),
     [("spec.containers[0].ports[0].containerPort",
       "Invalid value: 70000: must be between 1 and 65535, inclusive"),
      ("spec.containers[0].ports[0].protocol", f'Unsupported value: "HTTP": {_PROTOCOLS}')]),
    ("[Error] port without number", "Pod", lambda o: container(o).update(ports=[{"name": "http"}]),
     [("spec.containers[0].ports[0].containerPort", "Required value")]),
    ("[Error] restartPolicy", "Pod", lambda o: o["spec"].update(restartPolicy="Sometimes"),
     [("spec.restartPolicy",
       'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"')]),
    ("[Error] mount of a volume that does not exist", "Pod",
     lambda o: container(o).update(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
     [("spec.containers[0].volumeMounts[0].name", 'Not found: "data"')]),
    ("[Error] image missing in a template", "Deployment", lambda o: container(o).pop("image"),
     [("spec.template.spec.containers[0].image", "Required value")]),
    ("[Error] replicas negative", "Deployment", lambda o: o["spec"].update(replicas=-1),
     [("spec.replicas", "Invalid value: -1: must be greater than or equal to 0")]),
    ("[Error] replicas not a number", "Deployment", lambda o: o["spec"].update(replicas="three"),
     [("spec.replicas", 'Invalid value: "string": spec.replicas in body must be of type integer: "string"')]),
    ("[Error] no selector", "Deployment", lambda o: o["spec"].pop("selector"),
     [("spec.selector", "Required value")]),
    ("[Error] selector does not match template", "Deployment",
     lambda o: o["spec"]["template"]["metadata"].update(labels={"app": "api"}),
     [("spec.template.metadata.labels",
       'Invalid value: map[string]string{"app":"api"}: `selector` does not match template `labels`')]),
    ("[Error] template restartPolicy Never", "Deployment",
     lambda o: o["spec"]["template"]["spec"].update(restartPolicy="Never"),
     [("spec.template.spec.restartPolicy", 'Unsupported value: "Never": supported values: "Always"')]),
    ("[Error] service without ports", "Service", lambda o: o["spec"].pop("ports"),
     [("spec.ports", "Required value")]),
    ("[Error] service port, protocol and targetPort", "Service",
     lambda o: o["spec"].update(ports=[{"port": 0, "protocol": "HTTP", "targetPort": "web-"}]),
     [("spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
      ("spec.ports[0].protocol", f'Unsupported value: "HTTP": {_PROTOCOLS}'),
      ("spec.ports[0].targetPort", 'Invalid value: "web-": must not begin or end with a hyphen')]),
    ("[Error] two service ports, one unnamed", "Service",
     lambda o: o["spec"]["ports"].append({"name": "https", "port": 443}),
     [("spec.ports[0].name", "Required value")]),
    ("[Error] configmap value is a number", "ConfigMap", lambda o: o["data"].update(a=1),
     [("data[a]", 'Invalid value: "integer": data[a] in body must be of type string: "integer"')]),
    ("[Error] configmap key with a space", "ConfigMap", lambda o: o["data"].update({"my key": "x"}),
     [("data[my key]", f'Invalid value: "my key": {_CONFIG_KEY}')]),
    ("[Error] secret data not base64", "Secret", lambda o: o["data"].update(token="not base64!"),
     [("data[token]", 'Invalid value: "not base64!": illegal base64 data at input byte 3')]),
    ("[Error] tls secret without key", "Secret",
     lambda o: o.update(type="kubernetes.io/tls", data={"tls.crt": "Y2VydA=="}),
     [("data[tls.key]", "Required value")]),
    ("[Error] claim without access modes or size", "PersistentVolumeClaim", lambda o: o.update(spec={}),
     [("spec.accessModes", "Required value: at least 1 access mode is required"),
      ("spec.resources[storage]", "Required value")]),
    ("[Error] claim with an unknown access mode", "PersistentVolumeClaim",
     lambda o: o["spec"].update(accessModes=["ReadWrite"]),
     [("spec.accessModes", 'Unsupported value: "ReadWrite": supported values: "ReadOnlyMany", '
                           '"ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"')]),
    ("[Error] claim of zero bytes", "PersistentVolumeClaim",
     lambda o: o["spec"]["resources"]["requests"].update(storage="0"),
     [("spec.resources[storage]", 'Invalid value: "0": must be greater than zero')]),
    ("[Error] quantity that does not parse", "Pod",
     lambda o: container(o).update(resources={"limits": {"cpu": "lots"}}),
     [("spec.containers[0].resources.limits[cpu]", 'Invalid value: "lots": quantities must match the regular '
       "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]),
    ("[Error] request above limit", "Pod",
     lambda o: container(o).update(resources={"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}),
     [("spec.containers[0].resources.requests[cpu]", 'Invalid value: "2": must be less than or equal to cpu '
                                                     "limit of 1")]),
]


@pytest.mark.parametrize(("kind", "change", "expected"), [row[1:] for row in INVALID],
                         ids=[row[0] for row in INVALID])
def test_invalid_objects_get_the_real_causes(kind: str, change: Callable[[Obj], object],
                                             expected: list[tuple[str, str]]) -> None:
    obj = edit(kind, change)
    assert causes_of(obj["apiVersion"], obj["kind"], obj) == expected


def test_invalid_names_the_kind_group_and_object() -> None:
    with pytest.raises(errors.Invalid) as caught:
        prepare(SCHEMAS, rt_of("apps/v1", "Deployment"),
                edit("Deployment", lambda o: o["spec"].update(replicas=-2)))
    status = caught.value.to_status()
    assert status["reason"] == "Invalid" and status["code"] == 422
    assert status["details"]["kind"] == "Deployment" and status["details"]["group"] == "apps"
    assert status["details"]["name"] == "web"
    assert status["details"]["causes"][0]["reason"] == "FieldValueInvalid"


def test_generate_name_stands_in_for_a_name() -> None:
    obj = edit("Pod", lambda o: o["metadata"].update(name=None, generateName="web-"))
    assert prepare(SCHEMAS, rt_of("v1", "Pod"), obj)[0]["metadata"]["generateName"] == "web-"


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [("Strict", 'strict decoding error: unknown field "spec.containers[0].imagePullPolice", '
                'unknown field "spec.replica"'),
     ("Warn", ['unknown field "spec.containers[0].imagePullPolice"', 'unknown field "spec.replica"']),
     ("Ignore", [])],
    ids=["Strict refuses", "Warn warns", "Ignore is silent"],
)
def test_unknown_fields_follow_field_validation(mode: str, outcome: Any) -> None:
    obj = edit("Pod", lambda o: (container(o).update(imagePullPolice="Always"), o["spec"].update(replica=2)))
    if mode == "Strict":
        with pytest.raises(errors.BadRequest) as caught:
            prepare(SCHEMAS, rt_of("v1", "Pod"), obj, field_validation=mode)
        assert str(caught.value) == outcome
        return
    out, warnings = prepare(SCHEMAS, rt_of("v1", "Pod"), obj, field_validation=mode)
    assert warnings == outcome
    assert "replica" not in out["spec"] and "imagePullPolice" not in out["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("body", "message"),
    [({"apiVersion": "apps/v1", "kind": "Pod"}, "the API version in the data (apps/v1) does not match the "
                                                "expected API version (v1)"),
     ({"apiVersion": "v1", "kind": "Service"}, "the kind in the data (Service) does not match the expected "
                                               "kind (Pod)")],
    ids=["wrong apiVersion", "wrong kind"],
)
def test_type_meta_must_match_the_endpoint(body: Obj, message: str) -> None:
    with pytest.raises(errors.BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(SCHEMAS, rt_of("v1", "Pod"), {**POD, **body})


NORMALISED = [
    ("cpu as a number", lambda o: container(o).update(resources={"limits": {"cpu": 1, "memory": "1024Mi"}}),
     lambda out: container(out)["resources"]["limits"], {"cpu": "1", "memory": "1Gi"}),
    ("fractional cpu", lambda o: container(o).update(resources={"requests": {"cpu": 0.25, "memory": "1e3"}}),
     lambda out: container(out)["resources"]["requests"], {"cpu": "250m", "memory": "1e3"}),
    ("ints sent as floats", lambda o: o["spec"].update(terminationGracePeriodSeconds=5.0),
     lambda out: out["spec"]["terminationGracePeriodSeconds"], 5),
    ("nulls dropped", lambda o: o["spec"].update(nodeName=None, dnsPolicy=None),
     lambda out: (out["spec"].get("nodeName", "absent"), out["spec"]["dnsPolicy"]),
     ("absent", "ClusterFirst")),
    ("times in UTC", lambda o: o["metadata"].update(creationTimestamp="2024-05-01T12:00:00+02:00"),
     lambda out: out["metadata"]["creationTimestamp"], "2024-05-01T10:00:00Z"),
]


@pytest.mark.parametrize(("change", "pick", "expected"), [row[1:] for row in NORMALISED],
                         ids=[row[0] for row in NORMALISED])
def test_values_are_stored_as_the_client_expects_them(change: Callable[[Obj], object],
                                                     pick: Callable[[Obj], Any], expected: Any) -> None:
    out, _ = prepare(SCHEMAS, rt_of("v1", "Pod"), edit("Pod", change))
    assert pick(out) == expected


def test_secret_string_data_is_merged_into_data() -> None:
    obj = edit("Secret", lambda o: o.update(data={"user": base64.b64encode(b"old").decode()},
                                            stringData={"user": "admin", "password": "s3cret"}))
    out, _ = prepare(SCHEMAS, rt_of("v1", "Secret"), obj)
    assert "stringData" not in out and out["type"] == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in out["data"].items()} == {"user": "admin",
                                                                                  "password": "s3cret"}


# --- defaults ---------------------------------------------------------------------------------------------


def test_minimal_pod_gets_the_real_defaults() -> None:
    pod = edit("Pod", lambda o: container(o).update(ports=[{"containerPort": 80}]))
    out, _ = prepare(SCHEMAS, rt_of("v1", "Pod"), pod)
    spec = out["spec"]
    keys = ("restartPolicy", "dnsPolicy", "schedulerName", "terminationGracePeriodSeconds", "securityContext",
            "serviceAccountName", "enableServiceLinks")
    assert {k: spec[k] for k in keys} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30, "securityContext": {}, "serviceAccountName": "default",
        "enableServiceLinks": True}
    c = spec["containers"][0]
    assert (c["imagePullPolicy"], c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "IfNotPresent", "/dev/termination-log", "File")
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert out["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_minimal_deployment_gets_the_real_defaults() -> None:
    out, _ = prepare(SCHEMAS, rt_of("apps/v1", "Deployment"), DEPLOYMENT)
    spec = out["spec"]
    assert (spec["replicas"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (1, 10, 600)
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    template = spec["template"]["spec"]
    assert template["restartPolicy"] == "Always" and template["dnsPolicy"] == "ClusterFirst"
    # enableServiceLinks and the service account are Pod defaults, not template defaults.
    assert "enableServiceLinks" not in template and "serviceAccountName" not in template


def test_minimal_service_gets_the_real_defaults() -> None:
    out, _ = prepare(SCHEMAS, rt_of("v1", "Service"), SERVICE)
    assert out["spec"] == {"selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None",
                           "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                           "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack",
                           "ipFamilies": ["IPv4"]}


@pytest.mark.parametrize(
    ("kind", "pick", "expected"),
    [("Namespace", lambda o: (o["metadata"]["labels"], o["spec"]["finalizers"]),
      ({"kubernetes.io/metadata.name": "shop"}, ["kubernetes"])),
     ("PersistentVolumeClaim", lambda o: o["spec"]["volumeMode"], "Filesystem"),
     ("StorageClass", lambda o: (o["reclaimPolicy"], o["volumeBindingMode"]), ("Delete", "Immediate"))],
    ids=["namespace label and finalizer", "claim volumeMode", "storage class policies"],
)
def test_other_kinds_get_their_defaults(kind: str, pick: Callable[[Obj], Any], expected: Any) -> None:
    obj = BASES.get(kind) or {"apiVersion": "storage.k8s.io/v1", "kind": kind, "metadata": {"name": "nfs"},
                              "provisioner": "nfs.csi.meshlab.io"}
    out, _ = prepare(SCHEMAS, rt_of(obj["apiVersion"], kind), obj)
    assert pick(out) == expected


@pytest.mark.parametrize(
    ("image", "policy"),
    [("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.27", "IfNotPresent"),
     ("localhost:5000/meshlab/echo", "Always"), ("localhost:5000/echo:v2", "IfNotPresent"),
     ("nginx@sha256:" + "a" * 64, "IfNotPresent")],
    ids=["untagged", "latest", "tagged", "registry port, untagged", "registry port, tagged", "digest"],
)
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    assert pull_policy(image) == policy


def test_defaults_are_idempotent_and_do_not_touch_the_input() -> None:
    original = copy.deepcopy(DEPLOYMENT)
    once = apply_defaults(rt_of("apps/v1", "Deployment"), DEPLOYMENT)
    assert DEPLOYMENT == original
    assert apply_defaults(rt_of("apps/v1", "Deployment"), once) == once


# --- the Python client reads what is stored ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "model"),
    [("Pod", "V1Pod"), ("Deployment", "V1Deployment"), ("Service", "V1Service"),
     ("PersistentVolumeClaim", "V1PersistentVolumeClaim"), ("ConfigMap", "V1ConfigMap"),
     ("Secret", "V1Secret"), ("Namespace", "V1Namespace")],
    ids=lambda v: str(v),
)
def test_the_python_client_deserialises_what_is_stored(kind: str, model: str) -> None:
    messy = edit(kind, lambda o: o["metadata"].update(labels={"app": "web"}, annotations=None))
    if kind in ("Pod", "Deployment"):
        container(messy).update(ports=[{"containerPort": 80.0}],
                                resources={"limits": {"cpu": 1, "memory": 1e9}})
    out, _ = prepare(SCHEMAS, rt_of(messy["apiVersion"], kind), messy)
    client_obj = ApiClient()._ApiClient__deserialize(out, model)  # type: ignore[attr-defined]
    assert client_obj.metadata.name == out["metadata"]["name"]
    assert ApiClient().sanitize_for_serialization(client_obj)["kind"] == kind


# --- custom resources -------------------------------------------------------------------------------------

VIRTUAL_SERVICE_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "virtualservices.networking.istio.io"},
    "spec": {
        "group": "networking.istio.io", "scope": "Namespaced",
        "names": {"plural": "virtualservices", "singular": "virtualservice", "kind": "VirtualService",
                  "shortNames": ["vs"]},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {
                "type": "object", "required": ["hosts"],
                "properties": {
                    "hosts": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string"},
                              "x-kubernetes-list-type": "set"},
                    "gateways": {"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9./-]+$"}},
                    "mode": {"type": "string", "enum": ["ISTIO_MUTUAL", "DISABLE"], "default": "DISABLE"},
                    "http": {"type": "array", "items": {"type": "object", "properties": {
                        "timeout": {"type": "string", "nullable": True},
                        "retries": {"type": "object", "properties": {
                            "attempts": {"type": "integer", "minimum": 0, "maximum": 10}}},
                        "port": {"x-kubernetes-int-or-string": True},
                        "uri": {"type": "object", "properties": {k: {"type": "string"} for k in ("exact", "regex")},
                                "oneOf": [{"required": ["exact"]}, {"required": ["regex"]}]},
                        "headers": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        "route": {"type": "array", "items": {"type": "object", "properties": {
                            "weight": {"type": "integer", "format": "int32"}}}}}}},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                                 "x-kubernetes-preserve-unknown-fields": True},
                }}}}}}],
    },
}
VS_RT = from_crd(VIRTUAL_SERVICE_CRD)[0]
VIRTUAL_SERVICE: Obj = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": "reviews", "namespace": "default"},
                        "spec": {"hosts": ["reviews"], "http": [{"route": [{"weight": 100}]}]}}


def vs(change: Callable[[Obj], object]) -> Obj:
    obj = copy.deepcopy(VIRTUAL_SERVICE)
    change(obj)
    return obj


CUSTOM_INVALID = [
    ("[Error] required hosts", lambda o: o["spec"].pop("hosts"), [("spec.hosts", "Required value")]),
    ("[Error] wrong type", lambda o: o["spec"].update(hosts="reviews"),
     [("spec.hosts", 'Invalid value: "string": spec.hosts in body must be of type array: "string"')]),
    ("[Error] enum", lambda o: o["spec"].update(mode="STRICT"),
     [("spec.mode", 'Unsupported value: "STRICT": supported values: "ISTIO_MUTUAL", "DISABLE"')]),
    ("[Error] pattern", lambda o: o["spec"].update(gateways=["Mesh Gateway"]),
     [("spec.gateways[0]", "Invalid value: \"Mesh Gateway\": spec.gateways[0] in body should match "
                           "'^[a-z0-9./-]+$'")]),
    ("[Error] maximum", lambda o: o["spec"]["http"][0].update(retries={"attempts": 11}),
     [("spec.http[0].retries.attempts",
       "Invalid value: 11: spec.http[0].retries.attempts in body should be less than or equal to 10")]),
    ("[Error] maxItems", lambda o: o["spec"].update(hosts=["a", "b", "c", "d"]),
     [("spec.hosts", "Too many: 4: must have at most 3 items")]),
    ("[Error] minItems", lambda o: o["spec"].update(hosts=[]),
     [("spec.hosts", "Invalid value: 0: spec.hosts in body should have at least 1 items")]),
    ("[Error] duplicate in a set", lambda o: o["spec"].update(hosts=["a", "a"]),
     [("spec.hosts[1]", 'Duplicate value: "a"')]),
    ("[Error] int-or-string given a list", lambda o: o["spec"]["http"][0].update(port=[80]),
     [("spec.http[0].port", 'Invalid value: "array": spec.http[0].port in body must be of type '
                            'integer,string: "array"')]),
    ("[Error] oneOf: both branches", lambda o: o["spec"]["http"][0].update(uri={"exact": "/a", "regex": "/b"}),
     [("spec.http[0].uri", 'Invalid value: map[string]string{"exact":"/a", "regex":"/b"}: spec.http[0].uri in body '
                           "must validate one and only one schema (oneOf)")]),
    ("[Error] oneOf: neither branch", lambda o: o["spec"]["http"][0].update(uri={}),
     [("spec.http[0].uri", "Invalid value: map[string]string{}: spec.http[0].uri in body "
                           "must validate one and only one schema (oneOf)")]),
    ("[Error] embedded resource without kind", lambda o: o["spec"].update(template={"apiVersion": "v1"}),
     [("spec.template.kind", "Required value: must not be empty")]),
]


@pytest.mark.parametrize(("change", "expected"), [row[1:] for row in CUSTOM_INVALID],
                         ids=[row[0] for row in CUSTOM_INVALID])
def test_custom_resources_are_validated_against_their_crd(change: Callable[[Obj], object],
                                                         expected: list[tuple[str, str]]) -> None:
    with pytest.raises(errors.Invalid) as caught:
        prepare(SCHEMAS, VS_RT, vs(change))
    assert [(c.field, c.message) for c in caught.value.causes] == expected
    assert caught.value.details["group"] == "networking.istio.io"


@pytest.mark.parametrize("uri", [{"exact": "/a"}, {"regex": "/reviews/.*"}], ids=["exact", "regex"])
def test_a_one_of_branch_that_only_requires_a_key_accepts_that_key(uri: Obj) -> None:
    out, _ = prepare(SCHEMAS, VS_RT, vs(lambda o: o["spec"]["http"][0].update(uri=uri)))
    assert out["spec"]["http"][0]["uri"] == uri


def test_custom_resources_are_pruned_defaulted_and_normalised() -> None:
    obj = vs(lambda o: (o["spec"].update(extra=1), o["spec"]["http"][0].update(
        timeout=None, port=8080.0, headers={"x-any": {"thing": [1]}}, retries={"attempts": None})))
    with pytest.raises(errors.BadRequest, match=r'unknown field "spec\.extra"'):
        prepare(SCHEMAS, VS_RT, obj)
    out, warnings = prepare(SCHEMAS, VS_RT, obj, field_validation="Warn")
    assert warnings == ['unknown field "spec.extra"']
    assert out["spec"]["mode"] == "DISABLE"  # the schema's default
    assert out["spec"]["http"][0] == {"route": [{"weight": 100}], "timeout": None, "port": 8080,
                                      "headers": {"x-any": {"thing": [1]}}, "retries": {}}
    assert out["metadata"] == {"name": "reviews", "namespace": "default"}


CRD_INVALID = [
    ("[Error] no plural", lambda s: s["names"].pop("plural"),
     [("metadata.name", 'Invalid value: "virtualservices.networking.istio.io": must be '
                        'spec.names.plural+"."+spec.group'), ("spec.names.plural", "Required value")]),
    ("[Error] no versions", lambda s: s.update(versions=[]),
     [("spec.versions", "Required value: must have exactly one version marked as storage version")]),
    ("[Error] two storage versions", lambda s: s["versions"].append({**s["versions"][0], "name": "v1beta1"}),
     [("spec.versions", 'Invalid value: []string{"v1", "v1beta1"}: must have exactly one version marked as '
                        "storage version")]),
    ("[Error] name is not plural.group", lambda s: s.update(group="istio.io"),
     [("metadata.name", 'Invalid value: "virtualservices.networking.istio.io": must be '
                        'spec.names.plural+"."+spec.group')]),
    ("[Error] field without a type", lambda s: s["versions"][0]["schema"]["openAPIV3Schema"].update(
        properties={"spec": {"properties": {}}}),
     [("spec.versions[0].schema.openAPIV3Schema.properties[spec].type",
       "Required value: must not be empty for specified object fields")]),
]


@pytest.mark.parametrize(("change", "expected"), [row[1:] for row in CRD_INVALID],
                         ids=[row[0] for row in CRD_INVALID])
def test_crds_are_validated(change: Callable[[Obj], object], expected: list[tuple[str, str]]) -> None:
    crd = copy.deepcopy(VIRTUAL_SERVICE_CRD)
    change(crd["spec"])
    assert causes_of("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd) == expected


def test_a_valid_crd_is_defaulted() -> None:
    crd_rt = rt_of("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    out, _ = prepare(SCHEMAS, crd_rt, VIRTUAL_SERVICE_CRD)
    assert out["spec"]["conversion"] == {"strategy": "None"}
    assert out["spec"]["names"]["listKind"] == "VirtualServiceList"


# --- robustness and speed ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
FIELDS = ["metadata", "spec", "data", "stringData", "status", "type", "provisioner", "kind", "apiVersion"]
KINDS = [rt for rt in BUILTIN if rt.persisted] + [VS_RT]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


MUTATION_BASES: list[tuple[ResourceType, Obj]] = [
    *[(rt_of(base["apiVersion"], kind), base) for kind, base in BASES.items()],
    (rt_of("apiextensions.k8s.io/v1", "CustomResourceDefinition"), VIRTUAL_SERVICE_CRD),
    (VS_RT, VIRTUAL_SERVICE),
]
MUTABLE = [(i, path) for i, (_, base) in enumerate(MUTATION_BASES) for path in _paths(base)]


@settings(max_examples=150, deadline=None)
@given(rt=st.sampled_from(KINDS), body=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5),
       mode=st.sampled_from(["Strict", "Warn", "Ignore"]))
def test_random_manifests_only_raise_api_errors(rt: ResourceType, body: Obj, mode: str) -> None:
    try:
        out, _ = prepare(SCHEMAS, rt, body, field_validation=mode)
    except errors.ApiError as err:
        assert 400 <= err.code < 500
    else:
        assert out["kind"] == rt.kind and out["apiVersion"] == rt.api_version


@settings(max_examples=150, deadline=None)
@given(target=st.sampled_from(MUTABLE), value=json_values)
def test_mutated_manifests_only_raise_api_errors(target: tuple[int, tuple[Any, ...]], value: Any) -> None:
    index, path = target
    rt, base = MUTATION_BASES[index]
    obj = copy.deepcopy(base)
    cur: Any = obj
    for step in path[:-1]:
        cur = cur[step]
    cur[path[-1]] = value
    try:
        prepare(SCHEMAS, rt, obj, field_validation="Warn")
    except errors.ApiError as err:
        assert 400 <= err.code < 500


def test_schemas_load_once() -> None:
    fresh = Schemas()
    assert fresh.definition_name("apps", "v1", "Deployment") == "io.k8s.api.apps.v1.Deployment"
    assert fresh.defs is fresh.defs  # (how long loading and prepare() take: python -m benchmarks --only apiserver)
