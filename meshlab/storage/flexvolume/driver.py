"""The FlexVolume driver ``meshlab~nfs/nfs``: the exec call protocol as a pure function of argv.

FlexVolume (kubernetes/community ``contributors/devel/sig-storage/flexvolume.md``; the kubelet side is
``pkg/volume/flexvolume/driver-call.go``; deprecated since Kubernetes 1.23) is the pre-CSI plugin interface:
the kubelet *executes* ``<plugin dir>/<vendor~driver>/<driver> <command> <args...>`` and reads one JSON object
from stdout — ``{"status": "Success" | "Failure" | "Not supported", "message": ...}`` — with exit code 0 for
success and 1 otherwise. This driver implements ``init`` (capabilities ``{"attach": false}``: no attach/detach
step, the kubelet calls ``mount`` directly), ``mount <dir> <json>`` and ``unmount <dir>``, both idempotent.
Every other command gets ``Not supported`` with **exit 1**: the upstream NFS example exits 0 there, but the
kubelet treats the status alone as authoritative and exit 0 claims success, so meshlab follows the OpenShift
guidance (``Not supported`` is not a success). :func:`call` takes argv and a :class:`Mounter` and returns a
:class:`Reply` (its JSON and exit code); :mod:`.commands` is the thin shell that prints it.

Options (``flexVolume.options``, strings): ``server`` (required), ``share`` (the export path, required),
``subDir`` (a directory under the share, must exist), ``mountOptions`` (comma-separated nfs(5) options), and
two lab extensions — ``port`` (NFS TCP port, default 2049) and ``version`` (``3`` or ``4``, default 3) —
because the lab's NFS servers listen on a high port. The kubelet adds ``kubernetes.io/*`` keys (``readwrite``
``ro`` mounts read-only; ``fsType`` must be empty or ``nfs``; secrets, pod and service-account names are
accepted and ignored). Unknown keys are a ``Failure`` naming the known ones.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from meshlab.errors import MeshlabError
from meshlab.mounting.nfsclient import NfsLocation

__all__ = ["DRIVER", "MountRequest", "Mounter", "Reply", "call", "parse_mount_options"]

DRIVER = "meshlab~nfs/nfs"
"""``<vendor~driver>/<driver>`` under the kubelet's exec plugin directory; pods name it ``meshlab/nfs``."""

SUCCESS, FAILURE, NOT_SUPPORTED = "Success", "Failure", "Not supported"
OPTIONS = ("server", "share", "subDir", "mountOptions", "port", "version")
# Commands of the protocol this driver does not implement (driver-call.go's constants).
OTHER_COMMANDS = ("getvolumename", "attach", "detach", "waitforattach", "isattached", "mountdevice",
                  "unmountdevice", "expandvolume", "expandfs")
USAGE = f"usage: {DRIVER} init | mount <mount dir> <json options> | unmount <mount dir>"


@dataclass(frozen=True)
class Reply:
    """One driver answer: the JSON object printed on stdout and the exit code that goes with it."""

    status: str
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == SUCCESS else 1

    def json(self) -> str:
        body: dict[str, Any] = {"status": self.status}
        if self.message:
            body["message"] = self.message
        body.update(self.extra)
        return json.dumps(body)


@dataclass(frozen=True)
class MountRequest:
    """What ``mount`` was asked for, validated."""

    location: NfsLocation
    sub_dir: str
    read_only: bool
    mount_options: tuple[str, ...]


class Mounter(Protocol):
    """The I/O the driver needs; :mod:`meshlab.mounting.mount` in production, a fake in protocol tests."""

    def mount(self, location: NfsLocation, subdir: str, target: Path, *, read_only: bool,
              options: Sequence[str]) -> str: ...

    def unmount(self, target: Path) -> None: ...


class OptionError(ValueError):
    """The JSON options of a mount call are unusable (the message says which and why)."""


def parse_mount_options(text: str) -> MountRequest:
    """Validate the JSON argument of ``mount``; raises OptionError with a precise message."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise OptionError(f"the options argument is not valid JSON: {err.msg} at line {err.lineno} column "
                          f"{err.colno} (char {err.pos})") from err
    if not isinstance(options, dict):
        raise OptionError(f"the options argument must be a JSON object, not {type(options).__name__}")
    unknown = sorted(key for key in options if key not in OPTIONS and not str(key).startswith("kubernetes.io/"))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(map(repr, unknown))} (known: {', '.join(OPTIONS)})")
    server = _text(options, "server")
    share = _text(options, "share")
    if not server or not share:
        missing = [name for name, value in (("server", server), ("share", share)) if not value]
        raise OptionError(f"missing required option(s): {', '.join(missing)}")
    sub_dir = _text(options, "subDir").strip("/")
    if ".." in sub_dir.split("/"):
        raise OptionError(f"subDir {sub_dir!r} must stay inside the share (no '..')")
    port = _number(options, "port", 2049)
    if not 0 < port < 65536:
        raise OptionError(f"port {port} is not a TCP port")
    version = _number(options, "version", 3)
    if version not in (3, 4):
        raise OptionError(f"version {version} is not supported (3 or 4)")
    fs_type = _text(options, "kubernetes.io/fsType")
    if fs_type not in ("", "nfs", "nfs4"):
        raise OptionError(f"fsType {fs_type!r} is not NFS (leave it empty or use nfs)")
    readwrite = _text(options, "kubernetes.io/readwrite") or "rw"
    if readwrite not in ("ro", "rw"):
        raise OptionError(f"kubernetes.io/readwrite must be ro or rw, not {readwrite!r}")
    raw_mount_options = options.get("mountOptions", "")
    if isinstance(raw_mount_options, list):
        mount_options = tuple(str(item).strip() for item in raw_mount_options if str(item).strip())
    else:
        mount_options = tuple(part.strip() for part in str(raw_mount_options).split(",") if part.strip())
    location = NfsLocation(server=server, export="/" + share.strip("/"), port=port, version=version)
    return MountRequest(location, sub_dir, readwrite == "ro", mount_options)


def _text(options: dict[str, Any], key: str) -> str:
    value = options.get(key, "")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise OptionError(f"option {key!r} must be a string, not {type(value).__name__}")
    return str(value).strip()


def _number(options: dict[str, Any], key: str, default: int) -> int:
    text = _text(options, key)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"option {key!r} must be a number, not {text!r}") from None


def call(argv: Sequence[str], mounter: Mounter) -> Reply:
    """Answer one driver invocation (``argv`` without the program name)."""
    if not argv:
        return Reply(FAILURE, f"no command given; {USAGE}")
    command, args = argv[0], list(argv[1:])
    handler: Callable[[list[str], Mounter], Reply] | None = _HANDLERS.get(command)
    if handler is None:
        known = "a FlexVolume command" if command in OTHER_COMMANDS else "not a FlexVolume command"
        return Reply(NOT_SUPPORTED, f"{DRIVER} does not implement {command!r} ({known}; attach is false)")
    return handler(args, mounter)


def _init(args: list[str], mounter: Mounter) -> Reply:
    return Reply(SUCCESS, extra={"capabilities": {"attach": False}})


def _mount(args: list[str], mounter: Mounter) -> Reply:
    if len(args) != 2:
        return Reply(FAILURE, f"mount takes 2 arguments (mount dir, JSON options), got {len(args)}; {USAGE}")
    target, text = Path(args[0]), args[1]
    try:
        request = parse_mount_options(text)
    except OptionError as err:
        return Reply(FAILURE, f"mount {target}: {err}")
    source = f"{request.location.server}:{posixpath.join(request.location.export, request.sub_dir).rstrip('/')}"
    try:
        how = mounter.mount(request.location, request.sub_dir, target, read_only=request.read_only,
                            options=request.mount_options)
    except MeshlabError as err:
        return Reply(FAILURE, f"mount {source} at {target}: {err}")
    return Reply(SUCCESS, f"mounted {source} at {target} ({how}{', read-only' if request.read_only else ''})")


def _unmount(args: list[str], mounter: Mounter) -> Reply:
    if len(args) != 1:
        return Reply(FAILURE, f"unmount takes 1 argument (mount dir), got {len(args)}; {USAGE}")
    try:
        mounter.unmount(Path(args[0]))
    except MeshlabError as err:
        return Reply(FAILURE, f"unmount {args[0]}: {err}")
    return Reply(SUCCESS, f"unmounted {args[0]}")


_HANDLERS: dict[str, Callable[[list[str], Mounter], Reply]] = {"init": _init, "mount": _mount,
                                                                "unmount": _unmount}
