"""The proxy's certificate client: what istio-agent does for Envoy, in one asyncio object per proxy.

The workload key is generated here (ECDSA P-256) and never leaves the process; only a CSR is sent, over TLS
(Citadel's certificate is checked against the mesh roots), with the pod's service-account token as
``authorization: Bearer``. The chain Citadel returns (leaf first, root last) is verified before use — leaf
key equals ours, the leaf is within its validity, its SPIFFE ID is in the trust domain, the path leads to a
trusted root — and a chain that fails is logged with the reason and not used. The certificate is renewed at
half its remaining life (Istio's ``SECRET_GRACE_PERIOD_RATIO`` 0.5), with a new key each time, and every
rotation is logged and handed to the subscribers (the proxy's TLS contexts). The trust bundle is re-read
(the ``istio-ca-root-cert`` ConfigMap mounted as a file) so a root rotation reaches the proxy before its own
certificate is renewed. When the CA's DNS name does not resolve (the embedded lab has no cluster DNS) the
``resolve`` hook returns an address to dial, as the proxy's ``ApiResolver`` does for Pilot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshlab.errors import CaError
from meshlab.mesh.citadel.ca import build_csr, certificates_pem, generate_key, load_certificates, private_key_pem
from meshlab.mesh.citadel.verification import verify_chain

log = logging.getLogger("meshlab.citadel.client")

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
# Where Istio's injector mounts the istio-ca-root-cert ConfigMap in the sidecar.
DEFAULT_ROOTS_PATH = Path("/var/run/secrets/istio/root-cert.pem")
RENEW_RATIO = 0.5


@dataclass(frozen=True)
class WorkloadCertificate:
    """A proxy's identity: ``chain_pem`` is the leaf and its intermediates (no root); ``roots_pem`` the bundle."""

    key_pem: bytes
    chain_pem: bytes
    roots_pem: bytes
    spiffe_id: str
    not_before: dt.datetime
    not_after: dt.datetime

    def __repr__(self) -> str:  # the key stays out of logs
        return f"WorkloadCertificate({self.spiffe_id}, {self.not_before:%H:%M:%S}..{self.not_after:%H:%M:%S})"


def renewal_delay(received: dt.datetime, not_after: dt.datetime, *, ratio: float = RENEW_RATIO,
                  now: dt.datetime | None = None) -> float:
    """Seconds from ``now`` until the renewal point: ``ratio`` of the way from receipt to expiry. (Receipt, not
    ``notBefore``: the CA backdates that by a minute, which would put a 4-second certificate's half-life in
    the past.)"""
    when = received + (not_after - received) * ratio
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def accept_chain(cert_chain: list[str], key_pem: bytes, roots_pem: bytes, *, trust_domain: str | None,
                 now: dt.datetime | None = None) -> WorkloadCertificate:
    """The certificate Citadel answered with, verified (pure); ``CaError`` with the reason otherwise."""
    chain = [c for pem in cert_chain for c in load_certificates(pem, "the returned chain")]
    if not chain:
        raise CaError("Citadel returned an empty certificate chain")
    key = serialization.load_pem_private_key(key_pem, password=None)
    ours = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        raise CaError("the returned certificate is not for this proxy's key")
    verified = verify_chain(certificates_pem(chain), roots_pem, trust_domain=trust_domain, now=now)
    without_root = [c for c in chain if not _self_signed(c)]
    return WorkloadCertificate(key_pem=key_pem, chain_pem=certificates_pem(without_root), roots_pem=roots_pem,
                               spiffe_id=verified.spiffe_id, not_before=verified.not_before,
                               not_after=verified.not_after)


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


async def _read_file(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


class CertificateProvider:
    """Obtains, verifies and renews one proxy's workload certificate (asyncio)."""

    def __init__(self, ca_address: str, token_path: Path, *, ca_roots_pem: bytes | None, ttl: float | None,
                 resolve: Callable[[], Awaitable[str]] | None = None, trust_domain: str | None = None,
                 roots_path: Path = DEFAULT_ROOTS_PATH, roots_poll: float = 5.0, timeout: float = 10.0,
                 max_backoff: float = 30.0) -> None:
        """``ca_address`` is ``host:port`` (the host is also the TLS name checked); ``ttl`` the lifetime asked
        for, in seconds (None: Citadel's default); ``ca_roots_pem`` the trust bundle, or None to read it from
        ``roots_path`` (re-read every ``roots_poll`` seconds to follow root rotations)."""
        self._address = ca_address
        self._host = ca_address.rpartition(":")[0] or ca_address
        self._token_path = token_path
        self._fixed_roots = ca_roots_pem
        self._roots_path = roots_path
        self._ttl = ttl
        self._resolve = resolve
        self._trust_domain = trust_domain
        self._roots_poll = roots_poll
        self._timeout = timeout
        self._max_backoff = max_backoff
        self._current: WorkloadCertificate | None = None
        self._callbacks: list[Callable[[WorkloadCertificate], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.renewals = 0

    def current(self) -> WorkloadCertificate | None:
        return self._current

    def subscribe(self, callback: Callable[[WorkloadCertificate], None]) -> None:
        """``callback(certificate)`` after every rotation (new certificate or new trust bundle)."""
        self._callbacks.append(callback)

    async def start(self) -> WorkloadCertificate:
        """The first certificate (retrying with back-off until Citadel answers); then renews in the background."""
        received = dt.datetime.now(dt.UTC)
        certificate = await self._request_until_answered()
        self._publish(certificate, "obtained")
        self._tasks = [asyncio.create_task(self._renew_forever(received))]
        if self._fixed_roots is None:
            self._tasks.append(asyncio.create_task(self._watch_roots()))
        return certificate

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- one request ----------------------------------------------------------------------------------------

    async def _roots(self) -> bytes:
        if self._fixed_roots is not None:
            return self._fixed_roots
        try:
            return await _read_file(self._roots_path)
        except OSError as err:
            raise CaError(f"cannot read the trust bundle {self._roots_path}: {err}") from err

    async def request(self) -> WorkloadCertificate:
        """One CSR round trip: a new key, a verified certificate for it (``CaError`` / ``grpc.RpcError``)."""
        import grpc

        from meshlab.mesh.citadel import ca_pb2

        roots = await self._roots()
        try:
            token = (await _read_file(self._token_path)).decode().strip()
        except OSError as err:
            raise CaError(f"cannot read the service-account token {self._token_path}: {err}") from err
        key = generate_key()
        key_pem = private_key_pem(key)
        target = await self._resolve() if self._resolve is not None else self._address
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        # The CA's certificate names its Service, whatever address we dial (a pod IP when DNS fails).
        options = [("grpc.ssl_target_name_override", self._host), ("grpc.enable_http_proxy", 0)]
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            call = channel.unary_unary(METHOD, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                                       response_deserializer=ca_pb2.IstioCertificateResponse.FromString)
            request = ca_pb2.IstioCertificateRequest(csr=build_csr(key).decode(),
                                                     validity_duration=int(self._ttl or 0))
            response = await call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=self._timeout)
        try:
            return accept_chain(list(response.cert_chain), key_pem, roots, trust_domain=self._trust_domain)
        except CaError as err:
            if self._fixed_roots is not None:
                raise
            # The root may have been rotated since the bundle was read: read it again, once.
            fresh = await self._roots()
            if fresh == roots:
                raise
            log.info("certificate did not verify (%s); retrying with the updated trust bundle", err)
            return accept_chain(list(response.cert_chain), key_pem, fresh, trust_domain=self._trust_domain)

    async def _request_until_answered(self, expiring: dt.datetime | None = None) -> WorkloadCertificate:
        """Retry with jittered exponential back-off until a certificate arrives; while renewing, each failure
        says how long the current certificate has left (``expiring``)."""
        delay = 0.5
        while True:
            try:
                return await self.request()
            except Exception as err:  # CaError, grpc.RpcError, resolver failures: all retried
                state = ""
                if expiring is not None:
                    left = (expiring - dt.datetime.now(dt.UTC)).total_seconds()
                    state = f" (current certificate expires in {left:.1f}s)" if left > 0 else \
                        " (current certificate EXPIRED)"
                log.warning("certificate request to %s failed: %s%s; retrying in %.1fs", self._address,
                            _describe(err), state, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._max_backoff)

    # -- background -----------------------------------------------------------------------------------------

    def _publish(self, certificate: WorkloadCertificate, what: str) -> None:
        self._current = certificate
        log.info("certificate %s: %s valid until %s", what, certificate.spiffe_id,
                 certificate.not_after.isoformat())
        for callback in list(self._callbacks):
            try:
                callback(certificate)
            except Exception:  # one subscriber's failure must not stop renewals
                log.exception("certificate subscriber %r failed", callback)

    async def _renew_forever(self, received: dt.datetime) -> None:
        while True:
            current = self._current
            assert current is not None
            await asyncio.sleep(renewal_delay(received, current.not_after))
            received = dt.datetime.now(dt.UTC)
            certificate = await self._request_until_answered(current.not_after)
            self.renewals += 1
            self._publish(certificate, "renewed")

    async def _watch_roots(self) -> None:
        while True:
            await asyncio.sleep(self._roots_poll)
            try:
                roots = await self._roots()
            except CaError as err:
                log.warning("%s (keeping the previous bundle)", err)
                continue
            current = self._current
            if current is None or roots == current.roots_pem:
                continue
            try:
                verify_chain(current.chain_pem, roots, trust_domain=self._trust_domain)
            except CaError as err:
                # Our own certificate no longer verifies under the new bundle: get one that does.
                log.info("the trust bundle changed and %s: renewing now", err)
                self._publish(await self._request_until_answered(current.not_after), "renewed for the new roots")
                continue
            self._publish(WorkloadCertificate(key_pem=current.key_pem, chain_pem=current.chain_pem, roots_pem=roots,
                                              spiffe_id=current.spiffe_id, not_before=current.not_before,
                                              not_after=current.not_after), "trust bundle updated")


def _describe(err: BaseException) -> str:
    details = getattr(err, "details", None)
    code = getattr(err, "code", None)
    if callable(details) and callable(code):  # grpc.RpcError
        return f"{code().name}: {details()}"
    return str(err) or type(err).__name__
