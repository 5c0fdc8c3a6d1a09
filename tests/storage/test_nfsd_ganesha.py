"""NFS-Ganesha as the server: generated configuration, log checks, and a real client against it (root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshlab.errors import StorageError
from meshlab.storage.nfsd.ganesha import GaneshaConfig, fatal_log_lines, ganesha_unavailable
from meshlab.storage.nfsd.running import start_nfs_server


@pytest.mark.parametrize(("needle"), [
    "Protocols = 4;", "Bind_addr = 127.3.0.7;", "NFS_Port = 12049;", "Enable_NLM = false;",
    'Path = "/srv/data";', 'Pseudo = "/export";', "FSAL { Name = VFS; }", "Enable_UDP = false;",
], ids=["v4-only", "bind-address", "port", "no-nlm", "export-path", "pseudo", "vfs", "tcp-only"])
def test_config_is_the_minimal_v4_config(needle: str) -> None:
    text = GaneshaConfig(Path("/srv/data"), Path("/var/state"), "127.3.0.7", 12049).render()
    assert needle in text


@pytest.mark.parametrize("export_dir", ['/srv/a"b', "/srv/a;b", "/srv/{x}"], ids=["quote", "semicolon", "brace"])
def test_config_refuses_unquotable_paths(export_dir: str) -> None:
    with pytest.raises(StorageError, match="cannot quote"):
        GaneshaConfig(Path(export_dir), Path("/var/state")).render()


@pytest.mark.parametrize(("log", "fatal"), [
    ("26/11 ganesha.nfsd-1[main] config_errs_to_log :CONFIG :CRIT :Config File (x): Unknown parameter (Pth)", 1),
    ("26/11 ganesha.nfsd-1[main] gsh_dbus_pkginit :DBUS :CRIT :dbus_bus_get failed", 0),
    ("26/11 ganesha.nfsd-1[main] nfs_Init_svc :DISP :FATAL :Cannot bind", 1),
    ("26/11 ganesha.nfsd-1[main] nfs_start :NFS STARTUP :EVENT :NFS SERVER INITIALIZED", 0),
], ids=["config-crit", "dbus-crit-harmless", "fatal", "started"])
def test_fatal_log_lines(log: str, fatal: int) -> None:
    assert len(fatal_log_lines(log)) == fatal


@pytest.mark.root
def test_ganesha_serves_the_directory_to_nfs_cat(tmp_path: Path) -> None:
    reason = ganesha_unavailable()
    if reason is not None:
        pytest.skip(reason)
    export = tmp_path / "export"
    (export / "volumes").mkdir(parents=True)
    (export / "volumes" / "hello.txt").write_bytes(b"hello over v4\n")
    with start_nfs_server(export, backend="ganesha") as server:
        url = server.url.replace("/export?", "/export/volumes/hello.txt?")
        out = subprocess.run(["nfs-cat", url], capture_output=True, timeout=20, check=True)
    assert out.stdout == b"hello over v4\n"
