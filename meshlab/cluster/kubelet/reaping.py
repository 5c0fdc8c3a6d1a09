"""No orphans: container processes never outlive the lab supervisor, however it ends.

Three layers, because each covers what the one before cannot:

1. ``PR_SET_PDEATHSIG`` (in :mod:`~meshlab.cluster.kubelet.processes`): the kernel kills a container's
   main process when the supervisor dies, even by SIGKILL.
2. The reaper process (:mod:`~meshlab.cluster.kubelet.reaper`): it holds the list of container process
   groups and kills them all when its pipe from the supervisor closes — this reaches the children a
   container started, which PDEATHSIG does not.
3. Records on disk (``<state>/kubelet/processes/<pid>``: pid, process group, start time): on start, the
   kubelet kills whatever a previous run left behind (say, if the reaper itself was killed), checking
   start times so that a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("meshlab.kubelet")

_REAPER = Path(__file__).with_name("reaper.py")


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _process_groups() -> dict[int, list[tuple[int, int]]]:
    """pgid -> [(pid, start ticks)] for every process we can see."""
    groups: dict[int, list[tuple[int, int]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        fields = raw.rsplit(b")", 1)[-1].split()
        if len(fields) > 19:
            groups.setdefault(int(fields[2]), []).append((int(entry.name), int(fields[19])))
    return groups


class Guard:
    """Tracks container process groups on disk and with the reaper."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._reaper: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()

    def kill_leftovers(self) -> int:
        """Kill the processes of groups recorded by an earlier run; returns how many were killed."""
        records = []
        for path in self.directory.glob("*") if self.directory.is_dir() else []:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(path.read_text())
                records.append((int(data["pgid"]), int(data["start"])))
            path.unlink(missing_ok=True)
        if not records or not Path("/proc").is_dir():
            return 0
        groups = _process_groups()
        killed = 0
        for pgid, started in records:
            for pid, ticks in groups.get(pgid, []):
                if ticks >= started:  # started no earlier than the recorded group leader: one of ours
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
        if killed:
            log.info("killed %d container processes left over from a previous run", killed)
        return killed

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kill_leftovers()
        self._spawn_reaper()

    def _spawn_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_REAPER)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        )
        for pgid in self._groups:
            self._tell(f"+{pgid}")

    def _tell(self, line: str) -> None:
        reaper = self._reaper
        if reaper is None or reaper.stdin is None:
            return
        try:
            reaper.stdin.write(line.encode() + b"\n")
            reaper.stdin.flush()
        except (BrokenPipeError, ValueError):
            log.warning("the kubelet's reaper process is gone; starting a new one")
            with contextlib.suppress(OSError):
                reaper.wait(timeout=1)
            self._spawn_reaper()

    def track(self, pid: int, **info: str) -> None:
        """Record a new container process group (its leader's pid is the group id)."""
        self._groups.add(pid)
        record = {"pid": pid, "pgid": pid, "start": start_ticks(pid) or 0, **info}
        with contextlib.suppress(OSError):
            (self.directory / str(pid)).write_text(json.dumps(record))
        self._tell(f"+{pid}")

    def untrack(self, pid: int) -> None:
        self._groups.discard(pid)
        (self.directory / str(pid)).unlink(missing_ok=True)
        self._tell(f"-{pid}")

    def close(self) -> None:
        """Stop the reaper (it kills any group still tracked, which a clean stop has none of)."""
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        if reaper.stdin is not None:
            with contextlib.suppress(OSError):
                reaper.stdin.close()
        try:
            reaper.wait(timeout=2)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()
