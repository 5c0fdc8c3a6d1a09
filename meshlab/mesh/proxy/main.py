"""``meshlab proxy``: run the sidecar — identity from the pod's environment, config from Pilot over ADS.

The identity comes from the variables Istio's sidecar injector gives ``istio-proxy`` through the downward API
(istio.io ``manifests/charts/istio-control/istio-discovery/files/injection-template.yaml``): ``POD_NAME``,
``POD_NAMESPACE``, ``INSTANCE_IP`` (the pod IP), ``SERVICE_ACCOUNT``, ``ISTIO_META_WORKLOAD_NAME``, and the pod
labels as JSON in ``ISTIO_METAJSON_LABELS`` (the injector's older spelling, chosen because it needs no
downward-API volume). meshlab adds ``APP_ADDRESS`` (``ISTIO_META_APP_ADDRESS`` also accepted): where the
inbound listeners find the application. The proxy connects to ``--xds-address`` (Pilot), reports every
accepted config to the :class:`~meshlab.mesh.proxy.server.Sidecar`, and exits cleanly on SIGTERM or
``POST /quitquitquit``; while Pilot is unreachable it keeps serving its last good config and reconnects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING

from meshlab.errors import XdsError

if TYPE_CHECKING:
    from meshlab.mesh.proxy.server import Settings
    from meshlab.mesh.xds.node import ProxyIdentity

# grpc and the Envoy protos are imported inside the functions: ``meshlab --help`` and ``meshlab app ...``
# build this parser too and must stay fast.
ADMIN_PORT = 15000


def identity_from_env(env: Mapping[str, str], *, pod_ip: str | None = None) -> ProxyIdentity:
    """The node identity the injector's environment describes; an ``XdsError`` names what is missing."""
    from meshlab.mesh.xds.node import ProxyIdentity

    ip = pod_ip or env.get("INSTANCE_IP") or env.get("POD_IP") or env.get("MESHLAB_POD_IP") or ""
    missing = [name for name, value in (("POD_NAME", env.get("POD_NAME")), ("POD_NAMESPACE", env.get("POD_NAMESPACE")),
                                        ("INSTANCE_IP (or --pod-ip)", ip)) if not value]
    if missing:
        raise XdsError(f"the sidecar needs {', '.join(missing)} in its environment (set by the injector)")
    labels_json = env.get("ISTIO_METAJSON_LABELS") or "{}"
    try:
        labels = json.loads(labels_json)
    except json.JSONDecodeError as err:
        raise XdsError(f"ISTIO_METAJSON_LABELS is not JSON: {err}") from err
    if not isinstance(labels, dict):
        raise XdsError("ISTIO_METAJSON_LABELS must be a JSON object of pod labels")
    return ProxyIdentity(
        ip=ip, pod=env["POD_NAME"], namespace=env["POD_NAMESPACE"],
        labels={str(k): str(v) for k, v in labels.items()},
        service_account=env.get("SERVICE_ACCOUNT") or "default",
        workload_name=env.get("ISTIO_META_WORKLOAD_NAME") or "",
        app_address=env.get("APP_ADDRESS") or env.get("ISTIO_META_APP_ADDRESS") or "",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--xds-address", default=os.environ.get("XDS_ADDRESS"),
                        help="Pilot's ADS address host:port (default: $XDS_ADDRESS)")
    parser.add_argument("--pod-ip", default=None, help="this pod's IP (default: $INSTANCE_IP, $POD_IP)")
    parser.add_argument("--admin-address", default="127.0.0.1",
                        help=f"address of the admin listener on port {ADMIN_PORT} (default: 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, default=ADMIN_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a client has to send a request's headers (default: 10)")


async def run_sidecar(identity: ProxyIdentity, settings: Settings, xds_address: str) -> None:
    """Serve until ``/quitquitquit``, SIGTERM or cancellation."""
    from meshlab.mesh.proxy.admin import RecordingSession
    from meshlab.mesh.proxy.server import Sidecar
    from meshlab.mesh.proxy.xds_client import AdsClient

    sidecar = Sidecar(settings)
    session = RecordingSession(identity.to_node())
    client = AdsClient(session, target=xds_address,
                       on_config=lambda config: sidecar.apply(config, dict(session.resources)))
    await sidecar.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(sidecar.stop()))
    ads = asyncio.create_task(client.run())
    try:
        await sidecar.stopped.wait()
    finally:
        ads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ads


def run(args: argparse.Namespace) -> int:
    from meshlab.mesh.proxy.server import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.xds_address:
        raise XdsError("give Pilot's address with --xds-address host:port (or $XDS_ADDRESS)")
    identity = identity_from_env(os.environ, pod_ip=args.pod_ip)
    settings = Settings(pod_ip=identity.ip, admin_address=args.admin_address, admin_port=args.admin_port,
                        header_timeout=args.header_timeout)
    asyncio.run(run_sidecar(identity, settings, args.xds_address))
    return 0
