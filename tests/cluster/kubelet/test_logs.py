"""Container logs: the CRI file format, and reading it back as ``kubectl logs`` asks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshlab.cluster.kubelet import logs
from meshlab.cluster.kubelet.processes import LogWriter, cri_timestamp
from meshlab.cluster.podio import LogOptions

LINES = [
    b"2025-01-01T10:00:00.000000001Z stdout F first\n",
    b"2025-01-01T10:00:30.500000000Z stderr F second\n",
    b"2025-01-01T10:01:00.000000000Z stdout P par\n",
    b"2025-01-01T10:01:00.100000000Z stdout F tial\n",
    b"2025-01-01T10:02:00.000000000Z stdout F last\n",
]
NOW = logs.parse_timestamp("2025-01-01T10:02:10Z")


async def collect(path: Path, options: LogOptions) -> bytes:
    out = b""
    async for chunk in logs.read(path, options, still_writing=lambda: None, now=NOW):
        out += chunk
    return out


@pytest.mark.parametrize(("options", "expected"), [
    ({}, b"first\nsecond\npartial\nlast\n"),
    ({"tail_lines": 2}, b"tial\nlast\n"),
    ({"tail_lines": 0}, b""),
    ({"since_seconds": 75}, b"par" + b"tial\nlast\n"),
    ({"limit_bytes": 8}, b"first\nse"),
    ({"tail_lines": 1, "timestamps": True}, b"2025-01-01T10:02:00.000000000Z last\n"),
], ids=["all", "tail", "tail-0", "since", "limit", "timestamps"])
def test_reading_with_options(tmp_path: Path, options: dict[str, object], expected: bytes) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"".join(LINES))
    assert asyncio.run(collect(path, LogOptions(container="app", **options))) == expected  # type: ignore[arg-type]


def test_writer_splits_lines_per_stream_and_marks_a_partial_end(tmp_path: Path) -> None:
    async def write() -> None:
        writer = LogWriter(tmp_path / "0.log")
        writer.write("stdout", b"one\ntw")
        writer.write("stderr", b"oops\n")
        writer.write("stdout", b"o\nthree")
        writer.close()

    asyncio.run(write())
    parsed = [logs.parse_line(raw) for raw in (tmp_path / "0.log").read_bytes().splitlines()]
    assert [(p.stream, p.partial, p.content) for p in parsed if p] == [
        ("stdout", False, b"one"), ("stderr", False, b"oops"), ("stdout", False, b"two"), ("stdout", True, b"three")]


def test_follow_streams_until_the_writer_is_done(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        writer = LogWriter(tmp_path / "0.log")
        writer.write("stdout", b"early\n")
        done = False

        def still_writing() -> asyncio.Event | None:
            return None if done else writer.changed

        async def produce() -> None:
            nonlocal done
            await asyncio.sleep(0.05)
            writer.write("stdout", b"late\n")
            await asyncio.sleep(0.05)
            writer.close()
            done = True

        task = asyncio.create_task(produce())
        out = b""
        async for chunk in logs.read(tmp_path / "0.log", LogOptions(container="a", follow=True),
                                     still_writing=still_writing):
            out += chunk
        await task
        return out

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == b"early\nlate\n"


def test_timestamps_round_trip() -> None:
    stamp = cri_timestamp(1_700_000_000_123_456_789)
    assert stamp == "2023-11-14T22:13:20.123456789Z"
    assert logs.parse_timestamp(stamp) == pytest.approx(1_700_000_000.123456789)


def test_instances_are_ordered_by_restart_count(tmp_path: Path) -> None:
    for n in (10, 2, 9):
        (tmp_path / f"{n}.log").write_bytes(b"")
    assert [p.name for p in logs.instance_logs(tmp_path)] == ["2.log", "9.log", "10.log"]
