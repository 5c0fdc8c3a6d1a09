"""``meshlab citadel``: the CA process the ``istio-citadel`` Deployment runs (Istio's pre-1.5 layout).

At start it loads the CA (plug-in ``cacerts``, else its own ``istio-ca-secret``, else a new self-signed root;
see :mod:`~meshlab.mesh.citadel.keeping`) and the mesh's security settings, then serves
``IstioCertificateService`` over TLS on 15012 (its certificate issued by its own CA for
``istio-citadel.istio-system.svc`` and the pod IP), publishes the trust bundle into every namespace, and answers
HTTP on 15014 (Istio's control-plane monitoring port): ``/ready`` (200 once the gRPC port serves and
``istio-system`` holds the bundle — the readiness probe), ``/roots`` (the public trust bundle) and
``/debug/stats`` (certificates issued, refused, forged CSRs). Every couple of seconds it re-reads the mesh
config (trust domain, default TTL) and its Secret: a root rotated by ``meshlab citadel rotate-root`` is picked
up, republished and used for its own serving certificate, and once the overlap has passed the old roots are
dropped from the bundle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from aiohttp import web

from meshlab import kube
from meshlab.errors import CaError
from meshlab.mesh.citadel import keeping
from meshlab.mesh.citadel.ca import CertificateAuthority, KeyAlgorithm
from meshlab.mesh.citadel.publishing import RootPublisher
from meshlab.mesh.citadel.server import (
    GRPC_PORT,
    CertificateService,
    Policy,
    ServingCertificate,
    TokenReviewAuthenticator,
    serve,
)
from meshlab.mesh.citadel.settings import SecuritySettings, settings_from_mesh
from meshlab.mesh.injection import MESH_CONFIGMAP
from meshlab.mesh.pilot.injector import service_names
from meshlab.podnet import listen_address

log = logging.getLogger("meshlab.citadel")

HTTP_PORT = 15014
NAMESPACE = "istio-system"
SERVICE = "istio-citadel"


def read_settings(core: Any, namespace: str = NAMESPACE) -> SecuritySettings:
    from kubernetes.client.rest import ApiException

    try:
        return settings_from_mesh(core.read_namespaced_config_map(MESH_CONFIGMAP, namespace).data)
    except ApiException as err:
        if err.status == 404:
            return SecuritySettings()
        raise CaError(f"reading configmap {namespace}/{MESH_CONFIGMAP}: {err.status} {err.reason}") from err


class Citadel:
    """The running CA: policy (what signs), the service, the serving certificate and the publisher."""

    def __init__(self, clients: kube.Clients, *, namespace: str, authority: CertificateAuthority, secret: str,
                 settings: SecuritySettings, host: str) -> None:
        self.clients = clients
        self.namespace = namespace
        self.secret = secret
        self.secret_version = ""
        self.policy = Policy(authority, trust_domain=settings.trust_domain, default_ttl=settings.workload_cert_ttl)
        self.service = CertificateService(self.policy, TokenReviewAuthenticator(clients.api_client))
        self.serving = ServingCertificate(authority, service_names(SERVICE, namespace),
                                          [host] if host not in ("0.0.0.0", "::") else [])
        self.publisher = RootPublisher(clients.api_client, lambda: self.policy.authority.roots_pem, resync=30)
        self.grpc_serving = False

    def app(self) -> web.Application:
        async def ready(_: web.Request) -> web.Response:
            if not self.grpc_serving:
                return web.Response(status=503, text="not ready: the gRPC port is not serving yet\n")
            if self.namespace not in self.publisher.published:
                return web.Response(status=503, text="not ready: the trust bundle is not published yet\n")
            return web.Response(text="ok\n")

        async def roots(_: web.Request) -> web.Response:
            return web.Response(body=self.policy.authority.roots_pem, content_type="application/x-pem-file")

        async def stats(_: web.Request) -> web.Response:
            s = self.service
            authority = self.policy.authority
            return web.json_response({
                "issued": s.issued, "refused": s.refused, "forged": s.forged, "ca": self.secret,
                "trustDomain": self.policy.trust_domain, "defaultTTLSeconds": self.policy.default_ttl.total_seconds(),
                "roots": len(authority.trusted_roots), "caNotAfter": authority.not_after.isoformat(),
                "overlapUntil": authority.overlap_until.isoformat() if authority.overlap_until else None})

        app = web.Application()
        app.router.add_get("/ready", ready)
        app.router.add_get("/roots", roots)
        app.router.add_get("/debug/stats", stats)
        return app

    def reload_once(self) -> None:
        """Blocking: follow the mesh config and the CA Secret; retire old roots after a rotation's overlap."""
        core = self.clients.core
        try:
            settings = read_settings(core, self.namespace)
            self.policy.trust_domain, self.policy.default_ttl = settings.trust_domain, settings.workload_cert_ttl
        except CaError as err:
            log.warning("%s (keeping the current settings)", err)
        try:
            stored = keeping.read_secret(core, self.secret, self.namespace)
            version = str(((stored or {}).get("metadata") or {}).get("resourceVersion") or "")
            if stored is not None and version != self.secret_version:  # parse the PEM only when it changed
                if self.secret_version:
                    self._use(keeping.authority_from_secret(stored), "the CA secret changed")
                self.secret_version = version
        except CaError as err:
            log.warning("%s (keeping the current CA)", err)
        current = self.policy.authority
        retired = current.retire_old_roots()
        if retired is not current:
            if self.secret == keeping.SELF_SIGNED_SECRET:
                keeping.store_authority(core, self.namespace, retired)
            self._use(retired, "the rotation overlap is over: old roots dropped from the bundle")

    def _use(self, authority: CertificateAuthority, why: str) -> None:
        old = self.policy.authority.roots_pem
        self.policy.authority = authority
        self.serving.reissue(authority)
        log.info("%s: now %r", why, authority)
        if authority.roots_pem != old:
            self.publisher.publish_all()

    async def reload(self, interval: float) -> None:
        while True:
            try:
                await asyncio.to_thread(self.reload_once)
            except Exception as err:  # keep serving with what we have
                log.warning("reloading: %s", err)
            await asyncio.sleep(interval)


async def run_citadel(*, host: str, grpc_port: int = GRPC_PORT, http_port: int = HTTP_PORT,
                      namespace: str = NAMESPACE, kubeconfig: str | None = None,
                      algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256, root_validity: dt.timedelta | None = None,
                      reload_interval: float = 2.0) -> None:
    """Serve until cancelled."""
    clients = kube.clients(kubeconfig)
    settings = await asyncio.to_thread(read_settings, clients.core, namespace)
    authority, secret = await asyncio.to_thread(keeping.load_authority, clients.core, namespace,
                                                trust_domain=settings.trust_domain, algorithm=algorithm,
                                                validity=root_validity)
    citadel = Citadel(clients, namespace=namespace, authority=authority, secret=secret, settings=settings, host=host)
    server, bound = await serve(citadel.service, credentials=citadel.serving.credentials, host=host, port=grpc_port)
    citadel.grpc_serving = True
    citadel.publisher.start()
    runner = web.AppRunner(citadel.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port).start()
    log.info("citadel: %r; CreateCertificate on %s:%d (TLS), /ready on http://%s:%d", authority, host, bound, host,
             http_port)
    try:
        await citadel.reload(reload_interval)
    finally:
        citadel.publisher.stop()
        await runner.cleanup()
        await server.stop(grace=1)
        clients.close()


def rotate_root(clients: kube.Clients, *, overlap: dt.timedelta, namespace: str = NAMESPACE) -> CertificateAuthority:
    """Replace the self-signed root in ``istio-ca-secret``: the new root signs from now on, the bundle keeps the
    old one(s) for ``overlap`` (Citadel picks the Secret up within seconds and republishes the bundle)."""
    current = keeping.read_authority(clients.core, namespace, keeping.SELF_SIGNED_SECRET)
    if current is None:
        raise CaError(f"no secret {namespace}/{keeping.SELF_SIGNED_SECRET}: is Citadel installed and self-signed?")
    settings = read_settings(clients.core, namespace)
    rotated = current.rotate_root(settings.trust_domain, overlap=overlap)
    keeping.store_authority(clients.core, namespace, rotated)
    return rotated


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    validity = dt.timedelta(days=args.root_days) if args.root_days else None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_citadel(host=listen_address(), grpc_port=args.grpc_port, http_port=args.http_port,
                                kubeconfig=args.kubeconfig, algorithm=KeyAlgorithm(args.key_algorithm),
                                root_validity=validity))
    return 0
