"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's subcommands to ``meshlab``'s parser."""
    add_driver_commands(sub)
    add_sidecar_commands(sub)


# -- the driver itself: meshlab csi-driver ----------------------------------------------------------------------

def add_driver_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``meshlab csi-driver``: the nfs.csi.meshlab.io plugin (Identity + Controller and/or Node) on a unix socket."""
    d = sub.add_parser("csi-driver", help="run the CSI driver nfs.csi.meshlab.io on a unix socket")
    d.add_argument("--endpoint", default=os.environ.get("CSI_ENDPOINT", "unix:///csi/csi.sock"),
                   help="unix:///path.sock (default: $CSI_ENDPOINT, else unix:///csi/csi.sock)")
    d.add_argument("--mode", choices=["controller", "node", "both"], default="both",
                   help="services to serve besides Identity (default both)")
    d.add_argument("--node-id", default=os.environ.get("NODE_NAME", ""),
                   help="this node's id for NodeGetInfo (default: $NODE_NAME); node and both modes need it")
    d.add_argument("--state-dir", default="/var/lib/meshlab/csi-nfs",
                   help="where the node service remembers what it published (default /var/lib/meshlab/csi-nfs)")
    d.add_argument("--probe-nfs", default=None, metavar="SERVER:PORT/SHARE[?version=N]",
                   help="controller: answer Probe with FAILED_PRECONDITION while this NFS server is unreachable")
    d.add_argument("--max-volume-size", type=int, default=None,
                   help="largest capacity CreateVolume accepts in bytes (default 1 TiB); above it: OUT_OF_RANGE")
    d.add_argument("--call-log", default=None, help="append every CSI call (redacted) to this JSON-lines file")
    d.add_argument("-q", "--quiet", action="store_true", help="log warnings only (default: one line per call)")
    d.set_defaults(func=_run_driver)


def _run_driver(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from meshlab.storage.csi import driver

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    extra = {} if args.max_volume_size is None else {"max_volume_bytes": args.max_volume_size}
    try:
        services = driver.build_services(args.mode, node_id=args.node_id, state_dir=Path(args.state_dir),
                                         probe=driver.parse_location(args.probe_nfs) if args.probe_nfs else None,
                                         **extra)
    except ValueError as err:
        raise SystemExit(f"meshlab csi-driver: {err}") from None
    return driver.run_driver(args.endpoint, services, call_log=Path(args.call_log) if args.call_log else None)


# -- the sidecars beside the driver: csi-provisioner (controller pod), csi-registrar (node pod) ----------------

def add_sidecar_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``meshlab csi-provisioner`` and ``meshlab csi-registrar`` (kubernetes-csi's two sidecars' roles)."""
    p = sub.add_parser("csi-provisioner", help="provision PVs for a CSI driver's StorageClasses "
                                               "(the external-provisioner's role)")
    p.add_argument("--csi-address", required=True, help="the driver's controller socket, unix:///csi/csi.sock")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster service account, else $KUBECONFIG")
    p.add_argument("--resync", type=float, default=30.0, help="seconds between full resyncs (default 30)")
    p.add_argument("--retry-interval-start", type=float, default=1.0, help="first retry delay in seconds")
    p.add_argument("--retry-interval-max", type=float, default=300.0, help="longest retry delay in seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each CSI call in seconds")
    p.add_argument("--health-port", type=int, default=0,
                   help="serve GET /healthz on this port, 200 once synced (a readiness probe); 0: off")
    p.set_defaults(func=_run_provisioner)

    r = sub.add_parser("csi-registrar", help="register a CSI driver with the kubelet through its plugins_registry "
                                             "(the node-driver-registrar's role)")
    r.add_argument("--csi-address", required=True, help="the driver's node socket as this container sees it")
    r.add_argument("--kubelet-registration-path", required=True,
                   help="the same socket as the kubelet sees it, e.g. /var/lib/kubelet/plugins/<driver>/csi.sock")
    r.add_argument("--plugin-registration-path", default="/registration",
                   help="the kubelet's plugins_registry directory as this container sees it (default /registration)")
    r.add_argument("--health-port", type=int, default=0, help="serve /healthz on this port (0: off)")
    r.set_defaults(func=_run_registrar)


def _run_provisioner(args: argparse.Namespace) -> int:
    import logging

    from meshlab.storage.csi import provisioner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return provisioner.main(csi_address=args.csi_address, kubeconfig=args.kubeconfig, resync=args.resync,
                            retry_start=args.retry_interval_start, retry_max=args.retry_interval_max,
                            timeout=args.timeout, health_port=args.health_port)


def _run_registrar(args: argparse.Namespace) -> int:
    import logging

    from meshlab.storage.csi import registrar

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return registrar.main(csi_address=args.csi_address, kubelet_path=args.kubelet_registration_path,
                          registration_dir=args.plugin_registration_path, health_port=args.health_port)
