"""File handles that survive a server restart, and finding the file a handle names.

An NFSv3 client keeps handles for as long as it likes — across server restarts — so a handle must name the
*file*, not a slot in the server's memory. meshlab's handle is ``b"MLh1"``, the file's device and inode
numbers, and an HMAC over them keyed by a per-export secret kept on disk beside the export. The HMAC makes
handles unforgeable (a client cannot fabricate one for an inode outside the export) and ties them to one
export; the inode survives renames, which a path-based handle would not. Going back from inode to path uses
an in-memory index filled by every LOOKUP/READDIR/CREATE; after a restart a miss is answered by walking the
export (without following symlinks or leaving the device), so old handles stay valid. A handle whose inode no
longer exists under the export is NFS3ERR_STALE; one that fails the HMAC is NFS3ERR_BADHANDLE.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path

MAGIC = b"MLh1"
_IDS = struct.Struct(">QQ")
HANDLE_SIZE = len(MAGIC) + _IDS.size + 16


class BadHandle(Exception):
    """Not a handle this export issued (wrong size, magic or signature)."""


class StaleHandle(Exception):
    """A valid handle whose file is gone from the export."""


def load_secret(state_dir: Path) -> bytes:
    """The export's handle secret, created on first use (mode 0600) and kept across restarts."""
    path = state_dir / "handle-secret"
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return data


class HandleIndex:
    """Issues handles for files under ``root`` and resolves handles back to absolute paths."""

    def __init__(self, root: Path, secret: bytes) -> None:
        self.root = Path(os.path.realpath(root))
        st = os.stat(self.root)
        self.root_ids = (st.st_dev, st.st_ino)
        # The root's identity is part of the key: a handle from another export (same secret) is refused.
        self._key = hashlib.sha256(secret + _IDS.pack(*self.root_ids)).digest()
        self._paths: dict[tuple[int, int], str] = {}
        self._ids: dict[str, tuple[int, int]] = {}  # the reverse map, so forgetting a path is O(1)
        self._remember(self.root_ids, str(self.root))

    def _remember(self, ids: tuple[int, int], path: str) -> None:
        old = self._paths.get(ids)
        if old is not None and old != path and self._ids.get(old) == ids:
            del self._ids[old]
        self._paths[ids] = path
        self._ids[path] = ids

    def handle_for(self, path: str, st: os.stat_result) -> bytes:
        """The handle of ``path`` (whose lstat is ``st``), remembered for resolving."""
        ids = (st.st_dev, st.st_ino)
        self._remember(ids, path)
        packed = _IDS.pack(*ids)
        return MAGIC + packed + hmac.new(self._key, packed, hashlib.sha256).digest()[:16]

    def resolve(self, fh: bytes) -> tuple[str, os.stat_result]:
        """The path and lstat of the file ``fh`` names; BadHandle or StaleHandle otherwise."""
        if len(fh) != HANDLE_SIZE or not fh.startswith(MAGIC):
            raise BadHandle("not a meshlab handle")
        packed = fh[len(MAGIC):len(MAGIC) + _IDS.size]
        mac = hmac.new(self._key, packed, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, fh[len(MAGIC) + _IDS.size:]):
            raise BadHandle("handle signature does not match this export")
        ids: tuple[int, int] = _IDS.unpack(packed)
        cached = self._paths.get(ids)
        if cached is not None:
            st = _lstat_ids(cached, ids)
            # The remembered path must still lead there without symlinks: a directory on the way that was
            # swapped for a symlink (to a copy outside the export, say) would otherwise be followed.
            if st is not None and _canonical_parent(cached, str(self.root)):
                return cached, st
        found = self._walk_for(ids)
        if found is None:
            gone = self._paths.pop(ids, None)
            if gone is not None and self._ids.get(gone) == ids:
                del self._ids[gone]
            raise StaleHandle("file no longer exists in the export")
        return found

    def forget(self, path: str) -> None:
        """Drop ``path`` (removed) from the index."""
        ids = self._ids.pop(path, None)
        if ids is not None and ids != self.root_ids and self._paths.get(ids) == path:
            del self._paths[ids]

    def moved(self, old: str, new: str, *, is_dir: bool) -> None:
        """``old`` was renamed to ``new``: rewrite it, and for a directory everything below it."""
        self.forget(new)  # whatever the rename replaced
        ids = self._ids.pop(old, None)
        if ids is not None:
            self._remember(ids, new)
        if not is_dir:
            return
        prefix = old + os.sep
        for ids, known in list(self._paths.items()):
            if known.startswith(prefix):
                self._remember(ids, new + known[len(old):])

    def _walk_for(self, ids: tuple[int, int]) -> tuple[str, os.stat_result] | None:
        # After a restart (or a change made on disk behind our back) the index has no path for a handle:
        # search the export breadth-first, remembering everything seen so later lookups are cheap.
        queue = [str(self.root)]
        while queue:
            directory = queue.pop(0)
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != self.root_ids[0]:
                    continue  # another filesystem mounted inside the export: not served
                key = (st.st_dev, st.st_ino)
                if key not in self._paths or key == ids:
                    self._remember(key, entry.path)
                if key == ids:
                    return entry.path, st
                if entry.is_dir(follow_symlinks=False):
                    queue.append(entry.path)
        return None


def _canonical_parent(path: str, root: str) -> bool:
    if path == root:
        return True
    parent = os.path.dirname(path)
    return os.path.realpath(parent) == parent


def _lstat_ids(path: str, ids: tuple[int, int]) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if (st.st_dev, st.st_ino) == ids else None
