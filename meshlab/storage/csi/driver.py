"""Assemble and run the ``nfs.csi.meshlab.io`` driver: which services a process serves, on which socket.

A CSI driver is usually deployed twice (kubernetes-csi/csi-driver-nfs does): a controller Deployment
(Identity + Controller, beside the external-provisioner) and a node DaemonSet (Identity + Node, beside
the node-driver-registrar). ``mode="both"`` serves all three on one socket, which is what csi-sanity
and the conformance tests talk to.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from meshlab.mounting.nfsclient import NfsLocation
from meshlab.storage.csi.controller import DEFAULT_MAX_VOLUME_BYTES, ControllerService
from meshlab.storage.csi.identity import IdentityService
from meshlab.storage.csi.node import Mounter, NodeService
from meshlab.storage.csi.records import Connect
from meshlab.storage.csi.serving import CallRecord, build_server

__all__ = ["MODES", "build_services", "nfs_health", "parse_location", "run_driver", "vendor_version"]

MODES = ("controller", "node", "both")
log = logging.getLogger("meshlab.csi")


def vendor_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meshlab")
    except PackageNotFoundError:
        return "0.0.0-dev"


def nfs_health(locations: Callable[[], Iterable[NfsLocation]], *, timeout: float = 3.0
               ) -> Callable[[], str | None]:
    """A Probe check: None when every location answers NFS calls, else which one failed and how."""

    def check() -> str | None:
        from meshlab.errors import NfsError
        from meshlab.mounting.nfsclient import NfsClient

        for location in locations():
            try:
                with NfsClient(location, timeout=timeout) as client:
                    client.exists("")
            except NfsError as err:
                return f"NFS server {location} unreachable: {err}"
        return None

    return check


def build_services(mode: str, *, node_id: str = "", state_dir: Path | None = None,
                   probe: NfsLocation | None = None, connect: Connect | None = None,
                   mounter: Mounter | None = None,
                   max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES) -> dict[str, object]:
    """The service objects for ``mode`` (controller, node or both), keyed by CSI service name."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    services: dict[str, object] = {}
    health = None
    if mode in ("controller", "both"):
        controller = ControllerService(connect=connect, max_volume_bytes=max_volume_bytes)
        services["Controller"] = controller
        # Probe checks the --probe-nfs server, else every server this controller has provisioned on.
        health = nfs_health((lambda: [probe]) if probe is not None else controller.locations_in_use)
    services = {"Identity": IdentityService(vendor_version=vendor_version(), health=health), **services}
    if mode in ("node", "both"):
        if not node_id:
            raise ValueError("the node service needs a node id (--node-id or $NODE_NAME)")
        if state_dir is None:
            raise ValueError("the node service needs a state directory")
        services["Node"] = NodeService(node_id=node_id, state_dir=state_dir, mounter=mounter)
    return services


def run_driver(endpoint: str, services: dict[str, object], *, call_log: Path | None = None,
               stop: threading.Event | None = None) -> int:
    """Serve ``services`` on ``endpoint`` until SIGTERM/SIGINT (or ``stop`` is set); returns an exit code."""
    record = _jsonl_recorder(call_log) if call_log is not None else None
    server = build_server(services, endpoint, record=record)
    server.start()
    log.info("nfs.csi.meshlab.io serving %s on %s", "+".join(services), endpoint)
    done = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop(grace=2).wait()
    return 0


def _jsonl_recorder(path: Path) -> Callable[[CallRecord], None]:
    """Append each call as one JSON line (the lessons' per-volume call trace reads this file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    guard = threading.Lock()

    def record(call: CallRecord) -> None:
        line = json.dumps({"time": call.time, "method": call.method, "request": call.request, "code": call.code,
                           "message": call.message, "duration_ms": round(call.duration_s * 1000, 3)})
        with guard, path.open("a") as out:
            out.write(line + "\n")

    return record



def parse_location(text: str) -> NfsLocation:
    """``server[:port]/share[?version=N]`` (the ``--probe-nfs`` flag) as an :class:`NfsLocation`."""
    text, _, query = text.partition("?")
    hostport, slash, share = text.partition("/")
    server, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "2049")
    version = query.removeprefix("version=") if query.startswith("version=") else "3"
    if not server or not slash or not port.isdigit() or version not in ("3", "4"):
        raise ValueError(f"NFS location {text!r} is not server[:port]/share[?version=3|4]")
    return NfsLocation(server=server, export="/" + share, port=int(port), version=int(version))
