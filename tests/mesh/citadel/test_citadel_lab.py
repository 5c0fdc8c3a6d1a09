"""Citadel as a pod in the embedded lab (``meshlab mesh install`` deploys ``citadel.yaml``): it publishes the trust
bundle into a new namespace; a pod's projected token gets a certificate from inside the pod; a service account's
token gets a certificate for exactly that account (Citadel found through the API when DNS fails, as the proxy
finds it); a forged CSR still gets the caller's own identity; no, a bad or a foreign-audience token is
UNAUTHENTICATED; ``/debug/stats`` counts it all; ``meshlab citadel rotate-root`` keeps old and new certificates
valid during the overlap, after which only the new root is trusted; a plug-in CA from the Secret ``cacerts``
signs after a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import meshlab.lab
from meshlab import cli
from meshlab.errors import CaError
from meshlab.mesh import installing
from meshlab.mesh.citadel import ca_pb2
from meshlab.mesh.citadel.ca import CertificateAuthority, build_csr, generate_key, load_certificates
from meshlab.mesh.citadel.client import METHOD, CertificateProvider, WorkloadCertificate
from meshlab.mesh.citadel.publishing import CONFIGMAP, KEY
from meshlab.mesh.citadel.verification import verify_chain
from meshlab.mesh.proxy.main import ApiResolver
from tests.conftest import RunningLab

pytestmark = pytest.mark.slow
CA_ADDRESS = "istio-citadel.istio-system.svc:15012"


@pytest.fixture(scope="module")
def mesh(lab: RunningLab) -> Iterator[tuple[meshlab.lab.Lab, str]]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    namespace = "citadel-" + os.urandom(2).hex()
    try:
        installing.install(handle, timeout=60)
        handle.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        handle.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}}, namespace=namespace)
        yield handle, namespace
    finally:
        handle.delete("namespace", namespace)
        installing.uninstall(handle)
        handle.close()


def bundle(handle: meshlab.lab.Lab, namespace: str, *, roots: int = 1, timeout: float = 20) -> bytes:
    """The namespace's ``istio-ca-root-cert`` once it holds ``roots`` certificates."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = handle.clients.core.read_namespaced_config_map(CONFIGMAP, namespace).data or {}
            pem = str(data.get(KEY) or "").encode()
            if len(load_certificates(pem)) == roots:
                return pem
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace}/{CONFIGMAP} does not hold {roots} root(s)")
        time.sleep(0.2)


def token(handle: meshlab.lab.Lab, namespace: str, account: str = "web", audience: str = "istio-ca") -> str:
    # What the kubelet projects into a pod for Istio (audience istio-ca).
    request: Any = {"spec": {"audiences": [audience], "expirationSeconds": 3600}}
    answer: Any = handle.clients.core.create_namespaced_service_account_token(account, namespace, request)
    return str(answer.status.token)


def certificate(handle: meshlab.lab.Lab, namespace: str, tmp_path: Path, roots: bytes) -> WorkloadCertificate:
    token_path = tmp_path / "istio-token"
    token_path.write_text(token(handle, namespace))
    resolve = ApiResolver(namespace, handle.clients.api_client)

    async def main() -> WorkloadCertificate:
        certs = CertificateProvider(CA_ADDRESS, token_path, ca_roots_pem=roots, ttl=600,
                                    resolve=lambda: asyncio.to_thread(resolve, CA_ADDRESS),
                                    trust_domain="cluster.local")
        return await asyncio.wait_for(certs.request(), 20)

    return asyncio.run(main())


def create(handle: meshlab.lab.Lab, namespace: str, roots: bytes, csr: bytes,
           metadata: tuple[tuple[str, str], ...]) -> list[str]:
    target = ApiResolver(namespace, handle.clients.api_client)(CA_ADDRESS)
    options = [("grpc.ssl_target_name_override", "istio-citadel.istio-system.svc"), ("grpc.enable_http_proxy", 0)]
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(roots), options=options) as channel:
        call = channel.unary_unary(METHOD, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                                   response_deserializer=ca_pb2.IstioCertificateResponse.FromString)
        response = call(ca_pb2.IstioCertificateRequest(csr=csr.decode(), validity_duration=600), metadata=metadata,
                        timeout=20)
        return list(response.cert_chain)


def test_the_trust_bundle_reaches_every_namespace(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    assert bundle(handle, namespace) == bundle(handle, installing.NAMESPACE)


def test_a_service_account_token_gets_its_own_certificate(mesh: tuple[meshlab.lab.Lab, str], tmp_path: Path) -> None:
    handle, namespace = mesh
    roots = bundle(handle, namespace)
    cert = certificate(handle, namespace, tmp_path, roots)
    assert cert.spiffe_id == f"spiffe://cluster.local/ns/{namespace}/sa/web"
    verify_chain(cert.chain_pem, roots, trust_domain="cluster.local")


# Runs inside the pod: istio-agent's part, with the pod's projected token and mounted trust bundle, finding
# Citadel through the API (the lab has no cluster DNS). MESHLAB_MOUNTS maps a mount path to where the lab put it.
IN_POD = """
import asyncio, json, os, sys
from pathlib import Path
from meshlab.mesh.citadel.client import CertificateProvider
from meshlab.mesh.proxy.main import ApiResolver, in_cluster_api
mounts = json.loads(os.environ.get("MESHLAB_MOUNTS") or "{}")
def real(path):
    for target in sorted(mounts, key=len, reverse=True):
        if path.startswith(target.rstrip("/") + "/"):
            return mounts[target] + path[len(target.rstrip("/")):]
    return path
address = "istio-citadel.istio-system.svc:15012"
resolve = ApiResolver(sys.argv[1], in_cluster_api())
async def main():
    certs = CertificateProvider(address, Path(real("/var/run/secrets/tokens/istio-token")), ca_roots_pem=None,
                                ttl=600, resolve=lambda: asyncio.to_thread(resolve, address),
                                trust_domain="cluster.local",
                                roots_path=Path(real("/var/run/secrets/istio/root-cert.pem")))
    cert = await asyncio.wait_for(certs.start(), 30)
    await certs.stop()
    print(cert.spiffe_id)
asyncio.run(main())
"""


def test_a_pods_projected_token_gets_its_certificate(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    bundle(handle, namespace)  # the pod mounts istio-ca-root-cert: it must exist first
    handle.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "workload"}, "spec": {
        "serviceAccountName": "web", "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "app", "image": "meshlab/meshlab:dev",
                        "command": ["python", "-c", "import time; time.sleep(10**6)"],
                        "volumeMounts": [{"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
                                         {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"}]}],
        "volumes": [{"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                        "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                    {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}]}},
                 namespace=namespace)
    handle.wait_ready("pod", "workload", namespace=namespace, timeout=60)
    out = handle.kubectl("exec", "-n", namespace, "workload", "--", "python", "-c", IN_POD, namespace, timeout=60)
    assert out.strip().splitlines()[-1] == f"spiffe://cluster.local/ns/{namespace}/sa/web"


def test_a_forged_csr_gets_the_callers_identity(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    roots = bundle(handle, namespace)
    csr = build_csr(generate_key(), uris=["spiffe://cluster.local/ns/istio-system/sa/istio-citadel"])
    chain = create(handle, namespace, roots, csr, (("authorization", f"Bearer {token(handle, namespace)}"),))
    assert verify_chain("".join(chain), roots).spiffe_id == f"spiffe://cluster.local/ns/{namespace}/sa/web"


@pytest.mark.parametrize("audience", [
    pytest.param(None, id="[Error] no token"),
    pytest.param("", id="[Error] invalid token"),
    pytest.param("vault", id="[Error] a token for another audience"),
])
def test_callers_without_a_valid_token_are_unauthenticated(mesh: tuple[meshlab.lab.Lab, str],
                                                           audience: str | None) -> None:
    handle, namespace = mesh
    metadata: tuple[tuple[str, str], ...] = ()
    if audience is not None:
        bearer = token(handle, namespace, audience=audience) if audience else "not.a.token"
        metadata = (("authorization", f"Bearer {bearer}"),)
    with pytest.raises(grpc.RpcError) as caught:
        create(handle, namespace, bundle(handle, namespace), build_csr(generate_key()), metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_stats_count_what_citadel_did(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh  # the tests above issued certificates, were refused twice and caught a forgery
    stats = json.loads(handle.get("istio-citadel", 15014, "/debug/stats", namespace=installing.NAMESPACE))
    assert stats["issued"] >= 2 and stats["refused"] >= 2 and stats["forged"] >= 1
    assert stats["ca"] == "istio-ca-secret" and stats["trustDomain"] == "cluster.local"
    assert "PRIVATE" not in json.dumps(stats)
    roots = handle.get("istio-citadel", 15014, "/roots", namespace=installing.NAMESPACE)
    assert roots.encode() == bundle(handle, namespace) and "PRIVATE" not in roots


def test_root_rotation_overlap_keeps_certificates_valid_then_ends(mesh: tuple[meshlab.lab.Lab, str],
                                                                  tmp_path: Path, lab: RunningLab) -> None:
    handle, namespace = mesh
    old_roots = bundle(handle, namespace)
    before = certificate(handle, namespace, tmp_path, old_roots)
    assert cli.main(["citadel", "rotate-root", "--overlap", "5s", "--kubeconfig", str(lab.kubeconfig)]) == 0
    both = bundle(handle, namespace, roots=2)  # old + new, published by Citadel within seconds
    assert both.startswith(old_roots)
    # Citadel's serving certificate comes from the new root too; the client trusts the bundle.
    after = certificate(handle, namespace, tmp_path, both)
    verify_chain(before.chain_pem, both, trust_domain="cluster.local")
    verify_chain(after.chain_pem, both, trust_domain="cluster.local")
    with pytest.raises(CaError, match="not signed by a trusted root"):
        verify_chain(after.chain_pem, old_roots)  # really issued by the new root
    # The overlap ends: only the new root stays, and certificates from the old one stop verifying.
    final = bundle(handle, namespace, roots=1, timeout=30)
    assert final == both[len(old_roots):]
    verify_chain(after.chain_pem, final)
    with pytest.raises(CaError, match="not signed by a trusted root"):
        verify_chain(before.chain_pem, final)
    # Citadel's own serving certificate was re-issued from the new root: a client trusting only it gets through.
    assert certificate(handle, namespace, tmp_path, final).spiffe_id.endswith("/sa/web")


def test_a_plugin_ca_from_cacerts_signs_after_a_restart(mesh: tuple[meshlab.lab.Lab, str], tmp_path: Path) -> None:
    """Istio's "plug in CA certificates" task: an operator's intermediate under a shared root (runs last: it
    replaces the module's CA)."""
    handle, namespace = mesh
    shared_root = CertificateAuthority.create_self_signed("cluster.local")
    intermediate = shared_root.issue_intermediate("cluster-1 intermediate CA")
    data = {k: base64.b64encode(v).decode() for k, v in intermediate.secret_data().items()}
    handle.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cacerts"}, "data": data},
                 namespace=installing.NAMESPACE)
    handle.clients.core.delete_collection_namespaced_pod(installing.NAMESPACE, label_selector="app=istio-citadel")
    # The new Citadel pod loads cacerts and publishes the shared root in place of its own.
    deadline = time.monotonic() + 60
    while bundle(handle, namespace) != shared_root.roots_pem:
        assert time.monotonic() < deadline, "the plug-in root was not published"
        time.sleep(0.5)
    handle.wait_ready("deployment", "istio-citadel", namespace=installing.NAMESPACE, timeout=60)
    cert = certificate(handle, namespace, tmp_path, shared_root.roots_pem)
    chain = load_certificates(cert.chain_pem)
    assert [c.subject for c in chain[1:]] == [intermediate.certificate.subject]  # leaf, intermediate (root apart)
    verify_chain(cert.chain_pem, shared_root.roots_pem, trust_domain="cluster.local")
