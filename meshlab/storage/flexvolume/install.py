"""Installing the FlexVolume driver: an executable at ``<plugin dir>/meshlab~nfs/nfs``.

The kubelet finds FlexVolume drivers by listing its exec plugin directory (``--volume-plugin-dir``, by default
``/usr/libexec/kubernetes/kubelet-plugins/volume/exec/``) for ``<vendor~driver>/<driver>`` executables, and
notices new ones without a restart; a DaemonSet copying the driver there is the documented way to deploy.
The driver written here is a two-line ``sh`` shim that execs this Python with ``-m meshlab.cli flexvolume``,
so it runs the installed meshlab whatever the caller's ``PATH``. It is written to a temporary name and
renamed, so a kubelet probing the directory never runs a half-written file.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from meshlab.storage.flexvolume.driver import DRIVER

__all__ = ["DEFAULT_PLUGIN_DIR", "install_driver", "shim_text", "uninstall_driver"]

DEFAULT_PLUGIN_DIR = Path("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")


def shim_text(python: str = sys.executable) -> str:
    """The driver executable's contents."""
    return ("#!/bin/sh\n"
            f"# FlexVolume driver {DRIVER} (written by `meshlab flexvolume install`): init, mount, unmount.\n"
            f"exec {shlex.quote(python)} -m meshlab.cli flexvolume \"$@\"\n")


def install_driver(plugin_dir: Path | str = DEFAULT_PLUGIN_DIR, *, python: str = sys.executable) -> Path:
    """Write the driver to ``<plugin_dir>/meshlab~nfs/nfs`` (mode 0755); returns its path. Idempotent."""
    path = Path(plugin_dir) / DRIVER
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    partial.write_text(shim_text(python))
    partial.chmod(0o755)
    partial.replace(path)
    return path


def uninstall_driver(plugin_dir: Path | str = DEFAULT_PLUGIN_DIR) -> None:
    """Remove the driver and its vendor directory if empty; nothing installed is fine."""
    path = Path(plugin_dir) / DRIVER
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # missing, or other files of the vendor directory remain
