"""Admission webhooks called over real HTTPS, as the apiserver calls a mesh's sidecar injector.

Every scenario starts an aiohttp HTTPS server on 127.0.0.1 whose certificate comes from a throwaway CA made
here (SAN ``DNS:injector.mesh-system.svc`` and ``IP:127.0.0.1``); each webhook is a path on it whose
behaviour the scenario picks, and the server records what each webhook was sent.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlab.cluster.admission import AdmissionAttributes, AdmissionChain, matches
from meshlab.cluster.resources import Registry, ResourceType
from meshlab.errors import ApiError, BadRequest, Forbidden, InternalError

REGISTRY = Registry()


def _rt(group: str, plural: str) -> ResourceType:
    rt = REGISTRY.lookup(group, "v1", plural)
    assert rt is not None
    return rt


PODS, NAMESPACES, PVS = _rt("", "pods"), _rt("", "namespaces"), _rt("", "persistentvolumes")
DEPLOYMENTS = _rt("apps", "deployments")
MWCS = _rt("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
USER = {"username": "alice", "groups": ["system:authenticated"]}


# --- a throwaway CA -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_bundle: str  # base64 PEM of the CA that signed the server certificate
    other_ca_bundle: str  # base64 PEM of an unrelated CA
    cert_file: Path
    key_file: Path


HOUR = datetime.timedelta(hours=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - HOUR).not_valid_after(now + HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _bundle(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca_key, ca_cert = _make_ca("meshlab test CA")
    _, other_cert = _make_ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName("injector.mesh-system.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("injector")).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - HOUR).not_valid_after(now + HOUR)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("pki")
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(_bundle(ca_cert), _bundle(other_cert), directory / "tls.crt", directory / "tls.key")


# --- webhook behaviours ---------------------------------------------------------------------------------

Reply = tuple[int, bytes]
Behaviour = Callable[[dict[str, Any], "Server"], Awaitable[Reply]]


def _review(request: dict[str, Any], **response: Any) -> Reply:
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request["uid"], **response}}
    return 200, json.dumps(body).encode()


def allow(**extra: Any) -> Behaviour:
    async def answer(request: dict[str, Any], server: Server) -> Reply:
        return _review(request, allowed=True, **extra)
    return answer


def patch(*ops: dict[str, Any], **extra: Any) -> Behaviour:
    encoded = base64.b64encode(json.dumps(list(ops)).encode()).decode()
    return allow(patchType="JSONPatch", patch=encoded, **extra)


def deny(status: dict[str, Any], **extra: Any) -> Behaviour:
    async def answer(request: dict[str, Any], server: Server) -> Reply:
        return _review(request, allowed=False, status=status, **extra)
    return answer


async def wrong_uid(request: dict[str, Any], server: Server) -> Reply:
    return _review({"uid": "not-" + request["uid"]}, allowed=True)


async def hang(request: dict[str, Any], server: Server) -> Reply:
    await asyncio.wait_for(server.release.wait(), 10)  # released when the scenario ends
    return _review(request, allowed=True)


async def crash(request: dict[str, Any], server: Server) -> Reply:
    return 500, b"boom"


def barrier(parties: int) -> Behaviour:
    """Answer only once ``parties`` requests are in flight together: proves they were sent in parallel."""
    async def answer(request: dict[str, Any], server: Server) -> Reply:
        server.arrived += 1
        if server.arrived >= parties:
            server.all_arrived.set()
        await asyncio.wait_for(server.all_arrived.wait(), 3)
        return _review(request, allowed=True)
    return answer


ADD_SIDECAR = {"op": "add", "path": "/spec/containers/-",
               "value": {"name": "istio-proxy", "image": "meshlab/proxy:1"}}


def add_label(key: str, value: str) -> dict[str, Any]:
    return {"op": "add", "path": f"/metadata/labels/{key}", "value": value}


# --- the server and a scenario runner -------------------------------------------------------------------


@dataclass
class Call:
    webhook: str
    review: dict[str, Any]
    query: dict[str, str]
    host: str


@dataclass
class Server:
    behaviours: dict[str, Behaviour]
    calls: list[Call] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        review = await request.json()
        self.calls.append(Call(name, review, dict(request.query), request.headers.get("Host", "")))
        status, body = await self.behaviours[name](review["request"], self)
        return web.Response(status=status, body=body, content_type="application/json")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Hook:
    """One webhook of a scenario: served at ``/hooks/<name>`` unless ``target`` says otherwise."""

    name: str
    behaviour: Behaviour = field(default_factory=allow)
    config: str = "cfg"
    spec: dict[str, Any] = field(default_factory=dict)  # overrides of the webhook's fields
    target: str = "url"  # "url", "service" (injector.mesh-system), "other-service", "dead port"
    ca: str = "good"  # or "other"


def _webhook(hook: Hook, pki: Pki, port: int, dead_port: int) -> dict[str, Any]:
    path = f"/hooks/{hook.name}"
    client: dict[str, Any] = {"caBundle": pki.ca_bundle if hook.ca == "good" else pki.other_ca_bundle}
    if hook.target == "url":
        client["url"] = f"https://127.0.0.1:{port}{path}"
    elif hook.target == "dead port":
        client["url"] = f"https://127.0.0.1:{dead_port}{path}"
    else:
        name = "injector" if hook.target == "service" else "other"
        client["service"] = {"namespace": "mesh-system", "name": name, "path": path}
    spec = {
        "name": hook.name,
        "clientConfig": client,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"]}],
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": 5,
    }
    spec.update(hook.spec)
    return spec


def _configs(hooks: list[Hook], kind: str, pki: Pki, port: int, dead_port: int) -> list[dict[str, Any]]:
    by_config: dict[str, list[dict[str, Any]]] = {}
    for hook in hooks:
        by_config.setdefault(hook.config, []).append(_webhook(hook, pki, port, dead_port))
    return [{"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
             "webhooks": webhooks} for name, webhooks in by_config.items()]


def pod(labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "labels": dict(labels or {"app": "web"})},
            "spec": {"containers": [{"name": "app", "image": "meshlab/shop:1"}]}}


def pod_create(**changes: Any) -> AdmissionAttributes:
    attrs = AdmissionAttributes("CREATE", PODS, "", "shop", "web", pod(), None, USER, False)
    return replace(attrs, **changes)


@dataclass
class Outcome:
    obj: dict[str, Any] | None
    error: ApiError | None
    calls: list[Call]
    resolved: list[tuple[str, str, int]]
    warnings: list[str]
    port: int
    dead_port: int

    def called(self) -> list[str]:
        return [c.webhook for c in self.calls]


def run(pki: Pki, hooks: list[Hook], attrs: AdmissionAttributes, *, validating: bool = False,
        namespace_labels: dict[str, str] | None = None) -> Outcome:
    async def scenario() -> Outcome:
        server = Server({h.name: h.behaviour for h in hooks})
        app = web.Application()
        app.router.add_post("/hooks/{name}", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(pki.cert_file, pki.key_file)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port, dead_port = int(sock.getsockname()[1]), _free_port()
        await web.SockSite(runner, sock, ssl_context=tls).start()
        resolved: list[tuple[str, str, int]] = []

        async def resolve(namespace: str, name: str, svc_port: int) -> tuple[str, int]:
            resolved.append((namespace, name, svc_port))
            return "127.0.0.1", port

        chain = AdmissionChain(resolve_service=resolve)
        kind = "ValidatingWebhookConfiguration" if validating else "MutatingWebhookConfiguration"
        configs = _configs(hooks, kind, pki, port, dead_port)
        warnings: list[str] = []
        obj, error = None, None
        try:
            if validating:
                await chain.validate(configs, attrs, namespace_labels, warnings=warnings)
            else:
                obj = await chain.mutate(configs, attrs, namespace_labels, warnings=warnings)
        except ApiError as err:
            error = err
        finally:
            server.release.set()
            await chain.close()
            await runner.cleanup()
        return Outcome(obj, error, server.calls, resolved, warnings, port, dead_port)

    return asyncio.run(scenario())


def expect_error(outcome: Outcome, cls: type[ApiError], code: int, pattern: str) -> None:
    assert outcome.error is not None, "the request should have been rejected"
    assert isinstance(outcome.error, cls)
    assert outcome.error.code == code
    message = pattern.replace("{dead_port}", str(outcome.dead_port)).replace("{port}", str(outcome.port))
    assert re.fullmatch(message, outcome.error.message), outcome.error.message


# --- pure matching --------------------------------------------------------------------------------------


def _spec(**fields: Any) -> dict[str, Any]:
    rule = {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}
    rule.update(fields.pop("rule", {}))
    return {"name": "w", "rules": [rule], **fields}


INJECT_NS = {"matchLabels": {"istio-injection": "enabled"}}
NOT_DISABLED_NS = {
    "matchExpressions": [{"key": "istio-injection", "operator": "NotIn", "values": ["disabled"]}]
}
WEB = {"matchLabels": {"app": "web"}}
DELETE_POD = pod_create(operation="DELETE", obj=None, old_obj=pod())
NS_OBJ = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}}
NS_CREATE = pod_create(rt=NAMESPACES, namespace="", obj=NS_OBJ)
DEPLOYMENT_STATUS = pod_create(rt=DEPLOYMENTS, subresource="status")
MWC_CREATE = pod_create(rt=MWCS, namespace="", obj={"apiVersion": "admissionregistration.k8s.io/v1",
                                                    "kind": "MutatingWebhookConfiguration"})

MATCH_CASES = [
    pytest.param(_spec(rule={"resources": ["pods"]}), pod_create(), None, True,
                 id="[match] pods rule, pod create"),
    pytest.param(_spec(rule={"resources": ["pods"]}), pod_create(subresource="status"), None, False,
                 id="[skip] pods rule does not cover pods/status"),
    pytest.param(_spec(rule={"resources": ["pods/*"]}), pod_create(subresource="status"), None, True,
                 id="[match] pods/* covers pods/status"),
    pytest.param(_spec(rule={"resources": ["pods/*"]}), pod_create(), None, True,
                 id="[match] pods/* also covers the pod itself, as in the apiserver's rule matcher"),
    pytest.param(_spec(rule={"resources": ["*/status"]}), DEPLOYMENT_STATUS, None, True,
                 id="[match] */status covers deployments/status"),
    pytest.param(_spec(rule={"resources": ["*"]}), pod_create(subresource="exec"), None, False,
                 id="[skip] * does not cover subresources"),
    pytest.param(_spec(rule={"operations": ["UPDATE"]}), pod_create(), None, False,
                 id="[skip] operation UPDATE only"),
    pytest.param(_spec(rule={"apiGroups": ["apps"]}), pod_create(), None, False,
                 id="[skip] apiGroups apps"),
    pytest.param(_spec(rule={"apiVersions": ["v2"]}), pod_create(), None, False,
                 id="[skip] apiVersions v2"),
    pytest.param(_spec(rule={"scope": "Cluster"}), pod_create(), None, False,
                 id="[skip] scope Cluster, namespaced pod"),
    pytest.param(_spec(rule={"scope": "Namespaced"}), pod_create(), None, True,
                 id="[match] scope Namespaced, namespaced pod"),
    pytest.param(_spec(rule={"scope": "Namespaced"}), replace(NS_CREATE, namespace="shop"), None, False,
                 id="[skip] scope Namespaced never covers a Namespace"),
    pytest.param(_spec(rule={"scope": "Cluster"}), NS_CREATE, None, True,
                 id="[match] scope Cluster covers a Namespace"),
    pytest.param(_spec(namespaceSelector=INJECT_NS), pod_create(), {"istio-injection": "enabled"}, True,
                 id="[match] namespaceSelector istio-injection=enabled"),
    pytest.param(_spec(namespaceSelector=INJECT_NS), pod_create(), {"istio-injection": "disabled"}, False,
                 id="[skip] namespaceSelector, namespace disabled"),
    pytest.param(_spec(namespaceSelector=INJECT_NS), pod_create(), None, False,
                 id="[skip] namespaceSelector, namespace labels unknown"),
    pytest.param(_spec(namespaceSelector=NOT_DISABLED_NS), pod_create(), {}, True,
                 id="[match] namespaceSelector NotIn, unlabelled namespace"),
    pytest.param(_spec(namespaceSelector={"matchLabels": {"team": "a"}}), NS_CREATE, {"team": "stale"}, True,
                 id="[match] namespaceSelector on a Namespace uses its own new labels"),
    pytest.param(_spec(namespaceSelector=INJECT_NS), pod_create(rt=PVS, namespace="", obj={}), None, True,
                 id="[match] namespaceSelector ignored for a cluster-scoped PV"),
    pytest.param(_spec(objectSelector=WEB), pod_create(), None, True,
                 id="[match] objectSelector on new labels"),
    pytest.param(_spec(objectSelector={"matchLabels": {"app": "db"}}), pod_create(), None, False,
                 id="[skip] objectSelector, labels differ"),
    pytest.param(_spec(objectSelector=WEB), DELETE_POD, None, True,
                 id="[match] objectSelector on old labels at DELETE"),
    pytest.param(_spec(objectSelector=WEB), replace(DELETE_POD, operation="UPDATE", obj=pod({"app": "db"})),
                 None, True,
                 id="[match] objectSelector, old labels match on UPDATE"),
    pytest.param(_spec(), MWC_CREATE, None, False,
                 id="[skip] webhook configurations are exempt"),
    pytest.param({"name": "no rules"}, pod_create(), None, False,
                 id="[skip] webhook without rules"),
]


@pytest.mark.parametrize(("webhook", "attrs", "ns_labels", "expected"), MATCH_CASES)
def test_matches(webhook: dict[str, Any], attrs: AdmissionAttributes, ns_labels: dict[str, str] | None,
                 expected: bool) -> None:
    assert matches(webhook, attrs, ns_labels) is expected


def test_unusable_selector_is_a_server_error() -> None:
    webhook = _spec(objectSelector={"matchExpressions": [{"key": "a", "operator": "Near"}]})
    with pytest.raises(InternalError):
        matches(webhook, pod_create(), None)


# --- calling webhooks over HTTPS ------------------------------------------------------------------------


@dataclass
class Scenario:
    hooks: list[Hook]
    attrs: AdmissionAttributes = field(default_factory=pod_create)
    namespace_labels: dict[str, str] | None = None
    called: list[str] | None = None  # webhooks that must have received a request, in order
    error: tuple[type[ApiError], int, str] | None = None  # class, code, full-message regex
    check: Callable[[Outcome], None] | None = None


def containers(outcome: Outcome) -> list[str]:
    assert outcome.obj is not None
    return [c["name"] for c in outcome.obj["spec"]["containers"]]


def labels(outcome: Outcome) -> dict[str, str]:
    assert outcome.obj is not None
    return dict(outcome.obj["metadata"]["labels"])


def _sidecar_injected(outcome: Outcome) -> None:
    assert containers(outcome) == ["app", "istio-proxy"]


def _second_saw_first(outcome: Outcome) -> None:
    assert labels(outcome) == {"app": "web", "first": "yes", "second": "yes"}
    assert outcome.calls[1].review["request"]["object"]["metadata"]["labels"]["first"] == "yes"


def _unchanged(outcome: Outcome) -> None:
    assert outcome.obj == pod()


def _dry_run_sent(outcome: Outcome) -> None:
    request = outcome.calls[0].review["request"]
    assert request["dryRun"] is True
    assert request["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]}


def _dialled_resolved_service(outcome: Outcome) -> None:
    assert outcome.resolved == [("mesh-system", "injector", 443)]
    assert outcome.calls[0].host == "injector.mesh-system.svc:443"
    assert outcome.calls[0].query == {"timeout": "5s"}
    assert containers(outcome) == ["app", "istio-proxy"]


def _labelled_after(outcome: Outcome) -> None:
    assert labels(outcome)["after"] == "yes"


def _warnings_kept(outcome: Outcome) -> None:
    assert outcome.warnings == ["spec.foo is deprecated", "will be refused from v2"]


def _denial_reason_kept(outcome: Outcome) -> None:
    assert outcome.error is not None
    assert outcome.error.reason == ""
    assert outcome.error.to_status()["code"] == 400


INJECT_PATCH = patch(ADD_SIDECAR)
DRY_RUN = pod_create(dry_run=True)
REFUSED = r"dial tcp 127\.0\.0\.1:{dead_port}: connect: connection refused"
OTHER_SVC_TLS = (
    r'failed to call webhook: Post "https://other\.mesh-system\.svc:443/hooks/inject\?timeout=5s": '
    r"tls: failed to verify certificate: .*other\.mesh-system\.svc.*"
)
SLOW = {"timeoutSeconds": 1}
IGNORE = {"failurePolicy": "Ignore"}
STATUS_UPDATE = pod_create(operation="UPDATE", subresource="status", old_obj=pod())
ALL_OPS = {"rules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}
NOT_DISABLED = {"objectSelector": {"matchExpressions": [
    {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}}


def failed(hook: str) -> str:
    """The start of a fail-closed message, as a regex."""
    return f'Internal error occurred: failed calling webhook "{hook}": '


def _failed(hook: str, why: str, t: int = 5, port: str = "port") -> str:
    """A fail-closed message for a webhook at /hooks/<hook> on 127.0.0.1; ``{port}`` is filled in later."""
    url = rf"https://127\.0\.0\.1:{{{port}}}/hooks/{hook}\?timeout={t}s"
    return failed(hook) + f'failed to call webhook: Post "{url}": ' + why


MUTATING = [
    pytest.param(Scenario([Hook("inject", INJECT_PATCH)], called=["inject"], check=_sidecar_injected),
                 id="injector adds a sidecar container by JSON patch"),
    pytest.param(Scenario([Hook("second", patch(add_label("second", "yes")), config="b-second"),
                           Hook("first", patch(add_label("first", "yes")), config="a-first")],
                          called=["first", "second"], check=_second_saw_first),
                 id="configurations run sorted by name, each webhook sees the previous patch"),
    pytest.param(Scenario([Hook("z"), Hook("a")], called=["z", "a"]),
                 id="webhooks of one configuration run in listed order"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, spec={"namespaceSelector": INJECT_NS})],
                          namespace_labels={"istio-injection": "enabled"}, called=["inject"],
                          check=_sidecar_injected),
                 id="namespaceSelector istio-injection=enabled: injected"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, spec={"namespaceSelector": INJECT_NS})],
                          namespace_labels={}, called=[], check=_unchanged),
                 id="namespaceSelector, namespace not enabled: not called"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, spec=NOT_DISABLED)],
                          attrs=pod_create(obj=pod({"sidecar.istio.io/inject": "false"})), called=[]),
                 id="objectSelector, pod opted out: not called"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH)], attrs=STATUS_UPDATE, called=[]),
                 id="rule for pods: a pods/status update is not sent"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, target="service")], called=["inject"],
                          check=_dialled_resolved_service),
                 id="service webhook: resolved address dialled, svc DNS name verified"),
    pytest.param(Scenario([Hook("inject", target="other-service")], called=[], error=(
        InternalError, 500, failed("inject") + OTHER_SVC_TLS)),
        id="[Fail] service name not in the certificate: TLS failure"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, target="dead port")], error=(
        InternalError, 500, _failed("inject", REFUSED, port="dead_port"))),
        id="[Fail] connection refused: 500"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, target="dead port", spec=IGNORE),
                           Hook("label", patch(add_label("after", "yes")))],
                          called=["label"], check=_labelled_after),
                 id="[Ignore] connection refused: skipped, the next webhook still runs"),
    pytest.param(Scenario([Hook("slow", hang, spec=SLOW)], called=["slow"], error=(
        InternalError, 500, _failed("slow", "context deadline exceeded", t=1))),
        id="[Fail] no answer within timeoutSeconds 1: 500"),
    pytest.param(Scenario([Hook("slow", hang, spec={**SLOW, **IGNORE})], called=["slow"], check=_unchanged),
                 id="[Ignore] no answer within timeoutSeconds 1: skipped"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, ca="other")], called=[], error=(
        InternalError, 500, _failed("inject", "tls: failed to verify certificate: .+"))),
        id="[Fail] caBundle of another CA: TLS failure"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, ca="other", spec=IGNORE)], called=[],
                          check=_unchanged),
                 id="[Ignore] caBundle of another CA: skipped"),
    pytest.param(Scenario([Hook("inject", wrong_uid)], error=(
        InternalError, 500, failed("inject") + r'received invalid webhook response: expected '
        r'response\.uid="[0-9a-f-]{36}", got "not-[0-9a-f-]{36}"')),
        id="[Fail] response uid does not match the request's"),
    pytest.param(Scenario([Hook("inject", crash)], error=(
        InternalError, 500, failed("inject") + r'failed to call webhook: the server responded with '
        r'HTTP 500: "boom"')),
        id="[Fail] webhook answers HTTP 500"),
    pytest.param(Scenario([Hook("inject", spec={"admissionReviewVersions": ["v1beta1"]})], called=[], error=(
        InternalError, 500, failed("inject") + r"could not create admission objects: webhook does "
        r"not accept known AdmissionReview versions \(v1\)")),
        id="[Fail] admissionReviewVersions without v1"),
    pytest.param(Scenario([Hook("inject", spec={"clientConfig": {"url": "http://127.0.0.1:1/x"}})], error=(
        InternalError, 500, failed("inject") + r'could not get REST client: webhook URL must be '
        r'https, got "http://127\.0\.0\.1:1/x"')),
        id="[Fail] plain http URL refused"),
    pytest.param(Scenario([Hook("inject", patch({"op": "remove", "path": "/spec/nodeName"}), spec=IGNORE)],
                          error=(InternalError, 500, r"Internal error occurred: .+")),
                 id="[Ignore] a patch that does not apply still fails the request"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, spec=ALL_OPS)], attrs=DELETE_POD, error=(
        InternalError, 500, r'Internal error occurred: admission webhook "inject" attempted to modify the '
        r"object, which is not supported for this operation")),
        id="a patch on DELETE is refused"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, spec={"sideEffects": "Unknown"})],
                          attrs=pod_create(dry_run=True), called=[], error=(
        BadRequest, 400, r'admission webhook "inject" does not support dry run')),
        id="dryRun, sideEffects Unknown: 400 without calling"),
    pytest.param(Scenario([Hook("inject", INJECT_PATCH, spec={"sideEffects": "NoneOnDryRun"})],
                          attrs=pod_create(dry_run=True), called=["inject"], check=_dry_run_sent),
                 id="dryRun, sideEffects NoneOnDryRun: called with dryRun"),
    pytest.param(Scenario([Hook("policy", deny({"code": 403, "reason": "Forbidden",
                                                "message": "privileged pods are not allowed"}))], error=(
        Forbidden, 403, r'admission webhook "policy" denied the request: privileged pods are not allowed')),
        id="denial with code 403 and a message"),
    pytest.param(Scenario([Hook("policy", deny({"message": "no"}))], check=_denial_reason_kept, error=(
        ApiError, 400, r'admission webhook "policy" denied the request: no')),
        id="denial without a code: 400"),
    pytest.param(Scenario([Hook("policy", deny({}))], error=(
        ApiError, 400, r'admission webhook "policy" denied the request without explanation')),
        id="denial without a message or reason"),
    pytest.param(Scenario([Hook("a", allow(warnings=["spec.foo is deprecated"])),
                           Hook("b", deny({"code": 403}, warnings=["will be refused from v2"]))],
                          check=_warnings_kept, error=(
        ApiError, 403, r'admission webhook "b" denied the request without explanation')),
        id="warnings reach the caller, even when the request is denied"),
    pytest.param(Scenario([Hook("first", patch(add_label("first", "yes")), config="a",
                                spec={"reinvocationPolicy": "IfNeeded"}),
                           Hook("second", patch(add_label("second", "yes")), config="b")],
                          called=["first", "second", "first"]),
                 id="reinvocationPolicy IfNeeded: asked again after a later webhook changed the object"),
    pytest.param(Scenario([Hook("first", patch(add_label("first", "yes")), config="a"),
                           Hook("second", patch(add_label("second", "yes")), config="b")],
                          called=["first", "second"]),
                 id="reinvocationPolicy Never: asked once"),
]


def _check(outcome: Outcome, case: Scenario) -> None:
    if case.called is not None:
        assert outcome.called() == case.called
    if case.error is None:
        assert outcome.error is None, outcome.error
    else:
        expect_error(outcome, *case.error)
    if case.check is not None:
        case.check(outcome)


@pytest.mark.parametrize("case", MUTATING)
def test_mutating_webhooks(pki: Pki, case: Scenario) -> None:
    _check(run(pki, case.hooks, case.attrs, namespace_labels=case.namespace_labels), case)


VALIDATING = [
    pytest.param(Scenario([Hook("a", barrier(2)), Hook("b", barrier(2))]),
                 id="all matching webhooks are asked at once"),
    pytest.param(Scenario([Hook("ok"), Hook("policy", deny({"code": 403, "reason": "Forbidden",
                                                            "message": "no root"}))], error=(
        Forbidden, 403, r'admission webhook "policy" denied the request: no root')),
        id="one denial rejects the request"),
    pytest.param(Scenario([Hook("v", INJECT_PATCH)], error=(
        InternalError, 500, failed("v") + "received invalid webhook response: validating webhook "
        "may not return response.patch")),
        id="[Fail] a validating webhook may not patch"),
    pytest.param(Scenario([Hook("v", target="dead port", spec=IGNORE), Hook("w")], called=["w"]),
                 id="[Ignore] connection refused: allowed"),
    pytest.param(Scenario([Hook("v", spec={"sideEffects": "Some"})], attrs=DRY_RUN, called=[],
                          error=(BadRequest, 400, r'admission webhook "v" does not support dry run')),
                 id="dryRun, sideEffects Some: 400 without calling"),
]


@pytest.mark.parametrize("case", VALIDATING)
def test_validating_webhooks(pki: Pki, case: Scenario) -> None:
    outcome = run(pki, case.hooks, case.attrs, validating=True, namespace_labels=case.namespace_labels)
    if case.called is not None:
        outcome.calls.sort(key=lambda c: c.webhook)  # sent in parallel: arrival order is not defined
    _check(outcome, case)


def test_review_describes_the_request(pki: Pki) -> None:
    outcome = run(pki, [Hook("a"), Hook("b")], pod_create())
    first, second = (c.review for c in outcome.calls)
    assert (first["apiVersion"], first["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    request = first["request"]
    assert request["uid"] != second["request"]["uid"]
    assert request["kind"] == request["requestKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    pods = {"group": "", "version": "v1", "resource": "pods"}
    assert request["resource"] == request["requestResource"] == pods
    assert "subResource" not in request
    assert (request["name"], request["namespace"], request["operation"]) == ("web", "shop", "CREATE")
    assert request["userInfo"] == USER
    assert (request["object"], request["oldObject"], request["dryRun"]) == (pod(), None, False)
    assert request["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
