"""Pod addresses: one loopback address per pod, like a CNI plugin's host-local IPAM on a pod network.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a process can listen on 127.10.0.7 without
any setup and without clashing with another pod's 127.10.0.8 on the same port. Every lab on the machine
needs a network of its own, so a kubelet first *claims* a /16 (``127.N.0.0/16``, N from 10 to 254) by
holding an ``flock`` on ``<tmp>/meshlab-podnet/127.N.lock`` — the kernel releases it when the process ends,
even by SIGKILL — preferring the network it had last time, so a restarted lab gives its pods their old
addresses back. Within the network, addresses avoid ``.0`` and ``.255`` (as a /24 would), are handed out
round-robin after the last one given (a freed address is not reused soon, as host-local does), are never
given twice while held, and are kept in a JSON file. Besides its pod IP (the one ``status.podIP`` reports),
a pod may take a second, private address from the same pool — its *pod-localhost*: on a real cluster the
containers of a pod share a loopback interface of their own (``127.0.0.1`` is the pod's), while here every
pod shares the node's, so the kubelet hands each pod an address that only its own containers are told
about. It is allocated, released, kept and renumbered together with the pod IP, and never reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import tempfile
from pathlib import Path

from meshlab.errors import LabError

FIRST_NETWORK, LAST_NETWORK = 10, 254  # 127.0/16 and 127.1-9 are left to the host


def lock_directory() -> Path:
    return Path(os.environ.get("MESHLAB_PODNET_LOCKS") or Path(tempfile.gettempdir()) / "meshlab-podnet")


class NetworkClaim:
    """A /16 of 127.0.0.0/8 held by this process (see the module docstring)."""

    def __init__(self, octet: int, fd: int) -> None:
        self.octet = octet
        self._fd = fd

    @property
    def first(self) -> str:
        return f"127.{self.octet}.0.1"

    @property
    def last(self) -> str:
        return f"127.{self.octet}.255.254"

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the flock
            self._fd = -1

    @classmethod
    def take(cls, preferred: int | None = None, directory: Path | None = None) -> NetworkClaim:
        directory = directory or lock_directory()
        directory.mkdir(mode=0o1777, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o1777)  # shared by every user's labs, like /tmp itself
        candidates = list(range(FIRST_NETWORK, LAST_NETWORK + 1))
        if preferred in candidates:
            candidates.remove(preferred)
            candidates.insert(0, preferred)
        for octet in candidates:
            path = directory / f"127.{octet}.lock"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return cls(octet, fd)
        raise LabError(f"every pod network 127.{FIRST_NETWORK}-{LAST_NETWORK}.0.0/16 is held by another lab "
                       f"(locks in {directory})")


class PodAddresses:
    def __init__(self, path: Path, first: str | None = None, last: str | None = None) -> None:
        self.path = path
        self._by_uid: dict[str, str] = {}
        self._localhost_by_uid: dict[str, str] = {}  # each pod's private "loopback" (never reported)
        self._claim: NetworkClaim | None = None
        self._network: int | None = None
        self._cursor = 0
        self._save_pending = False
        try:
            data = json.loads(path.read_text())
            self._by_uid = {str(k): str(v) for k, v in (data.get("pods") or {}).items()}
            # absent in files written before pod-localhosts existed: those pods simply get one on next start
            self._localhost_by_uid = {str(k): str(v) for k, v in (data.get("localhost") or {}).items()}
            self._network = int(data["network"]) if data.get("network") is not None else None
            self._cursor = int(ipaddress.IPv4Address(data["last"])) if data.get("last") else 0
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass
        self._first = self._last = 0
        if first and last:  # a fixed range (tests); otherwise :meth:`claim` picks one
            self._set_range(first, last)

    def _set_range(self, first: str, last: str) -> None:
        self._first = int(ipaddress.IPv4Address(first))
        self._last = int(ipaddress.IPv4Address(last))
        if not self._first <= self._cursor <= self._last:
            self._cursor = self._first - 1

    def claim(self, directory: Path | None = None) -> int:
        """Take this lab's pod network (the one it had, when free); returns its second octet."""
        self._claim = NetworkClaim.take(self._network, directory)
        if self._claim.octet != self._network:
            self._by_uid.clear()  # another lab holds our old network now: everything is renumbered
            self._localhost_by_uid.clear()
            self._network = self._claim.octet
        self._set_range(self._claim.first, self._claim.last)
        self._save()
        return self._claim.octet

    def release_network(self) -> None:
        self._save()
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    @property
    def network(self) -> str:
        return f"127.{self._network}.0.0/16" if self._network is not None else ""

    def get(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def localhost(self, uid: str) -> str | None:
        return self._localhost_by_uid.get(uid)

    def allocate(self, uid: str) -> str:
        """The pod's address (the same one on every call until it is released)."""
        return self._allocate(self._by_uid, uid)

    def allocate_localhost(self, uid: str) -> str:
        """The pod's private loopback stand-in, from the same pool (the same one until the pod is released)."""
        return self._allocate(self._localhost_by_uid, uid)

    def _allocate(self, table: dict[str, str], uid: str) -> str:
        if uid in table:
            return table[uid]
        if not self._first:
            raise LabError("the kubelet has not claimed a pod network yet")
        used = {*self._by_uid.values(), *self._localhost_by_uid.values()}
        size = self._last - self._first + 1
        for step in range(1, size + 1):
            candidate = self._first + (self._cursor - self._first + step) % size
            address = str(ipaddress.IPv4Address(candidate))
            if candidate & 0xFF in (0, 255) or address in used:
                continue
            table[uid] = address
            self._cursor = candidate
            self._save_soon()
            return address
        raise LabError(f"no free pod address left in {ipaddress.IPv4Address(self._first)}-"
                       f"{ipaddress.IPv4Address(self._last)}")

    def release(self, uid: str) -> None:
        """Free both of the pod's addresses."""
        had_ip = self._by_uid.pop(uid, None) is not None
        if self._localhost_by_uid.pop(uid, None) is not None or had_ip:
            self._save_soon()

    def _save_soon(self) -> None:
        """Coalesce the writes of a burst of pod starts (a lost write only renumbers a pod after a crash)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save()
            return
        if not self._save_pending:
            self._save_pending = True
            loop.call_later(0.2, self._save)

    def retain_only(self, uids: set[str]) -> None:
        """Free the addresses of pods that no longer exist."""
        gone = {*self._by_uid, *self._localhost_by_uid} - uids
        for uid in gone:
            self._by_uid.pop(uid, None)
            self._localhost_by_uid.pop(uid, None)
        if gone:
            self._save()

    def _save(self) -> None:
        self._save_pending = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        last = str(ipaddress.IPv4Address(self._cursor)) if self._cursor >= self._first > 0 else None
        tmp.write_text(json.dumps({"network": self._network, "last": last, "pods": self._by_uid,
                                  "localhost": self._localhost_by_uid}))
        os.replace(tmp, self.path)
