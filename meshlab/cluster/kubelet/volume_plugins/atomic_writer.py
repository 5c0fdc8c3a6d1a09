"""Writing a configMap/secret/projected volume so readers never see half an update: the ``..data`` swap.

The kubelet's AtomicWriter (``pkg/volume/util/atomic_writer.go``) keeps each version of a volume's files in a
hidden timestamped directory ``..2025_01_31_12_00_00.123456789`` and points ``..data`` at the current one;
every user-visible name is a symlink through ``..data`` (``key -> ..data/key``). An update writes a new
timestamped directory, makes a symlink ``..data_tmp`` to it and renames that over ``..data`` — rename(2) is
atomic, so a reader opening ``key`` gets the whole old file or the whole new one, never a mix — then adds
symlinks for new names, removes those of vanished ones and deletes the directories older than the previous
version (kept one update longer than the kubelet does, so a reader that resolved ``..data`` just before the
swap still finds its file). A file bind-mounted by
``subPath`` pins the old version (in Kubernetes too: subPath mounts do not receive updates).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DATA = "..data"
DATA_TMP = "..data_tmp"


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int


class PayloadError(ValueError):
    pass


def validate_path(path: str) -> None:
    """Kubernetes' rules for a payload path: relative, no ``..`` element, not starting with ``..``."""
    if not path:
        raise PayloadError("invalid path: must not be empty")
    if len(path) > 4096:
        raise PayloadError(f"invalid path: {path!r} is longer than 4096 characters")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise PayloadError(f"invalid path: {path!r} must be relative")
    if ".." in pure.parts:
        raise PayloadError(f"invalid path: {path!r} must not contain '..'")
    if path.startswith(".."):
        raise PayloadError(f"invalid path: {path!r} must not start with '..'")


def read_current(target: Path) -> dict[str, FileProjection] | None:
    """The payload the volume shows now (``None`` if it was never written)."""
    data = target / DATA
    if not data.is_symlink():
        return None
    current: dict[str, FileProjection] = {}
    root = target / os.readlink(data)
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = Path(dirpath, name)
            current[full.relative_to(root).as_posix()] = FileProjection(full.read_bytes(),
                                                                        full.stat().st_mode & 0o7777)
    return current


def read_file(target: Path, path: str) -> bytes | None:
    """One file of the current version, or ``None``."""
    try:
        return (target / DATA / path).read_bytes()
    except OSError:
        return None


def write(target: Path, payload: Mapping[str, FileProjection], *, now: float | None = None) -> bool:
    """Make ``target`` show exactly ``payload``; ``False`` when it already did (nothing written)."""
    for path in payload:
        validate_path(path)
    target.mkdir(parents=True, exist_ok=True)
    if read_current(target) == dict(payload):
        return False
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now if now is not None else time.time()))
    version = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=target))
    version.chmod(0o755)
    for path, projection in payload.items():
        file = version / path
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(projection.data)
        os.chmod(file, projection.mode)
    old = os.readlink(target / DATA) if (target / DATA).is_symlink() else None
    tmp = target / DATA_TMP
    tmp.unlink(missing_ok=True)
    os.symlink(version.name, tmp)
    os.rename(tmp, target / DATA)
    visible = {PurePosixPath(path).parts[0] for path in payload}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            os.symlink(f"{DATA}/{name}", link)
    for entry in target.iterdir():
        # Only our own symlinks into ..data are removed: the volume directory holds nothing else.
        if (not entry.name.startswith("..") and entry.name not in visible and entry.is_symlink()
                and os.readlink(entry).startswith(f"{DATA}/")):
            entry.unlink()
    # The previous version stays until the next update: a reader that resolved ``..data`` to it an instant
    # before the rename still finds its file (the real kubelet deletes it at once, and such a reader gets
    # ENOENT). Older versions go.
    for entry in target.iterdir():
        if (entry.name.startswith("..") and entry.name not in (DATA, DATA_TMP, version.name, old)
                and entry.is_dir() and not entry.is_symlink()):
            shutil.rmtree(entry, ignore_errors=True)
    return True
