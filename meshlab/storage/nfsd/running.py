"""Start an NFS server for tests and benchmarks: ``with start_nfs_server(dir) as server: server.location``.

Both backends run in a child process, as the pod would run them: the Python server
(``python -m meshlab.storage.nfsd``, NFSv3 + MOUNT on one TCP port, ``export`` ``/export``) or NFS-Ganesha
(NFSv4, pseudo path ``/export``; root only). The child process matters: NFS client libraries such as
nfs-rs may hold the GIL during a call, which would deadlock a server running in the caller's interpreter.
With Ganesha, nfs-rs cannot list the export root itself: keep volumes under a subdirectory (``volumes/``).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from meshlab.errors import StorageError
from meshlab.storage.nfsd.ganesha import PSEUDO_PATH, GaneshaConfig, GaneshaServer

EXPORT_PATH = PSEUDO_PATH
"""The export name both backends use (MOUNT path for v3, pseudo path for v4)."""

READY_RE = re.compile(r"nfs-server ready: backend=(\S+) listen=(\S+):(\d+) ")


def default_state_dir(export_dir: Path) -> Path:
    """Server state (handle secret, Ganesha config and log) lives beside the export, never inside it."""
    return export_dir.parent / f".{export_dir.name}.nfsd"


@dataclass
class RunningNfsServer:
    """A running server: where to reach it (``location``) and what it serves (``export_dir``)."""

    backend: str
    host: str
    port: int
    export_dir: Path
    state_dir: Path
    version: int
    export: str = EXPORT_PATH
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)
    _ganesha: GaneshaServer | None = field(default=None, repr=False)

    @property
    def location(self) -> Any:
        """A ``meshlab.mounting.nfsclient.NfsLocation`` for this server."""
        from meshlab.mounting.nfsclient import NfsLocation

        return NfsLocation(server=self.host, export=self.export, port=self.port, version=self.version)

    @property
    def url(self) -> str:
        """The libnfs URL (``nfs-ls``, ``nfs-cp``): ports go in the query string."""
        if self.version == 3:
            return f"nfs://{self.host}{self.export}?version=3&nfsport={self.port}&mountport={self.port}"
        return f"nfs://{self.host}{self.export}?version=4&nfsport={self.port}"

    def start(self, *, timeout: float = 15.0) -> None:
        if self.backend == "ganesha":
            self._ganesha = GaneshaServer(GaneshaConfig(self.export_dir, self.state_dir, self.host, self.port))
            self._ganesha.start(timeout=timeout)
            return
        self._process, self.port = _spawn_python(self.export_dir, self.state_dir, self.host, self.port, timeout)

    def stop(self) -> None:
        if self._ganesha is not None:
            self._ganesha.stop()
            self._ganesha = None
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> None:
        """Stop and start again on the same address and port (data and file handles survive)."""
        self.stop()
        self.start()


@contextmanager
def start_nfs_server(export_dir: Path | str, backend: str = "python", *, host: str = "127.0.0.1",
                     port: int = 0, state_dir: Path | None = None,
                     timeout: float = 15.0) -> Iterator[RunningNfsServer]:
    """Serve ``export_dir`` (created if missing) over NFS until the block ends.

    ``backend``: ``python`` (NFSv3, any user) or ``ganesha`` (NFSv4, root and ``ganesha.nfsd``).
    ``port`` 0 picks a free port. Raises ``StorageError`` with the reason when the server cannot start.
    """
    if backend not in ("python", "ganesha"):
        raise StorageError(f"unknown NFS server backend {backend!r} (python or ganesha)")
    export = Path(export_dir).resolve()
    export.mkdir(parents=True, exist_ok=True)
    state = (state_dir or default_state_dir(export)).resolve()
    state.mkdir(parents=True, exist_ok=True)
    if backend == "ganesha" and port == 0:
        port = free_port(host)
    server = RunningNfsServer(backend=backend, host=host, port=port, export_dir=export, state_dir=state,
                              version=4 if backend == "ganesha" else 3)
    server.start(timeout=timeout)
    try:
        yield server
    finally:
        server.stop()


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (for servers that cannot be asked to pick one)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _spawn_python(export_dir: Path, state_dir: Path, host: str, port: int,
                  timeout: float) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "meshlab.storage.nfsd", "--export", str(export_dir), "--state-dir",
           str(state_dir), "--host", host, "--port", str(port), "--backend", "python"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_path = state_dir / "nfs-server.log"
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                                env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            proc.stdout.close()
            raise StorageError(f"NFS server exited with {proc.returncode} before it was ready: "
                               f"{' '.join(seen)} {_tail(log_path)}".strip())
        seen.append(line.strip())
        match = READY_RE.search(line)
        if match:
            # Keep reading its log lines (mounts, errors) so a full pipe never blocks the server.
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc, int(match.group(3))
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise StorageError(f"NFS server not ready within {timeout} s: {' '.join(seen)} {_tail(log_path)}".strip())


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _drain(stream: IO[str]) -> None:
    try:
        for _line in stream:
            pass
    except (OSError, ValueError):  # closed by stop()
        pass
