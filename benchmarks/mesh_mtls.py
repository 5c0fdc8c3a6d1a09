"""The mesh benchmark's mutual-TLS setting: a Citadel for the benchmark's sidecars, as a real mesh has one.

The sidecars get their certificates the way they do in a pod: their own ``CertificateProvider`` sends a CSR
with a token to Citadel's real ``CreateCertificate`` service over TLS, and trusts the root found at
``/var/run/secrets/istio/root-cert.pem`` (here mapped to a temporary directory with ``MESHLAB_MOUNTS``, the
lab kubelet's way of showing volumes). The one thing that differs from the lab is who vouches for a token:
not a TokenReview against an API server, but a table of the two tokens this benchmark wrote.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from meshlab.mesh.citadel.ca import CertificateAuthority
from meshlab.mesh.citadel.identity import DEFAULT_TRUST_DOMAIN, WorkloadIdentity
from meshlab.mesh.citadel.server import CertificateService, Policy, Unauthenticated, serve, server_credentials


class _Tokens:
    """Authenticates the tokens this benchmark handed out (``token -> (namespace, service account)``)."""

    def __init__(self, table: Mapping[str, tuple[str, str]]) -> None:
        self._table = dict(table)

    async def authenticate(self, token: str, *, trust_domain: str) -> WorkloadIdentity:
        if token not in self._table:
            raise Unauthenticated("not a token this benchmark wrote")
        namespace, account = self._table[token]
        return WorkloadIdentity(trust_domain, namespace, account)


@dataclass(frozen=True)
class Citadel:
    address: str  # host:port of CreateCertificate (TLS)
    directory: Path
    service: CertificateService

    def proxy_env(self, name: str) -> dict[str, str]:
        """What the injector gives a sidecar in a mesh with a CA, its volumes mapped to files here."""
        return {"CA_ADDR": self.address, "TRUST_DOMAIN": DEFAULT_TRUST_DOMAIN,
                "MESHLAB_MOUNTS": json.dumps({"/var/run/secrets/tokens": str(self.directory / name),
                                              "/var/run/secrets/istio": str(self.directory / "istio")})}


@contextlib.asynccontextmanager
async def citadel(directory: Path, accounts: Mapping[str, str]) -> AsyncIterator[Citadel]:
    """Citadel on 127.0.0.1 for the sidecars named in ``accounts`` (``sidecar name -> service account``, all in
    namespace ``default``); each sidecar's token is written where its ``istio-token`` volume would be."""
    authority = CertificateAuthority.create_self_signed(DEFAULT_TRUST_DOMAIN)
    (directory / "istio").mkdir(parents=True, exist_ok=True)
    (directory / "istio" / "root-cert.pem").write_bytes(authority.roots_pem)
    table = {}
    for name, account in accounts.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        token = f"benchmark-token-{name}"
        (directory / name / "istio-token").write_text(token)
        table[token] = ("default", account)
    service = CertificateService(Policy(authority), _Tokens(table))
    server, port = await serve(service, credentials=server_credentials(authority, ["localhost"], ["127.0.0.1"]))
    try:
        yield Citadel(f"127.0.0.1:{port}", directory, service)
    finally:
        await server.stop(None)
