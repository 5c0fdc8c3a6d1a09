"""Per-volume operation locks: a second call for a volume already in flight gets ABORTED, not a queue.

The CSI spec (spec.md, "Concurrency") lets a plugin refuse an operation while another is pending for
the same volume with ``10 ABORTED``; the CO backs off and retries. kubernetes-csi drivers keep a set of
in-flight ids (``VolumeLocks.TryAcquire``); this is the same idea as a context manager.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from meshlab.errors import CsiError

__all__ = ["VolumeLocks"]


class VolumeLocks:
    """The set of volume keys (names or ids) with an operation in progress."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Run the block as the only operation on ``key``; ABORTED if another one holds it."""
        with self._guard:
            if key in self._busy:
                raise CsiError("ABORTED", f"an operation on volume {key!r} is already in progress; retry later")
            self._busy.add(key)
        try:
            yield
        finally:
            with self._guard:
                self._busy.discard(key)

    def busy(self) -> frozenset[str]:
        with self._guard:
            return frozenset(self._busy)
