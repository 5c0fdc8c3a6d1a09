"""The hook through which the apiserver reaches running containers: logs and exec.

A real apiserver proxies ``pods/log`` and ``pods/exec`` to the kubelet of the pod's node. Here the kubelet
registers a :class:`PodIO` with the apiserver; until one is registered, those requests get the same kind of
answer a real cluster gives for a pod that is not running on any node. :class:`LocalProcess` adapts an
``asyncio`` subprocess to :class:`ExecProcess` so that a kubelet running containers as processes can hand
one straight to the exec stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meshlab.errors import BadRequest


class ExecProcess(Protocol):
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    async def write_stdin(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    def resize(self, width: int, height: int) -> None: ...
    async def wait(self) -> int: ...
    def kill(self) -> None: ...


@dataclass(frozen=True)
class LogOptions:
    container: str
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    since_seconds: int | None = None
    limit_bytes: int | None = None


class PodIO(Protocol):
    def logs(self, pod: dict[str, Any], options: LogOptions) -> AsyncIterator[bytes]: ...
    async def exec(
        self, pod: dict[str, Any], container: str, command: Sequence[str], *, tty: bool, stdin: bool
    ) -> ExecProcess: ...


def _not_running(pod: dict[str, Any]) -> BadRequest:
    name = (pod.get("metadata") or {}).get("name", "")
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        return BadRequest(f'pod {name} does not have a host assigned (no kubelet is running in this lab yet)')
    return BadRequest(f'pod {name} is assigned to node "{node}", but no kubelet is serving that node')


class NoPodIO:
    """What the apiserver uses before a kubelet registers: every request explains why it cannot work."""

    def logs(self, pod: dict[str, Any], options: LogOptions) -> AsyncIterator[bytes]:
        raise _not_running(pod)

    async def exec(
        self, pod: dict[str, Any], container: str, command: Sequence[str], *, tty: bool, stdin: bool
    ) -> ExecProcess:
        raise _not_running(pod)


class LocalProcess:
    """An :class:`ExecProcess` backed by a local subprocess (the process kubelet's containers)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @classmethod
    async def start(
        cls, command: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
        stdin: bool = True,
    ) -> LocalProcess:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        return cls(proc)

    async def write_stdin(self, data: bytes) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(data)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        return None  # no terminal: the embedded lab's exec has no TTY

    async def wait(self) -> int:
        return await self._proc.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
