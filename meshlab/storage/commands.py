"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``meshlab storage install|uninstall|status``."""
    p = sub.add_parser("storage", help="install, remove or inspect the NFS server and the CSI driver",
                       description="install: NFS server, CSI driver nfs.csi.meshlab.io (controller + node plugin) "
                                   "and the StorageClass meshlab-nfs, from the manifests in meshlab/storage/manifests")
    p.add_argument("action", choices=["install", "uninstall", "status"])
    p.add_argument("--kubeconfig", default=None, help="a real cluster's kubeconfig (default: the embedded lab)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")
    p.add_argument("--nfs-backend", choices=["python", "ganesha"], default="python",
                   help="NFS server: python (NFSv3, no root) or ganesha (NFSv4, root and ganesha.nfsd in the image)")
    p.add_argument("--force", action="store_true", help="uninstall even while claims of meshlab-nfs exist")
    p.set_defaults(func=_storage)


def _storage(args: argparse.Namespace) -> int:
    import meshlab.lab
    from meshlab.errors import LabError
    from meshlab.storage import installing

    lab = meshlab.lab.connect(args.kubeconfig)
    try:
        if args.action == "install":
            installing.install(lab, timeout=args.timeout, backend=args.nfs_backend)
            print(installing.format_status(installing.status(lab)))
            return 0
        if args.action == "uninstall":
            for name in installing.uninstall(lab, force=args.force, timeout=args.timeout):
                print(f"{name} deleted")
            return 0
        state = installing.status(lab)
        print(installing.format_status(state))
        return 0 if state.healthy else 3
    except LabError as err:
        print(f"meshlab storage {args.action}: {err}", file=sys.stderr)
        return 1
    finally:
        lab.close()
