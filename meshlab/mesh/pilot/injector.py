"""The sidecar injector webhook, served by Pilot as istiod serves it (port 15017, path ``/inject``).

The API server POSTs an ``admission.k8s.io/v1 AdmissionReview`` for every pod CREATE that the
``MutatingWebhookConfiguration`` ``istio-sidecar-injector`` selects (namespaces labelled
``istio-injection=enabled``, pods not labelled ``sidecar.istio.io/inject=false``); the answer echoes the
request's ``uid`` and carries the injection as a base64 RFC 6902 ``patch`` (``patchType: JSONPatch``).
The API server only talks to it over HTTPS and checks the certificate against the configuration's
``caBundle`` for the name ``istiod.istio-system.svc``, so — as istiod does before Citadel signs anything —
Pilot generates a self-signed CA at start, issues itself a serving certificate, and keeps the webhook
configuration's ``caBundle`` equal to that CA (re-patching it if an apply resets it). The interception mode
and proxy image come from the ``istio-system/meshlab-mesh`` ConfigMap, re-read on the same cycle. See the
Kubernetes "Dynamic Admission Control" page and Istio's ``pkg/kube/inject/webhook.go``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import logging
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from meshlab.errors import MeshlabError
from meshlab.mesh.injection import MESH_CONFIGMAP, InjectionConfig, config_from_mesh, inject_pod, jsonpatch_for

log = logging.getLogger("meshlab.pilot.injector")

WEBHOOK_PORT = 15017
WEBHOOK_CONFIGURATION = "istio-sidecar-injector"
NAMESPACE = "istio-system"
SERVICE = "istiod"
REVIEW_API_VERSION = "admission.k8s.io/v1"

Obj = dict[str, Any]


# -- pure: one AdmissionReview ------------------------------------------------------------------------------


def review_response(review: Obj, config: InjectionConfig) -> Obj:
    """The ``AdmissionReview`` answering ``review``: a pod CREATE gets the injection patch (none when the pod
    is already injected or opted out); anything else is allowed unchanged. A review that is not v1 or has no
    ``request.uid`` raises ``MeshlabError`` (the server answers 400)."""
    if review.get("apiVersion") != REVIEW_API_VERSION or review.get("kind") != "AdmissionReview":
        raise MeshlabError(f"expected an {REVIEW_API_VERSION} AdmissionReview, got "
                           f"{review.get('apiVersion')!r} {review.get('kind')!r}")
    request = review.get("request") or {}
    uid = request.get("uid")
    if not uid:
        raise MeshlabError("the AdmissionReview has no request.uid")
    response: Obj = {"uid": uid, "allowed": True}
    pod = request.get("object")
    kind = (request.get("kind") or {}).get("kind")
    if kind == "Pod" and request.get("operation") == "CREATE" and isinstance(pod, dict):
        # At admission a generated pod has no name yet and may lack its namespace: the request has it.
        original = pod
        if request.get("namespace") and not (pod.get("metadata") or {}).get("namespace"):
            original = {**pod, "metadata": {**(pod.get("metadata") or {}), "namespace": request["namespace"]}}
        # Both sides carry the namespace, so the patch holds only what the injector added.
        ops = jsonpatch_for(original, inject_pod(original, config=config))
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(_json(ops)).decode()
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- pure: the self-signed CA and the serving certificate -------------------------------------------------------


@dataclass(frozen=True)
class ServingCredentials:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def service_names(service: str = SERVICE, namespace: str = NAMESPACE) -> list[str]:
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", f"{service}.{namespace}",
            service]


def make_credentials(dns_names: Sequence[str], ips: Sequence[str] = (), *, days: int = 365) -> ServingCredentials:
    """A fresh CA (ECDSA P-256) and a serving certificate it signed for ``dns_names`` and ``ips``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "istiod self-signed CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return ServingCredentials(
        ca_pem=ca.public_bytes(pem), cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def server_ssl_context(credentials: ServingCredentials) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # load_cert_chain reads files only; the key never leaves a private temporary directory.
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert.write_bytes(credentials.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(credentials.key_pem)
        context.load_cert_chain(cert, key)
    return context


def ca_bundle_patch(configuration: Obj, ca_pem: bytes) -> list[Obj]:
    """JSON-patch operations setting every webhook's ``clientConfig.caBundle`` to ``ca_pem`` (empty when all
    already hold it); each guarded by a ``test`` of the webhook's name, so a concurrent edit fails the patch."""
    bundle = base64.b64encode(ca_pem).decode()
    ops: list[Obj] = []
    for i, hook in enumerate(configuration.get("webhooks") or ()):
        if (hook.get("clientConfig") or {}).get("caBundle") != bundle:
            ops += [{"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")},
                    {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}]
    return ops


# -- I/O: the server and the reconcile loop ---------------------------------------------------------------------


class Injector:
    """The webhook's state: the credentials, the current mesh config, and whether the cluster trusts us yet."""

    def __init__(self, api_client: client.ApiClient, credentials: ServingCredentials, *,
                 interval: float = 3.0) -> None:
        self._api = api_client
        self.credentials = credentials
        self.config = InjectionConfig()
        self.ca_bundle_set = False
        self._interval = interval

    def app(self) -> web.Application:
        async def inject(request: web.Request) -> web.Response:
            try:
                review = await request.json()
                answer = review_response(review if isinstance(review, dict) else {}, self.config)
            except (ValueError, MeshlabError) as err:
                return web.json_response({"error": str(err)}, status=400)
            return web.json_response(answer)

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/inject", inject)
        return app

    def reconcile_once(self) -> None:
        """Blocking: re-read the mesh config, and patch the webhook's caBundle if it is not ours."""
        core = client.CoreV1Api(self._api)
        try:
            data = core.read_namespaced_config_map(MESH_CONFIGMAP, NAMESPACE).data
            self.config = config_from_mesh(data)
        except ApiException as err:
            if err.status != 404:
                log.warning("reading configmap %s/%s failed: %s %s", NAMESPACE, MESH_CONFIGMAP, err.status, err.reason)
        except MeshlabError as err:
            log.error("%s (keeping %s)", err, self.config)
        hooks = client.AdmissionregistrationV1Api(self._api)
        try:
            current = self._api.sanitize_for_serialization(
                hooks.read_mutating_webhook_configuration(WEBHOOK_CONFIGURATION))
            ops = ca_bundle_patch(current, self.credentials.ca_pem)
            if ops:
                hooks.patch_mutating_webhook_configuration(WEBHOOK_CONFIGURATION, ops)
                log.info("patched caBundle of mutatingwebhookconfiguration %s", WEBHOOK_CONFIGURATION)
            self.ca_bundle_set = True
        except ApiException as err:
            self.ca_bundle_set = False
            log.warning("mutatingwebhookconfiguration %s: %s %s (retrying)", WEBHOOK_CONFIGURATION, err.status,
                        err.reason)

    async def reconcile(self) -> None:
        """Until cancelled: keep the config fresh and the caBundle ours (every ``interval`` seconds)."""
        while True:
            await asyncio.to_thread(self.reconcile_once)
            await asyncio.sleep(self._interval if self.ca_bundle_set else min(self._interval, 1.0))

    async def serve(self, host: str, port: int = WEBHOOK_PORT) -> web.AppRunner:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=server_ssl_context(self.credentials)).start()
        log.info("sidecar injector on https://%s:%d/inject", host, port)
        return runner
