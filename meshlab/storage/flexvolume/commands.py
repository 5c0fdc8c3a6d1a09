"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy."""

from __future__ import annotations

import argparse
import functools
import os
from types import SimpleNamespace
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """``meshlab flexvolume <command> ...``: the FlexVolume driver ``meshlab~nfs/nfs`` (and its installer)."""
    p = sub.add_parser(
        "flexvolume", help="the FlexVolume driver meshlab~nfs/nfs (init, mount, unmount; install)",
        description="Speak the FlexVolume exec protocol: `init`, `mount <dir> <json>`, `unmount <dir>`; JSON on "
                    "stdout, exit 0 on Success, 1 otherwise. `install [--plugin-dir DIR] [--uninstall]` writes "
                    "(or removes) the driver executable DIR/meshlab~nfs/nfs.")
    p.add_argument("command", help="init | mount | unmount | install (any other command: Not supported)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    p.set_defaults(func=_flexvolume)


def _flexvolume(args: argparse.Namespace) -> int:
    if args.command == "install":
        return _install(args.args)
    from meshlab.mounting import mount
    from meshlab.storage.flexvolume.driver import call

    # The real mounts (kernel or FUSE) behind the driver's protocol. The driver exits right after `mount`: a
    # FUSE mount belongs to the kubelet that called it (this process's parent), and lasts as long as it does.
    mounter = SimpleNamespace(mount=functools.partial(mount.mount_nfs, owner_pid=os.getppid()),
                              unmount=mount.unmount)
    reply = call([args.command, *args.args], mounter)
    # stdout only: the kubelet reads the combined output as one JSON object (driver-call.go).
    print(reply.json())
    return reply.exit_code


def _install(argv: list[str]) -> int:
    from meshlab.storage.flexvolume.install import DEFAULT_PLUGIN_DIR, install_driver, uninstall_driver

    parser = argparse.ArgumentParser(prog="meshlab flexvolume install")
    parser.add_argument("--plugin-dir", default=str(DEFAULT_PLUGIN_DIR),
                        help=f"the kubelet's exec volume plugin directory (default {DEFAULT_PLUGIN_DIR})")
    parser.add_argument("--uninstall", action="store_true", help="remove the driver instead")
    options = parser.parse_args(argv)
    if options.uninstall:
        uninstall_driver(options.plugin_dir)
        print(f"removed the FlexVolume driver from {options.plugin_dir}")
    else:
        print(f"installed the FlexVolume driver at {install_driver(options.plugin_dir)}")
    return 0
