"""``meshlab pilot``: the control-plane process (what the ``istiod`` Deployment runs).

Like istiod it serves ADS in plaintext gRPC on 15010 and an HTTP debug interface on 8080
(https://istio.io/latest/docs/ops/deployment/application-requirements/#ports-used-by-istio): ``/ready`` answers
200 once every watched kind has been listed and the first state published (the Deployment's readiness probe,
so a proxy is never handed an empty mesh); ``/debug/syncz`` is the per-proxy sync status ``istioctl
proxy-status`` reads; ``/debug/config_dump?proxyID=<node id | pod.namespace>`` is what Pilot holds for one
proxy. The sidecar injector webhook is served over HTTPS on 15017 (:mod:`meshlab.mesh.pilot.injector`); ``/ready``
also waits until the webhook configuration trusts its certificate, so no pod is created while injection would
fail. All listen on :func:`meshlab.podnet.listen_address` (the pod's address). The cluster is reached with
the in-cluster service account (or ``--kubeconfig``) through :mod:`meshlab.kube`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from aiohttp import web

from meshlab import kube
from meshlab.errors import XdsError
from meshlab.mesh.pilot.ads import AdsServer, serve
from meshlab.mesh.pilot.injector import WEBHOOK_PORT, Injector, make_credentials, service_names
from meshlab.mesh.pilot.sync import ProxyStatus
from meshlab.mesh.pilot.watching import Watcher
from meshlab.podnet import listen_address

log = logging.getLogger("meshlab.pilot")

XDS_PORT = 15010
DEBUG_PORT = 8080


def syncz(statuses: list[ProxyStatus], *, istiod: str) -> list[dict[str, Any]]:
    """The sync status of every connected proxy as JSON: per type (CDS, EDS, LDS, RDS) its status and the
    versions latest / sent / ACKed, plus the NACK message, and which istiod instance holds the stream."""
    return [{
        "proxy": status.proxy_id,
        "istiod": istiod,
        "types": {t.short: {"status": t.status.value, "latest": t.latest, "sent": t.sent, "acked": t.acked,
                            "error": t.error} for t in status.types},
    } for status in statuses]


def find_proxy(ads: AdsServer, wanted: str) -> str:
    """A connected proxy's node id from its node id or ``<pod>.<namespace>`` (as ``istioctl`` accepts)."""
    ids = [s.proxy_id for s in ads.proxy_status()]
    for proxy_id in ids:
        if wanted == proxy_id or wanted == proxy_id.split("~")[2]:
            return proxy_id
    raise XdsError(f"no proxy {wanted!r} is connected (connected: {', '.join(ids) or 'none'})")


def debug_app(ads: AdsServer, watcher: Watcher, *, istiod: str, injector: Injector | None = None
              ) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        if not watcher.ready:
            return web.Response(status=503, text="not ready: the cluster has not been listed yet\n")
        if injector is not None and not injector.ca_bundle_set:
            return web.Response(status=503, text="not ready: the injector webhook's caBundle is not set yet\n")
        return web.Response(text="ok\n")

    async def sync_status(_: web.Request) -> web.Response:
        return web.json_response(syncz(ads.proxy_status(), istiod=istiod))

    async def config_dump(request: web.Request) -> web.Response:
        wanted = request.query.get("proxyID", "")
        if not wanted:
            return web.json_response({"error": "give ?proxyID=<node id or pod.namespace>"}, status=400)
        try:
            return web.json_response(ads.config_dump(find_proxy(ads, wanted)))
        except XdsError as err:
            return web.json_response({"error": str(err)}, status=404)

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/debug/syncz", sync_status)
    app.router.add_get("/debug/config_dump", config_dump)
    return app


async def run_pilot(*, host: str, xds_port: int = XDS_PORT, debug_port: int = DEBUG_PORT,
                    webhook_port: int = WEBHOOK_PORT, kubeconfig: str | None = None) -> None:
    """Serve until cancelled."""
    clients = kube.clients(kubeconfig)
    ads = AdsServer()
    injector = Injector(clients.api_client, make_credentials(
        service_names(), [host] if host not in ("0.0.0.0", "::") else []))
    # The mesh's trust domain (the mesh config's trustDomain, which the injector keeps re-reading; TRUST_DOMAIN
    # in the environment overrides it, as istiod's): the SPIFFE IDs Pilot writes into TLS and RBAC config.
    fixed = os.environ.get("TRUST_DOMAIN")
    watcher = Watcher(clients.api_client, ads.set_state,
                      trust_domain=(lambda: fixed) if fixed else (lambda: injector.config.trust_domain))
    grpc_server, bound = await serve(ads, host=host, port=xds_port)
    webhook = await injector.serve(host, webhook_port)
    reconciling = asyncio.create_task(injector.reconcile())
    runner = web.AppRunner(debug_app(ads, watcher, istiod=os.environ.get("HOSTNAME") or socket.gethostname(),
                                     injector=injector), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, debug_port).start()
    log.info("pilot: ADS on %s:%d, debug on http://%s:%d", host, bound, host, debug_port)
    try:
        await watcher.run()
    finally:
        watcher.stop()
        reconciling.cancel()
        await webhook.cleanup()
        await runner.cleanup()
        await grpc_server.stop(grace=1)
        clients.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_pilot(host=listen_address(), xds_port=args.xds_port, debug_port=args.debug_port,
                              webhook_port=args.webhook_port, kubeconfig=args.kubeconfig))
    return 0
