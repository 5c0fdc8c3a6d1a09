"""``meshlab proxy``: run the sidecar — identity from the pod's environment, config from Pilot over ADS.

The identity comes from the variables Istio's sidecar injector gives ``istio-proxy`` through the downward API
(istio.io ``manifests/charts/istio-control/istio-discovery/files/injection-template.yaml``): ``POD_NAME``,
``POD_NAMESPACE``, ``INSTANCE_IP`` (the pod IP), ``SERVICE_ACCOUNT``, ``ISTIO_META_WORKLOAD_NAME``, and the pod
labels as JSON in ``ISTIO_METAJSON_LABELS`` (the injector's older spelling, chosen because it needs no
downward-API volume). meshlab adds ``APP_ADDRESS`` (``ISTIO_META_APP_ADDRESS`` also accepted): where the
inbound listeners find the application. The proxy connects to ``--xds-address`` (Pilot), reports every
accepted config to the :class:`~meshlab.mesh.proxy.server.Sidecar`, and exits cleanly on SIGTERM or
``POST /quitquitquit``; while Pilot is unreachable it keeps serving its last good config and reconnects.

Identity, as istio-agent provides it: when the injector set ``CA_ADDR`` (the mesh has Citadel), the proxy runs
a :class:`~meshlab.mesh.citadel.client.CertificateProvider` that authenticates with the projected token
``/var/run/secrets/tokens/istio-token`` (audience ``istio-ca``; the pod's default service-account token if
absent), trusts the bundle in ``/var/run/secrets/istio/root-cert.pem`` and asks for ``SECRET_TTL``; every
certificate it obtains or renews becomes the sidecar's TLS contexts, and ``/ready`` waits for the first one
(Envoy's listeners wait for their SDS secrets the same way). Where the lab's kubelet cannot mount volumes at
their paths it lists them in ``MESHLAB_MOUNTS`` (mountPath → host path), which the proxy follows.

Finding Pilot without DNS: the embedded lab has no cluster DNS, so ``istiod.istio-system.svc:15010`` does not
resolve there. When ``getaddrinfo`` fails for the host and the pod has in-cluster credentials, the proxy reads
the Service (``<svc>.<ns>[.svc[.<domain>]]``, or ``<svc>`` in its own namespace) and its EndpointSlices from
the Kubernetes API and dials a ready endpoint on the target port of the named Service port (by number or
name) — what a ClusterIP would have led to. It resolves again before every reconnect, so a restarted istiod
with a new pod IP is found. The sidecar's own connections never go through ``HTTP_PROXY`` (it is the pod's
proxy; Istio likewise exempts its UID from capture).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meshlab.errors import XdsError

if TYPE_CHECKING:
    from kubernetes import client as k8s

    from meshlab.mesh.proxy.server import Settings
    from meshlab.mesh.xds.node import ProxyIdentity

# grpc and the Envoy protos are imported inside the functions: ``meshlab --help`` and ``meshlab app ...``
# build this parser too and must stay fast.
ADMIN_PORT = 15000
log = logging.getLogger("meshlab.proxy")


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


# -- finding Pilot through the Kubernetes API when DNS cannot ----------------------------------------------------


def service_of(host: str, namespace: str) -> tuple[str, str] | None:
    """(name, namespace) of the Service a cluster DNS name means, or None if it is not one."""
    parts = host.split(".")
    if len(parts) == 1 and parts[0]:
        return parts[0], namespace
    if len(parts) == 2 or (len(parts) >= 3 and parts[2] == "svc"):
        return parts[0], parts[1]
    return None


def endpoint_for(service: Mapping[str, Any], slices: Sequence[Mapping[str, Any]], port: str,
                 choose: Callable[[list[tuple[str, int]]], tuple[str, int]] = random.choice) -> tuple[str, int]:
    """A ready endpoint (IP, target port) of ``service``'s port ``port`` (its number or its name)."""
    name = (service.get("metadata") or {}).get("name")
    wanted = next((p for p in (service.get("spec") or {}).get("ports") or ()
                   if str(p.get("port")) == port or p.get("name") == port), None)
    if wanted is None:
        raise XdsError(f"service {name} has no port {port}")
    target = wanted.get("targetPort", wanted.get("port"))
    found: list[tuple[str, int]] = []
    for slice_ in slices:
        numbers = [int(p["port"]) for p in slice_.get("ports") or () if p.get("port")
                   and (p.get("name") or "") == (wanted.get("name") or "")]
        if isinstance(target, int) and not numbers:
            numbers = [target]
        for endpoint in slice_.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found += [(str(ip), n) for ip in endpoint.get("addresses") or () for n in numbers[:1]]
    if not found:
        raise XdsError(f"service {name} has no ready endpoint for port {port}")
    return choose(sorted(found))


class ApiResolver:
    """``host:port`` -> an address to dial: DNS when it resolves, else the Service's endpoints from the API."""

    def __init__(self, namespace: str, api_client: k8s.ApiClient | None) -> None:
        self._namespace = namespace
        self._api = api_client

    def __call__(self, address: str) -> str:
        host, _, port = address.rpartition(":")
        try:
            socket.getaddrinfo(host, port)
            return address
        except (socket.gaierror, UnicodeError):
            pass
        svc = service_of(host, self._namespace)
        if svc is None or self._api is None:
            return address  # nothing better: let gRPC report the failure
        from kubernetes import client

        name, namespace = svc
        plain = self._api.sanitize_for_serialization
        service = plain(client.CoreV1Api(self._api).read_namespaced_service(name, namespace))
        slices = plain(client.DiscoveryV1Api(self._api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={name}")).get("items") or []
        ip, target = endpoint_for(service, slices, port)
        return f"{ip}:{target}"


def in_cluster_api() -> k8s.ApiClient | None:
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    from kubernetes import client

    from meshlab import kube

    return client.ApiClient(kube.load_configuration())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--xds-address", default=os.environ.get("XDS_ADDRESS"),
                        help="Pilot's ADS address host:port (default: $XDS_ADDRESS)")
    parser.add_argument("--pod-ip", default=None, help="this pod's IP (default: $INSTANCE_IP, $POD_IP)")
    parser.add_argument("--admin-address", default="127.0.0.1",
                        help=f"address of the admin listener on port {ADMIN_PORT} (default: 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, default=ADMIN_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a client has to send a request's headers (default: 10)")


TOKEN_PATH = "/var/run/secrets/tokens/istio-token"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ROOTS_PATH = "/var/run/secrets/istio/root-cert.pem"


def mounted(path: str, env: Mapping[str, str]) -> str:
    """Where ``path`` of a volume really is: itself, or under the host path ``MESHLAB_MOUNTS`` gives its mount."""
    try:
        table = json.loads(env.get("MESHLAB_MOUNTS") or "{}")
    except json.JSONDecodeError:
        table = {}
    if not isinstance(table, dict) or os.path.exists(path):
        return path
    for target in sorted(table, key=len, reverse=True):
        prefix = str(target).rstrip("/")
        if path == prefix or path.startswith(prefix + "/"):
            return str(table[target]) + path[len(prefix):]
    return path


def ttl_seconds(text: str) -> float | None:
    """``SECRET_TTL`` as Go writes durations (``24h``, ``90s``) or plain seconds; empty: the CA decides."""
    if not text:
        return None
    from meshlab.mesh.citadel.settings import parse_duration

    return parse_duration(text).total_seconds()


def certificate_provider(env: Mapping[str, str], resolver: ApiResolver) -> Any:
    """The istio-agent part: a ``CertificateProvider`` when the mesh has a CA (``CA_ADDR``), else None."""
    ca_address = env.get("CA_ADDR") or ""
    if not ca_address:
        return None
    from pathlib import Path

    from meshlab.mesh.citadel.client import CertificateProvider

    token = mounted(TOKEN_PATH, env)
    if not os.path.exists(token):
        token = mounted(DEFAULT_TOKEN_PATH, env)
    return CertificateProvider(ca_address, Path(token), ca_roots_pem=None, ttl=ttl_seconds(env.get("SECRET_TTL", "")),
                               resolve=lambda: asyncio.to_thread(resolver, ca_address),
                               trust_domain=env.get("TRUST_DOMAIN") or None,
                               roots_path=Path(mounted(ROOTS_PATH, env)))


async def run_sidecar(identity: ProxyIdentity, settings: Settings, xds_address: str,
                      env: Mapping[str, str] | None = None) -> None:
    """Serve until ``/quitquitquit``, SIGTERM or cancellation."""
    from meshlab.mesh.proxy.admin import RecordingSession
    from meshlab.mesh.proxy.server import Sidecar
    from meshlab.mesh.proxy.xds_client import AdsClient

    resolve = ApiResolver(identity.namespace, in_cluster_api())
    provider = certificate_provider(env if env is not None else os.environ, resolve)
    if provider is not None:
        from dataclasses import replace

        settings = replace(settings, require_certificate=True)
    sidecar = Sidecar(settings)
    from meshlab.mesh.proxy.stats_plugin import start_telemetry

    stop_telemetry = await start_telemetry(sidecar, identity, env if env is not None else os.environ, resolve)
    from meshlab.mesh.proxy.mixer_plugin import start_mixer

    mixer = start_mixer(sidecar, resolve, env if env is not None else os.environ)
    identity_task: asyncio.Task[Any] | None = None
    if provider is not None:
        sidecar.tls.follow(provider)  # takes the first certificate and every rotation
        identity_task = asyncio.create_task(provider.start())
    session = RecordingSession(identity.to_node())
    client = AdsClient(session, target=xds_address,
                       on_config=lambda config: sidecar.apply(config, dict(session.resources)),
                       # before every (re)connection: istiod may have come back with another pod IP
                       resolve=lambda: asyncio.to_thread(resolve, xds_address))
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
        await stop_telemetry()
        await mixer.stop()
        if provider is not None:
            assert identity_task is not None
            identity_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await identity_task
            await provider.stop()


def run(args: argparse.Namespace) -> int:
    from meshlab.mesh.proxy.server import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.xds_address:
        raise XdsError("give Pilot's address with --xds-address host:port (or $XDS_ADDRESS)")
    identity = identity_from_env(os.environ, pod_ip=args.pod_ip)
    # The sidecar is the pod's HTTP proxy: its own connections (to Pilot) go direct, never through HTTP_PROXY.
    for name in ("grpc_proxy", "https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        os.environ.pop(name, None)
    from meshlab.mesh.proxy.probes import parse_probers

    settings = Settings(pod_ip=identity.ip, admin_address=args.admin_address, admin_port=args.admin_port,
                        header_timeout=args.header_timeout,
                        app_probers=parse_probers(os.environ.get("ISTIO_KUBE_APP_PROBERS", "")),
                        app_host=identity.app_address.partition(":")[0])
    asyncio.run(run_sidecar(identity, settings, args.xds_address))
    return 0
