"""The proxy's CertificateProvider against a real Citadel gRPC server on 127.0.0.1 (TLS, a fake token reviewer):
first certificate, forged CSR, refused tokens, short-TTL renewal, DNS-less resolution, a root rotation."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from meshlab.mesh.citadel import ca_pb2
from meshlab.mesh.citadel.ca import CertificateAuthority, build_csr, generate_key
from meshlab.mesh.citadel.client import METHOD, CertificateProvider, WorkloadCertificate, renewal_delay
from meshlab.mesh.citadel.identity import WorkloadIdentity
from meshlab.mesh.citadel.server import CertificateService, Policy, Unauthenticated, serve, server_credentials
from meshlab.mesh.citadel.verification import verify_chain

CA_HOST = "istio-citadel.istio-system.svc"
TOKENS = {"token-web": ("shop", "web"), "token-db": ("shop", "db")}


class FakeReviewer:
    """Stands in for the API server's TokenReview: a fixed table of tokens."""

    async def authenticate(self, token: str, *, trust_domain: str) -> WorkloadIdentity:
        if token not in TOKENS:
            raise Unauthenticated("the token was rejected by the API server: invalid bearer token")
        return WorkloadIdentity(trust_domain, *TOKENS[token])


@asynccontextmanager
async def citadel(authority: CertificateAuthority) -> AsyncIterator[tuple[CertificateService, int]]:
    service = CertificateService(Policy(authority), FakeReviewer())
    server, port = await serve(service, credentials=server_credentials(authority, [CA_HOST], ["127.0.0.1"]))
    try:
        yield service, port
    finally:
        await server.stop(grace=None)


def resolver(port: int) -> Callable[[], Awaitable[str]]:
    async def resolve() -> str:
        return f"127.0.0.1:{port}"
    return resolve


def provider(tmp_path: Path, port: int, roots: bytes | None, *, token: str = "token-web", ttl: float | None = 3600,
             **kwargs: Any) -> CertificateProvider:
    token_path = tmp_path / "istio-token"
    token_path.write_text(token)
    return CertificateProvider(f"{CA_HOST}:15012", token_path, ca_roots_pem=roots, ttl=ttl, resolve=resolver(port),
                               trust_domain="cluster.local", max_backoff=0.5, **kwargs)


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create_self_signed("cluster.local")


def test_first_certificate_carries_the_token_identity(tmp_path: Path, authority: CertificateAuthority) -> None:
    async def main() -> WorkloadCertificate:
        async with citadel(authority) as (_, port):
            certs = provider(tmp_path, port, authority.roots_pem)
            try:
                return await certs.start()
            finally:
                await certs.stop()

    cert = asyncio.run(main())
    assert cert.spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"
    assert b"PRIVATE KEY" in cert.key_pem and b"PRIVATE KEY" not in cert.chain_pem
    assert "PRIVATE" not in repr(cert)
    assert verify_chain(cert.chain_pem, cert.roots_pem, trust_domain="cluster.local").service_account == "web"
    assert dt.timedelta(minutes=59) < cert.not_after - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)


async def call(port: int, roots: bytes, csr: bytes, metadata: tuple[tuple[str, str], ...], *,
               validity: int = 600) -> ca_pb2.IstioCertificateResponse:
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                       options=[("grpc.ssl_target_name_override", CA_HOST)]) as channel:
        method = channel.unary_unary(METHOD, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                                     response_deserializer=ca_pb2.IstioCertificateResponse.FromString)
        response: ca_pb2.IstioCertificateResponse = await method(
            ca_pb2.IstioCertificateRequest(csr=csr.decode(), validity_duration=validity), metadata=metadata, timeout=5)
        return response


@pytest.mark.parametrize(("metadata", "code"), [
    pytest.param((), grpc.StatusCode.UNAUTHENTICATED, id="[Error] no token"),
    pytest.param((("authorization", "Bearer forged"),), grpc.StatusCode.UNAUTHENTICATED, id="[Error] invalid token"),
    pytest.param((("authorization", "Basic dXNlcjpwdw=="),), grpc.StatusCode.UNAUTHENTICATED,
                 id="[Error] not a bearer token"),
])
def test_callers_without_a_valid_token_are_refused(
        authority: CertificateAuthority, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode) -> None:
    async def main() -> None:
        async with citadel(authority) as (service, port):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(port, authority.roots_pem, build_csr(generate_key()), metadata)
            assert caught.value.code() == code
            assert service.issued == 0 and service.refused == 1

    asyncio.run(main())


def test_a_csr_for_another_identity_yields_the_callers_own(authority: CertificateAuthority,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> ca_pb2.IstioCertificateResponse:
        async with citadel(authority) as (service, port):
            csr = build_csr(generate_key(), uris=["spiffe://cluster.local/ns/shop/sa/db"])
            response = await call(port, authority.roots_pem, csr, (("authorization", "Bearer token-web"),))
            assert service.forged == 1
            return response

    with caplog.at_level(logging.WARNING, logger="meshlab.citadel"):
        response = asyncio.run(main())
    chain = "".join(response.cert_chain).encode()
    assert verify_chain(chain, authority.roots_pem).spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"
    assert "asked for spiffe://cluster.local/ns/shop/sa/db" in caplog.text


@pytest.mark.parametrize(("validity", "lifetime"), [
    pytest.param(0, dt.timedelta(hours=24), id="0: Citadel's default"),
    pytest.param(60, dt.timedelta(seconds=60), id="60 s as asked"),
    pytest.param(2**62, dt.timedelta(days=90), id="absurd: capped at 90 days"),
])
def test_the_lifetime_asked_for_is_honoured_within_limits(authority: CertificateAuthority, validity: int,
                                                          lifetime: dt.timedelta) -> None:
    async def main() -> ca_pb2.IstioCertificateResponse:
        async with citadel(authority) as (_, port):
            return await call(port, authority.roots_pem, build_csr(generate_key()),
                              (("authorization", "Bearer token-web"),), validity=validity)

    leaf = x509.load_pem_x509_certificate(asyncio.run(main()).cert_chain[0].encode())
    assert abs((leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)) - lifetime) < dt.timedelta(seconds=5)


def test_a_malformed_csr_is_invalid_argument(authority: CertificateAuthority) -> None:
    async def main() -> None:
        async with citadel(authority) as (_, port):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(port, authority.roots_pem, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n",
                           (("authorization", "Bearer token-web"),))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(main())


def test_a_citadel_from_another_root_is_not_trusted(tmp_path: Path, authority: CertificateAuthority) -> None:
    stranger = CertificateAuthority.create_self_signed("cluster.local")

    async def main() -> None:
        async with citadel(stranger) as (service, port):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await provider(tmp_path, port, authority.roots_pem).request()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake failed
            assert service.issued == 0

    asyncio.run(main())


@pytest.mark.slow
def test_a_short_lived_certificate_is_renewed_before_it_expires(tmp_path: Path,
                                                                authority: CertificateAuthority) -> None:
    async def main() -> list[tuple[WorkloadCertificate, dt.datetime]]:
        seen: list[tuple[WorkloadCertificate, dt.datetime]] = []
        async with citadel(authority) as (_, port):
            certs = provider(tmp_path, port, authority.roots_pem, ttl=4)
            certs.subscribe(lambda cert: seen.append((cert, dt.datetime.now(dt.UTC))))
            await certs.start()
            deadline = asyncio.get_running_loop().time() + 20
            while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            await certs.stop()
        return seen

    seen = asyncio.run(main())
    assert len(seen) >= 3
    for (old, _), (new, arrived) in itertools.pairwise(seen):
        assert arrived < old.not_after  # renewed before the previous one expired
        assert new.not_after > old.not_after and new.key_pem != old.key_pem


def test_renewal_is_due_at_half_the_remaining_life() -> None:
    received = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert renewal_delay(received, received + dt.timedelta(hours=24), now=received) == 12 * 3600
    assert renewal_delay(received, received + dt.timedelta(seconds=4), now=received) == 2
    assert renewal_delay(received, received + dt.timedelta(seconds=4), now=received + dt.timedelta(seconds=9)) == 0


@pytest.mark.slow
def test_a_root_rotation_reaches_the_proxy_through_the_bundle_file(tmp_path: Path) -> None:
    old = CertificateAuthority.create_self_signed("cluster.local")
    new = old.rotate_root("cluster.local", overlap=dt.timedelta(hours=1))
    roots_file = tmp_path / "root-cert.pem"
    roots_file.write_bytes(old.roots_pem)

    async def main() -> list[WorkloadCertificate]:
        seen: list[WorkloadCertificate] = []
        async with citadel(old) as (service, port):
            certs = provider(tmp_path, port, None, roots_path=roots_file, roots_poll=0.1)
            certs.subscribe(seen.append)
            first = await certs.start()
            # Citadel now signs with the new root and publishes old + new: the proxy trusts both.
            service.policy.authority = new
            roots_file.write_bytes(new.roots_pem)
            deadline = asyncio.get_running_loop().time() + 20
            while len(seen) < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            renewed = await certs.request()  # what the next renewal gets: from the new root, still verified
            await certs.stop()
        return [first, *seen[1:], renewed]

    first, updated, renewed = asyncio.run(main())
    assert updated.roots_pem == new.roots_pem and updated.chain_pem == first.chain_pem
    verify_chain(first.chain_pem, updated.roots_pem)  # the old certificate verifies during the overlap
    verify_chain(renewed.chain_pem, updated.roots_pem)
    assert renewed.chain_pem != first.chain_pem
