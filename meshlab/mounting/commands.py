"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``meshlab mount-nfs``: the FUSE NFS client behind a lab mount (started by ``mount_nfs``)."""
    p = sub.add_parser("mount-nfs", help="serve an NFS export at a mount point through FUSE (foreground)",
                       description="Mount SERVER:EXPORT/SUBDIR at TARGET through FUSE, forwarding every "
                                   "operation to the NFS server; runs until unmounted (fusermount3 -u TARGET).")
    p.add_argument("--server", required=True, help="NFS server host or IP")
    p.add_argument("--export", required=True, help="export path as the server names it, e.g. /export")
    p.add_argument("--port", type=int, default=2049, help="NFS TCP port (also MOUNT for v3; default 2049)")
    p.add_argument("--nfs-version", type=int, choices=(3, 4), default=3, help="NFS version (default 3)")
    p.add_argument("--subdir", default="", help="directory under the export to mount (default: its root)")
    p.add_argument("--read-only", action="store_true", help="mount read-only (writes fail with EROFS)")
    p.add_argument("-o", dest="options", action="append", default=[],
                   help="other nfs(5) options; the FUSE client logs and ignores them")
    p.add_argument("--owner-pid", type=int, default=None,
                   help="unmount and exit when this process ends (mount_nfs passes the kubelet or the driver)")
    p.add_argument("target", help="the mount point (an existing directory)")
    p.set_defaults(func=_mount_nfs)


def _mount_nfs(args: argparse.Namespace) -> int:
    import logging
    import os
    import sys

    from meshlab.errors import NfsError
    from meshlab.mounting.fuse import serve
    from meshlab.mounting.nfsclient import NfsLocation

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s mount-nfs[%(process)d] %(levelname)s %(message)s")
    if args.options:
        logging.getLogger("meshlab.mount-nfs").info("ignoring mount options the FUSE client does not "
                                                    "implement: %s", ",".join(args.options))
    location = NfsLocation(server=args.server, export=args.export, port=args.port, version=args.nfs_version)
    os.chdir("/")  # hold no directory busy (the caller's may be unmounted or deleted while this runs)
    try:
        serve(location, args.subdir, args.target, read_only=args.read_only, owner_pid=args.owner_pid)
    except NfsError as err:
        print(f"mount-nfs: cannot mount {args.server}:{args.export} at {args.target}: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # libfuse's fuse_main failed (it already printed why)
        print(f"mount-nfs: FUSE could not mount {args.target}: {err}", file=sys.stderr)
        return 1
    return 0
