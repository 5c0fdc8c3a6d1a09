"""Decoding kubectl's protobuf request bodies (meshlab.cluster.protobuf).

The fixtures under ``fixtures/protobuf`` were sent by the real kubectl 1.33 (and 1.32 for ``autoscale-v1``)
and are paired with kubectl's own ``--dry-run=client -o json`` rendering of the same command; regenerate
them with ``fixtures/protobuf/capture.py``. The other tests build bodies with the small encoder below.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlab import errors
from meshlab.cluster import protobuf, protobuf_schema
from meshlab.cluster.protobuf import MAGIC, Presence, Schema, decode, is_protobuf

FIXTURES = Path(__file__).parent / "fixtures" / "protobuf"
CAPTURED = sorted(FIXTURES.glob("*.pb"))

# Go prints a nil list without omitempty as null; decode() leaves absent lists out.
GO_NULL_LISTS: dict[str, list[tuple[str, str]]] = {
    "autoscale": [("status", "currentMetrics")],
    "token-bound": [("spec", "audiences")],
}


# --- a tiny protobuf encoder, to write bodies by hand ------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 travel as 64-bit two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def num(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def ld(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return ld(number, value.encode())


def entry(number: int, map_key: str, value: bytes) -> bytes:
    """One map entry: {key = 1, value = 2}, the value already encoded as field 2."""
    return ld(number, text(1, map_key) + value)


def envelope(api_version: str, kind: str, raw: bytes = b"", *, extra: bytes = b"") -> bytes:
    return MAGIC + ld(1, text(1, api_version) + text(2, kind)) + ld(2, raw) + extra


def dig(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


# --- real kubectl bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("body_path", CAPTURED, ids=[p.stem for p in CAPTURED])
def test_kubectl_body_decodes_to_what_kubectl_meant(body_path: Path) -> None:
    expected = json.loads(body_path.with_suffix(".json").read_text())
    for parent, name in GO_NULL_LISTS.get(body_path.stem, []):
        assert expected[parent].pop(name) is None
    assert decode(body_path.read_bytes()) == expected


def test_fixtures_cover_the_commands_of_the_task() -> None:
    stems = {p.stem for p in CAPTURED}
    assert {"namespace", "configmap-literal", "configmap-file", "secret-generic", "secret-docker-registry",
            "secret-tls", "deployment", "serviceaccount", "service-clusterip", "service-nodeport",
            "auth-can-i", "token"} <= stems


def test_manifest_records_which_commands_send_json() -> None:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["cases"]
    sends_json = sorted(name for name, case in manifest.items()
                        if not any(write["protobuf"] for write in case["writes"]))
    assert sends_json == ["annotate", "create-f", "expose", "label", "run", "scale", "set-image"]


# --- behaviour, on hand-made bodies -----------------------------------------------------------------

MISSING = object()
POD_SPEC = (2,)  # Pod.spec


def pod(spec: bytes) -> bytes:
    return envelope("v1", "Pod", ld(2, spec))


BEHAVIOUR = [
    ("pointer field keeps zero: replicas 0",
     envelope("apps/v1", "Deployment", ld(2, num(1, 0))), ("spec", "replicas"), 0),
    ("omitempty field drops zero: minReadySeconds 0",
     envelope("apps/v1", "Deployment", ld(2, num(5, 0))), ("spec", "minReadySeconds"), MISSING),
    ("negative int32", envelope("apps/v1", "Deployment", ld(2, num(1, -1))), ("spec", "replicas"), -1),
    ("pointer bool keeps false: immutable",
     envelope("v1", "ConfigMap", num(4, 0)), ("immutable",), False),
    ("required fields shown when absent",
     envelope("policy/v1", "PodDisruptionBudget", ld(3, b"")), ("status",),
     {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
    ("time as RFC 3339 in UTC",
     envelope("v1", "Namespace", ld(1, ld(8, num(1, 1_700_000_000) + num(2, 999_999_999)))),
     ("metadata", "creationTimestamp"), "2023-11-14T22:13:20Z"),
    ("time before 1970", envelope("v1", "Namespace", ld(1, ld(8, num(1, -86400)))),
     ("metadata", "creationTimestamp"), "1969-12-31T00:00:00Z"),
    ("zero time is null", envelope("v1", "Namespace", ld(1, ld(8, b""))),
     ("metadata", "creationTimestamp"), None),
    ("int-or-string as string",
     envelope("v1", "Service", ld(2, ld(1, num(3, 80) + ld(4, num(1, 1) + text(3, "http"))))),
     ("spec", "ports", 0, "targetPort"), "http"),
    ("int-or-string as int",
     envelope("v1", "Service", ld(2, ld(1, num(3, 80) + ld(4, num(1, 0) + num(2, 8080))))),
     ("spec", "ports", 0, "targetPort"), 8080),
    ("quantity map", envelope("v1", "ResourceQuota", ld(2, entry(1, "cpu", ld(2, text(1, "500m"))))),
     ("spec", "hard"), {"cpu": "500m"}),
    ("empty quantity is 0", envelope("v1", "ResourceQuota", ld(2, entry(1, "cpu", ld(2, b"")))),
     ("spec", "hard"), {"cpu": "0"}),
    ("bytes as base64", envelope("v1", "Secret", entry(2, "key", ld(2, b"\xff\x00"))),
     ("data",), {"key": "/wA="}),
    ("map entry without value", envelope("v1", "ConfigMap", entry(2, "empty", b"")),
     ("data",), {"empty": ""}),
    ("embedded VolumeSource and LocalObjectReference join their parent",
     pod(ld(1, text(1, "cfg") + ld(2, ld(19, ld(1, text(1, "settings")) + num(3, 0o644))))),
     ("spec", "volumes"), [{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}}]),
    ("embedded ProbeHandler joins Probe",
     pod(ld(2, text(1, "app") + ld(10, ld(1, ld(2, text(1, "/healthz") + ld(2, num(2, 8080)))) + num(4, 5)))),
     ("spec", "containers", 0, "livenessProbe"),
     {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}),
    ("repeated ints, one key each", pod(ld(14, num(4, 1) + num(4, 2))),
     ("spec", "securityContext", "supplementalGroups"), [1, 2]),
    ("repeated ints, packed", pod(ld(14, ld(4, varint(1) + varint(2) + varint(300)))),
     ("spec", "securityContext", "supplementalGroups"), [1, 2, 300]),
    ("a message given twice is merged",
     envelope("apps/v1", "Deployment", ld(2, num(1, 3)) + ld(2, ld(4, text(1, "Recreate")))),
     ("spec",), {"replicas": 3, "strategy": {"type": "Recreate"}}),
    ("a scalar given twice: the last wins",
     envelope("v1", "Namespace", ld(1, text(1, "first") + text(1, "second"))),
     ("metadata", "name"), "second"),
    ("unknown fields of every wire type are skipped",
     envelope("v1", "Namespace", ld(1, text(1, "lab") + num(99, 7) + ld(100, b"\xff\xff")
                                   + key(101, 5) + b"\x00" * 4 + key(102, 1) + b"\x00" * 8) + num(50, 1)),
     ("metadata",), {"name": "lab"}),
    ("unknown envelope fields are skipped", envelope("v1", "Namespace", extra=text(4, "") + num(9, 1)),
     ("kind",), "Namespace"),
    ("invalid UTF-8 is replaced, as Go's JSON encoder does",
     envelope("v1", "Namespace", ld(1, ld(11, text(1, "team") + ld(2, b"bl\xffue")))),
     ("metadata", "labels", "team"), "bl\ufffdue"),
    ("managed fields hold JSON",
     envelope("v1", "ConfigMap", ld(1, ld(17, text(1, "kubectl") + text(6, "FieldsV1")
                                          + ld(7, ld(1, b'{"f:data":{".":{}}}'))))),
     ("metadata", "managedFields", 0, "fieldsV1"), {"f:data": {".": {}}}),
    ("user extra is a map of lists",
     envelope("authentication.k8s.io/v1", "TokenReview",
              ld(3, num(1, 1) + ld(2, entry(4, "scopes", ld(2, text(1, "a") + text(1, "b")))))),
     ("status", "user", "extra"), {"scopes": ["a", "b"]}),
    ("DeleteOptions under meta.k8s.io/v1",
     envelope("meta.k8s.io/v1", "DeleteOptions", text(4, "Foreground")),
     ("propagationPolicy",), "Foreground"),
    ("DeleteOptions under a group's version", envelope("v1", "DeleteOptions", num(1, 0)),
     ("gracePeriodSeconds",), 0),
    ("evictions carry delete options",
     envelope("policy/v1", "Eviction", ld(1, text(1, "web-1")) + ld(2, text(4, "Background"))),
     ("deleteOptions",), {"propagationPolicy": "Background"}),
]


@pytest.mark.parametrize(("body", "path", "expected"), [case[1:] for case in BEHAVIOUR],
                         ids=[case[0] for case in BEHAVIOUR])
def test_decoding_behaviour(body: bytes, path: tuple[str | int, ...], expected: Any) -> None:
    obj = decode(body)
    if expected is MISSING:
        with pytest.raises(KeyError):
            dig(obj, path)
    else:
        assert dig(obj, path) == expected


KINDS = [(api_version, kind) for api_version, package in protobuf_schema.PACKAGES.items()
         for kind in protobuf_schema.KINDS[package]]


@pytest.mark.parametrize(("api_version", "kind"), KINDS, ids=[f"{v}/{k}" for v, k in KINDS])
def test_every_listed_kind_decodes(api_version: str, kind: str) -> None:
    obj = decode(envelope(api_version, kind))
    assert (obj["apiVersion"], obj["kind"]) == (api_version, kind)


# --- refusals ---------------------------------------------------------------------------------------

NAMESPACE = envelope("v1", "Namespace", ld(1, text(1, "lab")))

REFUSALS = [
    ("[Error] JSON body", b'{"kind": "Namespace"}', errors.BadRequest, "k8s\\x00 magic"),
    ("[Error] magic only", MAGIC, errors.BadRequest, "names no apiVersion and kind"),
    ("[Error] kind without descriptor", envelope("apps/v1", "StatefulSet"), errors.UnsupportedMediaType,
     "StatefulSet"),
    ("[Error] custom resource", envelope("example.com/v1", "Widget"), errors.UnsupportedMediaType, "Widget"),
    ("[Error] kind of another group", envelope("v1", "Deployment"), errors.UnsupportedMediaType,
     "Deployment"),
    ("[Error] nested message is no kind", envelope("v1", "PodSpec"), errors.UnsupportedMediaType, "PodSpec"),
    ("[Error] compressed raw", envelope("v1", "Namespace", extra=text(3, "gzip")),
     errors.UnsupportedMediaType, "gzip"),
    ("[Error] truncated", NAMESPACE[:-2], errors.BadRequest, "runs past the end"),
    ("[Error] length past the end", envelope("v1", "Namespace", key(1, 2) + varint(100) + b"ab"),
     errors.BadRequest, "runs past the end"),
    ("[Error] truncated varint", envelope("v1", "Namespace", key(50, 0) + b"\x80"), errors.BadRequest,
     "truncated varint"),
    ("[Error] overlong varint", envelope("v1", "Namespace", key(50, 0) + b"\xff" * 11), errors.BadRequest,
     "longer than 10 bytes"),
    ("[Error] message as a number", envelope("v1", "Namespace", num(1, 5)), errors.BadRequest, "wire type 0"),
    ("[Error] number as a string", envelope("apps/v1", "Deployment", ld(2, text(1, "3"))), errors.BadRequest,
     "DeploymentSpec.replicas"),
    ("[Error] group wire type", envelope("v1", "Namespace", key(50, 3)), errors.BadRequest, "wire type 3"),
    ("[Error] field number 0", envelope("v1", "Namespace", b"\x00"), errors.BadRequest, "field number 0"),
    ("[Error] int-or-string of type 2",
     envelope("v1", "Service", ld(2, ld(1, ld(4, num(1, 2))))), errors.BadRequest, "IntOrString type 2"),
    ("[Error] time after year 9999", envelope("v1", "Namespace", ld(1, ld(8, num(1, 1 << 40)))),
     errors.BadRequest, "out of range"),
    ("[Error] managed fields not JSON",
     envelope("v1", "Namespace", ld(1, ld(17, ld(7, ld(1, b"{not json"))))), errors.BadRequest, "JSON"),
]


@pytest.mark.parametrize(("body", "error", "words"), [case[1:] for case in REFUSALS],
                         ids=[case[0] for case in REFUSALS])
def test_refusals(body: bytes, error: type[errors.ApiError], words: str) -> None:
    with pytest.raises(error) as caught:
        decode(body)
    assert words in caught.value.message
    if error is errors.BadRequest:
        assert "protobuf" in caught.value.message


CONTENT_TYPES = [
    ("protobuf media type", "application/vnd.kubernetes.protobuf", b"", True),
    ("media type with parameters", "application/vnd.kubernetes.protobuf; charset=utf-8", b"", True),
    ("media type in capitals", "Application/Vnd.Kubernetes.Protobuf", NAMESPACE, True),
    ("JSON wins over the magic", "application/json", NAMESPACE, False),
    ("untyped body with the magic", None, NAMESPACE, True),
    ("empty content type, magic", "", NAMESPACE, True),
    ("untyped JSON body", None, b"{}", False),
]


@pytest.mark.parametrize(("content_type", "body", "expected"), [c[1:] for c in CONTENT_TYPES],
                         ids=[c[0] for c in CONTENT_TYPES])
def test_is_protobuf(content_type: str | None, body: bytes, expected: bool) -> None:
    assert is_protobuf(body, content_type) is expected


# --- garbage never escapes as anything but an API error -----------------------------------------------


def decode_or_refuse(body: bytes) -> None:
    try:
        json.dumps(decode(body))  # what comes out is plain JSON
    except (errors.BadRequest, errors.UnsupportedMediaType):
        pass


SMALL = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SMALL
@given(st.binary(max_size=300))
def test_random_bytes_after_the_magic(data: bytes) -> None:
    decode_or_refuse(MAGIC + data)


@SMALL
@given(kind=st.sampled_from(KINDS), raw=st.binary(max_size=300))
def test_random_raw_for_every_kind(kind: tuple[str, str], raw: bytes) -> None:
    decode_or_refuse(envelope(*kind, raw))


# Well-formed protobuf of random shape reaches deep into the descriptors (wrong wire types, odd values).
WIRE_VALUES = st.recursive(
    st.one_of(st.builds(num, st.integers(1, 40), st.integers(-(1 << 63), (1 << 64) - 1)),
              st.builds(ld, st.integers(1, 40), st.binary(max_size=12))),
    lambda inner: st.builds(lambda n, parts: ld(n, b"".join(parts)), st.integers(1, 40),
                            st.lists(inner, max_size=4)),
    max_leaves=25,
)


@SMALL
@given(kind=st.sampled_from(KINDS), parts=st.lists(WIRE_VALUES, max_size=6))
def test_random_well_formed_messages(kind: tuple[str, str], parts: list[bytes]) -> None:
    decode_or_refuse(envelope(*kind, b"".join(parts)))


@SMALL
@given(body_path=st.sampled_from(CAPTURED), data=st.data())
def test_mutated_kubectl_bodies(body_path: Path, data: st.DataObject) -> None:
    body = bytearray(body_path.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        operation = data.draw(st.sampled_from(["flip", "cut", "insert", "drop"]))
        if operation == "flip" and at < len(body):
            body[at] ^= data.draw(st.integers(1, 255))
        elif operation == "cut":
            del body[at:]
        elif operation == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del body[at:at + data.draw(st.integers(1, 4))]
    decode_or_refuse(bytes(body))


# --- the descriptor table against the real descriptors ----------------------------------------------

# kubectl carries the gzipped FileDescriptorProto of every k8s.io generated.proto it was built with.
KUBECTL_BINARIES = [Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")]
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
DESCRIPTORS = Schema("""
package google.protobuf
FileDescriptorProto  1 name  2 package  4 messageType:[DescriptorProto]
DescriptorProto      1 name  2 field:[FieldDescriptorProto]  3 nestedType:[DescriptorProto]
                     7 options:MessageOptions
FieldDescriptorProto 1 name  3 number:int!  4 label:int  5 type:int  6 typeName  8 options:FieldOptions
MessageOptions       7 mapEntry:bool
FieldOptions         65001 nullable:bool?
""")
PROTO_SCALARS = {9: "string", 12: "bytes", 8: "bool", 3: "int", 4: "int", 5: "int", 13: "int", 17: "int",
                 18: "int"}
PROTO_SPECIALS = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
    "k8s.io.api.authentication.v1.ExtraValue": "StringList",
}
# Where the JSON name is not the proto name (besides embedded structs, named "...").
PROTO_NAMES = {("authentication.v1.BoundObjectReference", 4): "uID"}


def embedded_descriptors(binary: Path) -> dict[str, dict[str, Any]]:
    """Every message of the k8s.io descriptors in a Go binary, by qualified name without the dot."""
    data = binary.read_bytes()
    found: dict[str, dict[str, Any]] = {}

    def walk(message: dict[str, Any], prefix: str) -> None:
        name = f"{prefix}.{message['name']}"
        found[name] = message
        for nested in message.get("nestedType", []):
            walk(nested, name)

    for match in re.finditer(re.escape(GZIP_HEADER), data):
        try:
            blob = zlib.decompressobj(31).decompress(data[match.start():match.start() + (1 << 21)])
        except zlib.error:
            continue
        if b"k8s.io/" in blob[:64]:
            file = DESCRIPTORS.decode_message(blob, "google.protobuf.FileDescriptorProto")
            for message in file.get("messageType", []):
                walk(message, file["package"])
    return found


def proto_name(ours: str) -> str:
    package = "k8s.io.apimachinery.pkg.apis." if ours.startswith("meta.") else "k8s.io.api."
    return package + ours


def table_disagreements(real: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name, message in protobuf.KUBERNETES.messages.items():
        descriptor = real.get(proto_name(name))
        if descriptor is None:
            problems.append(f"{name}: no such message")
            continue
        theirs = {f["number"]: f for f in descriptor.get("field", [])}
        if set(theirs) != set(message.fields):
            problems.append(f"{name}: numbers {sorted(theirs)} != ours {sorted(message.fields)}")
        for number, field in message.fields.items():
            if number not in theirs:
                continue
            proto = theirs[number]
            where = f"{name}.{field.name} ({number})"
            expected_name = PROTO_NAMES.get((name, number), field.name)
            if field.name != protobuf.INLINE and proto["name"] != expected_name:
                problems.append(f"{where}: proto name {proto['name']}")
            type_name, is_map = PROTO_SCALARS.get(proto.get("type", 0), ""), False
            if not type_name:
                target = proto["typeName"].lstrip(".")
                if real.get(target, {}).get("options", {}).get("mapEntry"):
                    is_map = True
                    value = next(f for f in real[target]["field"] if f["number"] == 2)
                    target = value.get("typeName", "").lstrip(".")
                    type_name = PROTO_SCALARS.get(value.get("type", 0), "")
                if not type_name:
                    type_name = PROTO_SPECIALS.get(target, target)
            plain = field.type in PROTO_SPECIALS.values() or field.type in protobuf.SCALARS
            ours = field.type if plain else proto_name(field.type)
            repeated = proto.get("label") == 3 and not is_map
            if (type_name, is_map, repeated) != (ours, field.map, field.repeated):
                problems.append(f"{where}: proto {type_name} map={is_map} label={proto.get('label')}")
            pointer = proto.get("options", {}).get("nullable", True)
            if field.type in protobuf.SCALARS and not field.repeated and not field.map:
                if pointer != (field.presence is Presence.KEEP):
                    problems.append(f"{where}: Go pointer={pointer}, table says {field.presence.name}")
    return problems


@pytest.mark.skipif(not any(p.exists() for p in KUBECTL_BINARIES), reason="no kubectl 1.33 binary here")
def test_descriptor_table_matches_the_descriptors_compiled_into_kubectl() -> None:
    binary = next(p for p in KUBECTL_BINARIES if p.exists())
    real = embedded_descriptors(binary)
    assert len(real) > 1000  # the scan found the descriptors at all
    assert table_disagreements(real) == []
