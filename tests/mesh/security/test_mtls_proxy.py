"""mTLS through real sidecars on loopback: Pilot's ADS server, a reviews sidecar and a client sidecar, with
certificates from a test CA (the in-memory provider stands where Citadel's client runs in a pod)."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from meshlab.mesh.pilot.model import AuthorizationPolicy, Endpoint, MeshState, PeerAuthentication, Service, ServicePort
from meshlab.mesh.xds.node import ProxyIdentity
from tests.mesh.proxy.harness import CLIENT_IP, Backend, Mesh, RunningProxy, send
from tests.mesh.security.certs import Authority, StaticProvider, WorkloadCertificate, spiffe

REVIEWS_IP, REVIEWS_APP = "127.0.71.10", "127.0.72.10"
PORT = 9080
ROOT = Authority()
OTHER_ROOT = Authority("another mesh")
REVIEWS_ID = ProxyIdentity(ip=REVIEWS_IP, pod="reviews-v1", namespace="default",
                           labels={"app": "reviews", "version": "v1"}, service_account="reviews",
                           app_address=f"{REVIEWS_APP}:{PORT}")
CLIENT_ID = ProxyIdentity(ip=CLIENT_IP, pod="sleep", namespace="default", labels={"app": "sleep"},
                          service_account="sleep")


def state(*peer: PeerAuthentication, policies: tuple[AuthorizationPolicy, ...] = ()) -> MeshState:
    endpoint = Endpoint(REVIEWS_IP, {"http": PORT}, {"app": "reviews", "version": "v1"}, True, "reviews-v1",
                        "default", "reviews", True)
    return MeshState((Service("reviews", "default", "10.96.0.20", (ServicePort("http", PORT),)),),
                     {("default", "reviews"): (endpoint,)}, peer_authentications=peer,
                     authorization_policies=policies)


def namespace_mode(mode: str) -> PeerAuthentication:
    return PeerAuthentication("default", "default", {"mtls": {"mode": mode}})


async def start(mesh: Mesh, identity: ProxyIdentity, certificate: WorkloadCertificate | None,
                ports: tuple[int, ...]) -> tuple[RunningProxy, StaticProvider]:
    provider = StaticProvider(certificate)
    proxy = await mesh.sidecar(identity, ports)
    proxy.sidecar.tls.follow(provider)
    return proxy, provider


def client_context(certificate: WorkloadCertificate | None, roots: bytes = ROOT.pem) -> ssl.SSLContext:
    """Python's ssl as a mesh client: trusts ``roots``, presents ``certificate`` (if any)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=roots.decode())
    if certificate is not None:
        with tempfile.TemporaryDirectory() as directory:
            chain, key = Path(directory) / "chain.pem", Path(directory) / "key.pem"
            chain.write_bytes(certificate.chain_pem)
            key.write_bytes(certificate.key_pem)
            context.load_cert_chain(chain, key)
    return context


async def get(context: ssl.SSLContext | None, path: str = "/", host: str = REVIEWS_IP) -> tuple[int, str]:
    """One HTTP/1.1 GET straight to the reviews sidecar's inbound port; (0, reason) if the connection fails."""
    try:
        reader, writer = await asyncio.open_connection(host, PORT, ssl=context)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as err:
        return 0, f"{type(err).__name__}: {err}"
    if not data:
        return 0, "connection closed"
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def run(state_: MeshState, body: Callable[[Mesh, RunningProxy, StaticProvider], Awaitable[None]], *,
        reviews_cert: WorkloadCertificate | None = None, delay: float = 0.0) -> None:
    async def main() -> None:
        backend = Backend("reviews-v1", REVIEWS_APP, delay=delay)
        async with Mesh(state_, [backend]) as mesh:
            proxy, provider = await start(mesh, REVIEWS_ID, reviews_cert or ROOT.issue(spiffe("default", "reviews")),
                                          (PORT,))
            await body(mesh, proxy, provider)

    asyncio.run(asyncio.wait_for(main(), 30))


SLEEP_CERT = ROOT.issue(spiffe("default", "sleep"))
NOW = datetime.now(UTC)


@pytest.mark.parametrize(("mode", "plaintext", "mtls"), [
    pytest.param("STRICT", 0, 200, id="strict-refuses-plaintext-accepts-mtls"),
    pytest.param("PERMISSIVE", 200, 200, id="permissive-answers-both-on-one-port"),
    pytest.param("DISABLE", 200, 0, id="disable-is-plaintext-only"),
])
def test_peer_authentication_modes_on_the_wire(mode: str, plaintext: int, mtls: int) -> None:
    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        assert (await get(None))[0] == plaintext
        status, text = await get(client_context(SLEEP_CERT))
        assert status == mtls, text
        if mtls:
            assert proxy.lines[-1].endswith(f'"{spiffe("default", "sleep")}" mtls=true')
            assert proxy.sidecar.records[-1].peer_principal == spiffe("default", "sleep")

    run(state(namespace_mode(mode)), body)


@pytest.mark.parametrize(("certificate", "roots", "reason"), [
    pytest.param(OTHER_ROOT.issue(spiffe("default", "sleep")), ROOT.pem, "certificate verify failed",
                 id="another-root"),
    pytest.param(ROOT.issue(spiffe("default", "sleep"), not_before=NOW - timedelta(days=2),
                            not_after=NOW - timedelta(days=1)), ROOT.pem, "certificate has expired", id="expired"),
    pytest.param(ROOT.issue(spiffe("default", "sleep"), not_before=NOW + timedelta(days=1),
                            not_after=NOW + timedelta(days=2)), ROOT.pem, "certificate is not yet valid",
                 id="not-yet-valid"),
    pytest.param(ROOT.issue(spiffe("default", "sleep", "evil.example")), ROOT.pem, "trust domain evil.example",
                 id="wrong-trust-domain"),
    pytest.param(None, ROOT.pem, "", id="no-client-certificate"),
])
def test_strict_refuses_bad_peers_with_a_logged_reason(certificate: WorkloadCertificate | None, roots: bytes,
                                                       reason: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        status, _text = await get(client_context(certificate, roots))
        assert status == 0
        await asyncio.sleep(0.1)  # the server logs after its side of the handshake

    with caplog.at_level(logging.WARNING, logger="meshlab.mesh.proxy.server"):
        run(state(namespace_mode("STRICT")), body)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and reason in refusals[-1], refusals


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_without_a_client_certificate_fails_on_strict(version: str) -> None:
    """TLS 1.2: the handshake itself fails (s_client exits non-zero). TLS 1.3 sends the client's Finished
    before the server judges its (missing) certificate, so s_client may see the handshake done — but the
    server closes the connection and no HTTP answer ever comes."""
    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        with tempfile.NamedTemporaryFile(suffix=".pem") as ca:
            ca.write(ROOT.pem)
            ca.flush()
            done = await asyncio.to_thread(
                subprocess.run, ["openssl", "s_client", "-connect", f"{REVIEWS_IP}:{PORT}", "-CAfile", ca.name,
                                 version, "-quiet", "-no_ign_eof"],
                input=b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n", capture_output=True,
                timeout=10)
        assert b"HTTP/1.1" not in done.stdout
        if version == "-tls1_2":
            assert done.returncode != 0, done.stderr  # the handshake is aborted

    run(state(namespace_mode("STRICT")), body)


def test_rotation_keeps_in_flight_requests_and_new_connections_get_the_new_certificate() -> None:
    async def body(mesh: Mesh, proxy: RunningProxy, provider: StaticProvider) -> None:
        context = client_context(SLEEP_CERT)
        slow = asyncio.create_task(get(context, "/slow"))
        await asyncio.sleep(0.3)  # the request is at the backend, which takes 1 s
        fresh = ROOT.issue(spiffe("default", "reviews"))
        provider.rotate(fresh)
        assert (await slow)[0] == 200
        _reader, writer = await asyncio.open_connection(REVIEWS_IP, PORT, ssl=context)
        served = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        assert served == ssl.PEM_cert_to_DER_cert(fresh.chain_pem.decode().split("-----END CERTIFICATE-----")[0]
                                                  + "-----END CERTIFICATE-----\n")
        assert proxy.sidecar.tls.rotations == 2

    run(state(namespace_mode("STRICT")), body, delay=1.0)


EXPIRED_REVIEWS = ROOT.issue(spiffe("default", "reviews"), not_before=NOW - timedelta(days=2),
                             not_after=NOW - timedelta(days=1))


@pytest.mark.parametrize(("server_cert", "status", "reason"), [
    pytest.param(ROOT.issue(spiffe("default", "reviews")), 200, "", id="server-is-the-expected-account"),
    pytest.param(ROOT.issue(spiffe("default", "ratings")), 503, "spiffe://cluster.local/ns/default/sa/ratings",
                 id="server-with-another-identity-is-refused"),
    pytest.param(EXPIRED_REVIEWS, 503, "certificate has expired", id="expired-server-is-refused"),
])
def test_auto_mtls_between_sidecars_verifies_the_server(server_cert: WorkloadCertificate, status: int, reason: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        client, _ = await start(mesh, CLIENT_ID, SLEEP_CERT, (15001,))
        async with aiohttp.ClientSession() as http:
            got, _headers, text = await send(http, "http://reviews:9080/")
        assert got == status, text
        if status == 200:
            assert proxy.lines[-1].endswith(f'"{spiffe("default", "sleep")}" mtls=true')
            assert client.sidecar.records[-1].upstream_mtls  # the client side's record, for telemetry

    with caplog.at_level(logging.WARNING, logger="meshlab.mesh.proxy.upstream"):
        run(state(namespace_mode("STRICT")), body, reviews_cert=server_cert)
    if reason:
        assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(("path", "status", "body_text"), [
    pytest.param("/reviews/1", 200, "reviews-v1", id="other-paths-pass"),
    pytest.param("/admin/config", 403, "RBAC: access denied", id="denied-path-gets-envoys-403"),
])
def test_authorization_policy_applies_on_the_inbound_side(path: str, status: int, body_text: str) -> None:
    deny = AuthorizationPolicy("deny-admin", "default", {
        "selector": {"matchLabels": {"app": "reviews"}}, "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]})

    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        got, text = await get(client_context(SLEEP_CERT), path)
        assert (got, body_text in text) == (status, True)

    run(state(policies=(deny,)), body)


def test_a_new_policy_applies_to_connections_already_open() -> None:
    deny_all = AuthorizationPolicy("allow-nothing", "default", {})

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(b"GET /reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        return int(head.split()[1])

    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        reader, writer = await asyncio.open_connection(REVIEWS_IP, PORT, ssl=client_context(SLEEP_CERT))
        assert await exchange(reader, writer) == 200
        await mesh.update(state(policies=(deny_all,)))
        await asyncio.sleep(0.1)  # the listener reconciliation after the update
        assert await exchange(reader, writer) == 403  # same keep-alive connection
        writer.close()

    run(state(), body)


def test_admin_shows_the_certificate_and_the_secrets_without_the_key() -> None:
    async def body(mesh: Mesh, proxy: RunningProxy, _: StaticProvider) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{REVIEWS_IP}:15000/certs") as r:
                certs = (await r.json())["certificates"][0]
            async with http.get(f"http://{REVIEWS_IP}:15000/config_dump") as r:
                dump = await r.json()
        assert certs["spiffe_id"] == spiffe("default", "reviews")
        assert certs["cert_chain"][0]["subject_alt_names"] == [{"uri": spiffe("default", "reviews")}]
        not_after = proxy.sidecar.tls.certificate.not_after.replace(microsecond=0)
        assert certs["cert_chain"][0]["expiration_time"] == not_after.isoformat()
        assert certs["cert_chain"][0]["days_until_expiration"] == "0"  # 24 h certificates, as Istio's
        secrets = next(c for c in dump["configs"] if c["@type"].endswith("SecretsConfigDump"))
        by_name = {s["name"]: s["secret"] for s in secrets["dynamicActiveSecrets"]}
        assert sorted(by_name) == ["ROOTCA", "default"]
        key = by_name["default"]["tlsCertificate"]["privateKey"]["inlineBytes"]
        assert base64.b64decode(key) == b"[redacted]"
        assert base64.b64decode(by_name["ROOTCA"]["validationContext"]["trustedCa"]["inlineBytes"]) == ROOT.pem

    run(state(), body)


NEW_ROOT = Authority("meshlab test root 2")


@pytest.mark.parametrize(("server_roots", "client_cert", "client_roots", "status"), [
    pytest.param(ROOT.pem + NEW_ROOT.pem, SLEEP_CERT, ROOT.pem + NEW_ROOT.pem, 200,
                 id="overlap-accepts-an-old-root-client"),
    pytest.param(ROOT.pem + NEW_ROOT.pem, NEW_ROOT.issue(spiffe("default", "sleep")), ROOT.pem + NEW_ROOT.pem, 200,
                 id="overlap-accepts-a-new-root-client"),
    pytest.param(NEW_ROOT.pem, SLEEP_CERT, ROOT.pem + NEW_ROOT.pem, 0, id="after-overlap-old-root-refused"),
])
def test_root_rotation_with_overlap(server_roots: bytes, client_cert: WorkloadCertificate, client_roots: bytes,
                                    status: int) -> None:
    """Citadel's root rotation as the proxy sees it: a certificate from the new root with both roots as the
    bundle during the overlap, then the new root alone."""
    async def body(mesh: Mesh, proxy: RunningProxy, provider: StaticProvider) -> None:
        provider.rotate(NEW_ROOT.issue(spiffe("default", "reviews"), roots_pem=server_roots))
        assert (await get(client_context(client_cert, client_roots)))[0] == status

    run(state(namespace_mode("STRICT")), body)
