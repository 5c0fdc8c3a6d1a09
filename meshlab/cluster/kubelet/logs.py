"""Reading container logs back as ``kubectl logs`` asks for them (``pkg/kubelet/kuberuntime/logs``).

Logs live where the kubelet keeps them, ``logs/pods/<namespace>_<name>_<uid>/<container>/<n>.log``, one
file per container instance (``n`` is the restart count it ran under), in the CRI format written by
:mod:`~meshlab.cluster.kubelet.processes`. The newest file is the current (or last) instance; the one
before it is what ``--previous`` shows. Options apply in the kubelet's order: ``sinceSeconds`` drops older
lines, ``tailLines`` keeps the last lines, ``timestamps`` prefixes each line with its RFC 3339 time, and
``limitBytes`` cuts the output; ``follow`` keeps reading until the instance has ended.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from meshlab.cluster.podio import LogOptions


@dataclass(frozen=True)
class LogLine:
    timestamp: str
    stream: str
    partial: bool
    content: bytes

    @property
    def time(self) -> float:
        return parse_timestamp(self.timestamp)

    def render(self, timestamps: bool) -> bytes:
        text = self.content if self.partial else self.content + b"\n"
        return (self.timestamp.encode() + b" " + text) if timestamps else text


def parse_timestamp(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time with up to nanoseconds (``...T12:00:00.123456789Z``)."""
    main, _, frac = stamp.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    return seconds + (float("0." + frac) if frac.isdigit() else 0.0)


def parse_line(raw: bytes) -> LogLine | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return LogLine(parts[0].decode(errors="replace"), parts[1].decode(errors="replace"), parts[2] == b"P", content)


def instance_logs(directory: Path) -> list[Path]:
    """The log files of a container's instances, oldest first."""
    files = [p for p in directory.glob("*.log") if p.stem.isdigit()] if directory.is_dir() else []
    return sorted(files, key=lambda p: int(p.stem))


def select(lines: list[LogLine], options: LogOptions, now: float) -> list[LogLine]:
    if options.since_seconds is not None:
        cutoff = now - options.since_seconds
        lines = [line for line in lines if line.time >= cutoff]
    if options.tail_lines is not None:
        lines = lines[-options.tail_lines:] if options.tail_lines > 0 else []
    return lines


class _Limit:
    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def cut(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[: self.left]
        self.left -= len(data)
        return data

    @property
    def reached(self) -> bool:
        return self.left is not None and self.left <= 0


async def read(path: Path, options: LogOptions, *, still_writing: Callable[[], asyncio.Event | None],
               now: float | None = None) -> AsyncIterator[bytes]:
    """Yield the log of one instance. ``still_writing`` returns an event set on each new write, or None
    once nothing more will be written (the instance ended and its output is in the file)."""
    limit = _Limit(options.limit_bytes)
    with path.open("rb") as fh:
        lines = [line for raw in fh.readlines() if raw.endswith(b"\n") and (line := parse_line(raw))]
        chunk = b"".join(line.render(options.timestamps) for line in select(lines, options, now or time.time()))
        chunk = limit.cut(chunk)
        if chunk:
            yield chunk
        if not options.follow:
            return
        position = fh.tell()
        pending = b""
        while not limit.reached:
            changed = still_writing()
            fh.seek(position)
            data = fh.read()
            position = fh.tell()
            if data:
                pending += data
                *complete, pending = pending.split(b"\n")
                out = b"".join(line.render(options.timestamps) for raw in complete if (line := parse_line(raw)))
                out = limit.cut(out)
                if out:
                    yield out
                continue
            if changed is None:
                return
            try:
                await asyncio.wait_for(changed.wait(), 1.0)
            except TimeoutError:
                pass
