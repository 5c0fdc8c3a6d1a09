"""``meshlab nfs-server``: what the NFS server pod runs — a readiness line, mounts logged, clear failures."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshlab.errors import StorageError
from meshlab.storage.nfsd.commands import choose_backend
from meshlab.storage.nfsd.ganesha import ganesha_unavailable
from meshlab.storage.nfsd.running import READY_RE, start_nfs_server


def meshlab_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("meshlab")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from meshlab.cli import main; "
                                                                    "sys.exit(main())"]


@pytest.mark.parametrize(("requested", "expect"), [
    ("python", "python"), ("ganesha", "ganesha"),
    ("auto", "ganesha" if ganesha_unavailable() is None else "python"),
], ids=["python", "ganesha", "auto"])
def test_backend_choice(requested: str, expect: str) -> None:
    assert choose_backend(requested) == expect


@pytest.mark.skipif(shutil.which("nfs-ls") is None, reason="libnfs-utils not installed")
def test_nfs_server_command_prints_ready_and_logs_mounts(tmp_path: Path) -> None:
    export = tmp_path / "export"
    proc = subprocess.Popen([*meshlab_cmd(), "nfs-server", "--export", str(export), "--host", "127.0.0.1",
                             "--port", "0", "--backend", "python"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        match = READY_RE.search(line)
        assert match, line
        port = int(match.group(3))
        (export / "hello").write_text("hi")
        url = f"nfs://127.0.0.1/export?version=3&nfsport={port}&mountport={port}"
        listing = subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=20, check=True).stdout
        assert "hello" in listing
        logged = proc.stdout.readline()
        assert logged.startswith("nfs-server: mount /export by "), logged
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "nfs-server: stopped" in out


def test_ganesha_backend_without_ganesha_says_why(tmp_path: Path) -> None:
    if ganesha_unavailable() is None:
        pytest.skip("ganesha can run here")
    result = subprocess.run([*meshlab_cmd(), "nfs-server", "--export", str(tmp_path / "e"), "--port", "0",
                             "--backend", "ganesha"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "ganesha" in result.stderr


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StorageError, match=f"cannot listen on 127.0.0.1:{port}"):
            with start_nfs_server(tmp_path / "export", port=port):
                pass


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unknown NFS server backend 'kernel'"):
        with start_nfs_server(tmp_path / "export", backend="kernel"):
            pass
