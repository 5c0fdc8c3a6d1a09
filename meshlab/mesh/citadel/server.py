"""Citadel's gRPC service: ``istio.v1.auth.IstioCertificateService/CreateCertificate`` over TLS.

Each call (Istio's ``security/pkg/server/ca/server.go``) goes: take the caller's service-account token from the
``authorization: Bearer <token>`` metadata; have the API server vouch for it with a ``TokenReview``
(``authentication.k8s.io/v1``; the user must be ``system:serviceaccount:<ns>:<sa>``) — no token, an invalid
one, or a non-workload user is ``UNAUTHENTICATED``; then sign the CSR for *that* identity (a CSR naming
somebody else still yields the caller's own certificate, and the attempt is logged); a malformed CSR is
``INVALID_ARGUMENT``; a TokenReview that cannot be made is ``UNAVAILABLE`` (the caller retries). The answer is
the chain, leaf first and root last. The one RPC is wired with gRPC's generic handlers around the generated
messages of ``ca.proto`` (no generated service stubs), and the server's own certificate is issued by the CA
it serves, so clients verify it with the mesh root.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from meshlab.errors import CaError
from meshlab.mesh.citadel import ca_pb2
from meshlab.mesh.citadel.ca import (
    DEFAULT_WORKLOAD_TTL,
    MAX_WORKLOAD_TTL,
    CertificateAuthority,
    certificates_pem,
    private_key_pem,
)
from meshlab.mesh.citadel.identity import DEFAULT_TRUST_DOMAIN, WorkloadIdentity, identity_from_username

log = logging.getLogger("meshlab.citadel")

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = f"/{SERVICE}/CreateCertificate"
GRPC_PORT = 15012
# Istio's default audience for the token istio-agent presents; the API server's own audience is accepted too,
# as Istio's "first-party-jwt" policy did, so a pod's default token works where no istio-token is mounted.
TOKEN_AUDIENCES = ("istio-ca", "https://kubernetes.default.svc.cluster.local")


class Unauthenticated(CaError):
    """The caller could not be identified: answered with gRPC ``UNAUTHENTICATED``."""


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the ``authorization: Bearer <token>`` metadata; ``Unauthenticated`` when absent."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated("the authorization metadata is not 'Bearer <token>'")
    raise Unauthenticated("no authorization metadata: send the service-account token as 'Bearer <token>'")


class Authenticator(Protocol):
    async def authenticate(self, token: str, *, trust_domain: str) -> WorkloadIdentity:
        """The workload the token belongs to; ``Unauthenticated`` if it is not valid."""
        ...


def identity_from_review(review: dict[str, Any], trust_domain: str) -> WorkloadIdentity:
    """The workload a ``TokenReview`` answer vouches for (pure; ``Unauthenticated`` when it does not)."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        raise Unauthenticated(f"the token was rejected by the API server: {status.get('error') or 'not authenticated'}")
    username = str((status.get("user") or {}).get("username") or "")
    try:
        return identity_from_username(username, trust_domain)
    except CaError as err:
        raise Unauthenticated(str(err)) from err


class TokenReviewAuthenticator:
    """Asks the API server (``POST /apis/authentication.k8s.io/v1/tokenreviews``) whose token it is."""

    def __init__(self, api_client: Any, *, audiences: Sequence[str] = TOKEN_AUDIENCES) -> None:
        self._api = api_client
        self._audiences = list(audiences)

    def _review(self, token: str) -> dict[str, Any]:
        from kubernetes import client

        body = client.V1TokenReview(api_version="authentication.k8s.io/v1", kind="TokenReview",
                                    spec=client.V1TokenReviewSpec(token=token, audiences=self._audiences))
        answer = client.AuthenticationV1Api(self._api).create_token_review(body)
        return dict(self._api.sanitize_for_serialization(answer))

    async def authenticate(self, token: str, *, trust_domain: str) -> WorkloadIdentity:
        return identity_from_review(await asyncio.to_thread(self._review, token), trust_domain)


@dataclass
class Policy:
    """What Citadel signs with: mutable, so a new mesh config or a rotated root applies to the next call."""

    authority: CertificateAuthority
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    default_ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL
    max_ttl: dt.timedelta = MAX_WORKLOAD_TTL


class CertificateService:
    """The RPC: authenticate, sign, answer; counts what it did for ``/debug`` views and tests."""

    def __init__(self, policy: Policy, authenticator: Authenticator) -> None:
        self.policy = policy
        self._authenticator = authenticator
        self.issued = 0
        self.refused = 0
        self.forged = 0

    async def create_certificate(self, request: ca_pb2.IstioCertificateRequest,
                                 context: grpc.aio.ServicerContext[Any, Any]) -> ca_pb2.IstioCertificateResponse:
        peer = context.peer()
        try:
            token = bearer_token(context.invocation_metadata())
            identity = await self._authenticator.authenticate(token, trust_domain=self.policy.trust_domain)
        except Unauthenticated as err:
            self.refused += 1
            log.warning("refused a certificate to %s: %s", peer, err)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        except Exception as err:  # the API server is unreachable or failing: the caller should retry
            self.refused += 1
            log.error("cannot review the token of %s: %s", peer, err)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot review the token: {err}")
        policy = self.policy
        # Capped before building the timedelta: a caller may send any int64.
        seconds = min(request.validity_duration, int(policy.max_ttl.total_seconds()))
        ttl = dt.timedelta(seconds=seconds) if seconds > 0 else policy.default_ttl
        try:
            issued = policy.authority.sign_csr(request.csr, identity, ttl, max_ttl=policy.max_ttl)
        except CaError as err:
            self.refused += 1
            log.warning("refused a certificate to %s (%s): %s", identity, peer, err)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if issued.forged:
            self.forged += 1
            log.warning("the CSR from %s asked for %s; issued a certificate for the caller's own identity %s",
                        peer, ", ".join(issued.requested_uris), identity)
        self.issued += 1
        log.info("issued %s until %s (serial %x)", identity, issued.leaf.not_valid_after_utc.isoformat(),
                 issued.leaf.serial_number)
        return ca_pb2.IstioCertificateResponse(cert_chain=issued.cert_chain)

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.create_certificate,
            request_deserializer=ca_pb2.IstioCertificateRequest.FromString,
            response_serializer=ca_pb2.IstioCertificateResponse.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {"CreateCertificate": method})


def server_credentials(authority: CertificateAuthority, dns_names: Sequence[str], ips: Sequence[str] = ()
                       ) -> grpc.ServerCredentials:
    """TLS credentials for Citadel itself: a serving certificate its own CA signs (kept in memory only)."""
    key, chain = authority.issue_server_certificate(dns_names, ips)
    return grpc.ssl_server_credentials([(private_key_pem(key), certificates_pem(chain))])


class ServingCertificate:
    """Citadel's own TLS identity, re-issued when the CA changes (a rotated root must not strand clients that
    only trust the new one): gRPC asks :meth:`_fetch` at each handshake whether there is a new certificate."""

    def __init__(self, authority: CertificateAuthority, dns_names: Sequence[str], ips: Sequence[str] = ()) -> None:
        self._names = list(dns_names)
        self._ips = list(ips)
        self._pending: Any = None
        self.credentials = grpc.dynamic_ssl_server_credentials(self._configuration(authority), self._fetch)

    def _configuration(self, authority: CertificateAuthority) -> Any:
        key, chain = authority.issue_server_certificate(self._names, self._ips)
        return grpc.ssl_server_certificate_configuration([(private_key_pem(key), certificates_pem(chain))])

    def reissue(self, authority: CertificateAuthority) -> None:
        self._pending = self._configuration(authority)

    def _fetch(self) -> Any:
        pending, self._pending = self._pending, None
        return pending


async def serve(service: CertificateService, *, credentials: grpc.ServerCredentials, host: str = "127.0.0.1",
                port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start the TLS gRPC server on ``host:port`` (0 = any free port); returns it and its port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.handler(),))
    bound = server.add_secure_port(f"{host}:{port}", credentials)
    await server.start()
    return server, bound
