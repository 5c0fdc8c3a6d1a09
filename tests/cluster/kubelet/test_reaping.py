"""The two layers below PDEATHSIG: the reaper process and the records of a previous run."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlab.cluster.kubelet.reaping import Guard, start_ticks


@pytest.fixture()
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A process group of two: a shell and the sleep it started in the background."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], process_group=0)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def gone(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_when_the_kubelets_end_of_the_pipe_closes_the_reaper_kills_every_tracked_group(
        tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    guard = Guard(tmp_path / "processes")
    guard.start()
    guard.track(group.pid, pod="p", container="c")
    reaper = guard._reaper
    assert reaper is not None and reaper.stdin is not None
    reaper.stdin.close()  # what the kernel does when the supervisor dies
    assert gone(group)
    assert reaper.wait(5) == 0


def test_an_untracked_group_is_left_alone(tmp_path: Path, group: subprocess.Popen[bytes]) -> None:
    guard = Guard(tmp_path / "processes")
    guard.start()
    guard.track(group.pid)
    guard.untrack(group.pid)
    guard.close()
    assert group.poll() is None


@pytest.mark.parametrize(("shift", "killed"), [(0, True), (1_000_000, False)],
                         ids=["same process", "pid reused by a newer process"])
def test_records_of_a_previous_run_are_killed_unless_the_pid_was_reused(
        tmp_path: Path, group: subprocess.Popen[bytes], shift: int, killed: bool) -> None:
    directory = tmp_path / "processes"
    directory.mkdir()
    time.sleep(0.1)  # let the shell start its sleep
    started = start_ticks(group.pid)
    assert started is not None
    # A record claiming a start time later than the real one stands for a group leader that died
    # and whose pid now belongs to an unrelated, older-looking process: it must not be hit.
    (directory / str(group.pid)).write_text(json.dumps({"pid": group.pid, "pgid": group.pid,
                                                         "start": started + shift}))
    count = Guard(directory).kill_leftovers()
    assert (count >= 2) is killed
    assert gone(group, 2.0) is killed
    assert not list(directory.iterdir())
