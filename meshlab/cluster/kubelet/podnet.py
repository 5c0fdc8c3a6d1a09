"""Pod addresses: one loopback address per pod, like a CNI plugin's host-local IPAM on a pod network.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a process can listen on 127.10.0.7 without
any setup and without clashing with another pod's 127.10.0.8 on the same port. Addresses come from a
range (default 127.10.0.1 - 127.10.255.254, avoiding .0 and .255 as a /24 network would), are handed out
round-robin after the last one given (so a freed address is not reused soon, as host-local does), are never
given twice while held, and are kept in a JSON file so a restarted kubelet gives each pod its address back.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from meshlab.errors import LabError

DEFAULT_RANGE = ("127.10.0.1", "127.10.255.254")


class PodAddresses:
    def __init__(self, path: Path, first: str = DEFAULT_RANGE[0], last: str = DEFAULT_RANGE[1]) -> None:
        self.path = path
        self._first = int(ipaddress.IPv4Address(first))
        self._last = int(ipaddress.IPv4Address(last))
        self._by_uid: dict[str, str] = {}
        self._cursor = self._first - 1
        try:
            data = json.loads(path.read_text())
            self._by_uid = {str(k): str(v) for k, v in (data.get("pods") or {}).items()}
            self._cursor = int(ipaddress.IPv4Address(data.get("last") or first)) if data.get("last") else self._cursor
        except (OSError, ValueError, AttributeError):
            pass

    def get(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def allocate(self, uid: str) -> str:
        """The pod's address (the same one on every call until it is released)."""
        if uid in self._by_uid:
            return self._by_uid[uid]
        used = set(self._by_uid.values())
        size = self._last - self._first + 1
        for step in range(1, size + 1):
            candidate = self._first + (self._cursor - self._first + step) % size
            address = str(ipaddress.IPv4Address(candidate))
            if candidate & 0xFF in (0, 255) or address in used:
                continue
            self._by_uid[uid] = address
            self._cursor = candidate
            self._save()
            return address
        raise LabError(f"no free pod address left in {ipaddress.IPv4Address(self._first)}-"
                       f"{ipaddress.IPv4Address(self._last)}")

    def release(self, uid: str) -> None:
        if self._by_uid.pop(uid, None) is not None:
            self._save()

    def retain_only(self, uids: set[str]) -> None:
        """Free the addresses of pods that no longer exist."""
        gone = set(self._by_uid) - uids
        for uid in gone:
            del self._by_uid[uid]
        if gone:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last": str(ipaddress.IPv4Address(max(self._cursor, self._first))),
                                   "pods": self._by_uid}))
        os.replace(tmp, self.path)
