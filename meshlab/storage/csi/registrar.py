"""``meshlab csi-registrar``: the node-driver-registrar sidecar, registering a CSI driver with its kubelet.

The kubelet discovers node plugins through its plugin watcher (kubelet ``pkg/kubelet/pluginmanager``): any unix
socket that appears in ``/var/lib/kubelet/plugins_registry`` is dialled as a ``pluginregistration.v1``
``Registration`` service. This process serves that service on ``<registry>/<driver>-reg.sock`` (the name
kubernetes-csi/node-driver-registrar uses): ``GetInfo`` answers ``CSIPlugin``, the driver's name (asked from the
driver with Identity ``GetPluginInfo`` first), the driver socket's path *as the kubelet sees it*
(``--kubelet-registration-path``: the registrar's own view of it, ``--csi-address``, is usually a different
mount of the same directory) and the supported version ``1.0.0``. The kubelet then calls the driver's
NodeGetInfo itself, records the driver in the node's CSINode object, and reports back with
``NotifyRegistrationStatus``; a refusal ends this process with status 1 so that the container restarts and
registration is tried again, as upstream does. On SIGTERM the socket is removed, which deregisters the driver.
"""

from __future__ import annotations

import http.server
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from types import FrameType

import grpc

from meshlab.csiproto import csi_pb2, csi_pb2_grpc, registration_pb2, registration_pb2_grpc
from meshlab.errors import CsiError

log = logging.getLogger("meshlab.csi-registrar")

# gRPC backs off up to 120 s between reconnection attempts by default: a driver socket that appears a second
# after we start (or a restarted driver) would then wait minutes. A local unix socket is cheap to retry.
QUICK_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000)]
CSI_PLUGIN = "CSIPlugin"
SUPPORTED_VERSIONS = ("1.0.0",)


def socket_name(driver: str) -> str:
    """The registration socket's file name for ``driver`` (``<driver>-reg.sock``)."""
    return f"{driver}-reg.sock"


class RegistrationService(registration_pb2_grpc.RegistrationServicer):
    """Answers the kubelet for one driver; remembers what the kubelet decided."""

    def __init__(self, driver: str, endpoint: str, on_refused: Callable[[], object] | None = None) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.registered = threading.Event()
        self.refused: str | None = None
        self._on_refused = on_refused

    def GetInfo(self, request: registration_pb2.InfoRequest,
                context: grpc.ServicerContext) -> registration_pb2.PluginInfo:
        log.info("kubelet asked GetInfo: answering %s at %s", self.driver, self.endpoint)
        return registration_pb2.PluginInfo(type=CSI_PLUGIN, name=self.driver, endpoint=self.endpoint,
                                           supported_versions=list(SUPPORTED_VERSIONS))

    def NotifyRegistrationStatus(self, request: registration_pb2.RegistrationStatus,
                                 context: grpc.ServicerContext) -> registration_pb2.RegistrationStatusResponse:
        if request.plugin_registered:
            log.info("kubelet registered %s", self.driver)
            self.registered.set()
        else:
            self.refused = request.error or "no reason given"
            log.error("registration process failed with error: %s; restarting registration container",
                      self.refused)
            if self._on_refused is not None:
                self._on_refused()
        return registration_pb2.RegistrationStatusResponse()


def driver_name(csi_address: str, *, timeout: float = 120.0) -> str:
    """The driver's name from Identity GetPluginInfo, waiting for the driver to come up."""
    address = csi_address if "://" in csi_address else f"unix://{csi_address}"
    deadline = time.monotonic() + timeout
    last = ""
    with grpc.insecure_channel(address, options=QUICK_RECONNECT) as channel:
        identity = csi_pb2_grpc.IdentityStub(channel)
        while time.monotonic() < deadline:
            try:
                return str(identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=2.0).name)
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}" if hasattr(err, "code") else str(err)
            time.sleep(0.2)
    raise CsiError("UNAVAILABLE", f"the CSI driver at {address} did not answer GetPluginInfo in {timeout:.0f}s: "
                                  f"{last}")


def serve(service: RegistrationService, registration_dir: Path) -> tuple[grpc.Server, Path]:
    """Serve ``service`` on its socket in ``registration_dir`` (a stale socket is replaced)."""
    registration_dir.mkdir(parents=True, exist_ok=True)
    path = registration_dir / socket_name(service.driver)
    if len(os.fsencode(path)) > 107:
        raise CsiError("INVALID_ARGUMENT", f"registration socket path {path} is longer than a unix socket allows "
                                           "(107 bytes): use a shorter plugins_registry directory")
    path.unlink(missing_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    registration_pb2_grpc.add_RegistrationServicer_to_server(service, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    return server, path


def _health_server(port: int, path: Path, service: RegistrationService) -> http.server.ThreadingHTTPServer:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = path.exists() and service.refused is None
            body = b"ok\n" if ok else b"registration socket missing or registration refused\n"
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True, name="healthz").start()
    return server


def main(*, csi_address: str, kubelet_path: str, registration_dir: str, health_port: int = 0) -> int:
    """Run the registrar until SIGTERM/SIGINT (``meshlab csi-registrar``); 1 when the kubelet refuses."""
    driver = driver_name(csi_address)
    stop = threading.Event()
    service = RegistrationService(driver, kubelet_path, on_refused=stop.set)
    server, path = serve(service, Path(registration_dir))
    log.info("serving registration for %s on %s (driver endpoint for the kubelet: %s)", driver, path, kubelet_path)

    def terminate(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    health = _health_server(health_port, path, service) if health_port else None
    stop.wait()
    path.unlink(missing_ok=True)  # the kubelet's plugin watcher sees it go and deregisters the driver
    server.stop(0.5)
    if health is not None:
        health.shutdown()
    return 1 if service.refused is not None else 0
