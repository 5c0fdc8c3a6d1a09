"""NFS throughput: sequential write and read through nfs-rs against meshlab's NFS server, vs the local disk.

``run()`` returns ``(measure, result, target)`` rows for ``python -m benchmarks``. Writes through nfs-rs are
durable when ``write()`` returns (UNSTABLE WRITEs then COMMIT), so the local-disk baseline also ends with
``fsync``. Reads on both sides come from the server's page cache (dropping caches needs root and would
disturb other work): they measure the protocol path, not the disk. Ganesha (NFSv4.1) is measured too when
it can run here (root and ``ganesha.nfsd``).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nfs_rs

from meshlab.storage.nfsd.ganesha import ganesha_unavailable
from meshlab.storage.nfsd.running import RunningNfsServer, start_nfs_server

CHUNK = 1024 * 1024


def _mb_per_s(size: int, fn: Callable[[], object], runs: int) -> float:
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        rates.append(size / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates)


def _local(directory: Path, data: bytes, runs: int) -> tuple[float, float]:
    path = directory / "local.bin"

    def write() -> None:
        with open(path, "wb") as f:
            for start in range(0, len(data), CHUNK):
                f.write(data[start:start + CHUNK])
            f.flush()
            os.fsync(f.fileno())

    def read() -> None:
        with open(path, "rb") as f:
            while f.read(CHUNK):
                pass

    return _mb_per_s(len(data), write, runs), _mb_per_s(len(data), read, runs)


def _through_nfs(server: RunningNfsServer, data: bytes, runs: int) -> tuple[float, float]:
    (server.export_dir / "bench").mkdir(exist_ok=True)
    if server.version == 3:
        url = (f"nfs://{server.host}{server.export}?version=3&nfsport={server.port}&mountport={server.port}"
               "&noresvport=true")
    else:
        url = f"nfs://{server.host}{server.export}?version=4.1&nfsport={server.port}&noresvport=true"
    with nfs_rs.Client.connect(url) as client:

        # One write() call: nfs-rs splits it into max_write UNSTABLE WRITEs (8 in flight) and ends with one
        # COMMIT, like the local baseline's single fsync. Smaller calls would each wait for a COMMIT.
        def write() -> None:
            with client.open("bench/seq.bin", "wb") as f:
                f.write(data)

        def read() -> None:
            with client.open("bench/seq.bin", "rb") as f:
                f.read()

        rates = _mb_per_s(len(data), write, runs), _mb_per_s(len(data), read, runs)
    if (server.export_dir / "bench" / "seq.bin").read_bytes()[:CHUNK] != data[:CHUNK]:
        raise RuntimeError("data read back from the export differs from what was written")
    return rates


def _through_mount(server: RunningNfsServer, directory: Path, data: bytes, runs: int
                   ) -> tuple[str, float, float] | str:
    """Plain file I/O in a lab mount point (what a pod's process does): FUSE, or the kernel on a real node."""
    from meshlab.errors import MountError
    from meshlab.mounting.mount import mount_nfs, mount_support, unmount
    from meshlab.mounting.nfsclient import NfsClient

    why = mount_support()
    if why is not None:
        return why
    with NfsClient(server.location) as client:
        client.makedirs("bench/mounted")
    target = directory / f"mnt-{server.version}"
    try:
        how = mount_nfs(server.location, "bench/mounted", target)
        try:
            write, read = _local(target, data, runs)
        finally:
            unmount(target)
    except MountError as err:
        return str(err)
    return how, write, read


def run(*, size_mb: int = 64, runs: int = 3) -> list[tuple[str, str, str]]:
    """Sequential write/read MB/s: local disk, nfs-rs → Python NFSv3 server, and Ganesha when possible."""
    data = os.urandom(size_mb * 1024 * 1024)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-nfs-") as tmp:
        base = Path(tmp)
        local_w, local_r = _local(base, data, runs)
        rows += [(f"local disk sequential write {size_mb} MiB (+fsync)", f"{local_w:.0f} MB/s", "report"),
                 (f"local disk sequential read {size_mb} MiB (cached)", f"{local_r:.0f} MB/s", "report")]
        backends = ["python"] + (["ganesha"] if ganesha_unavailable() is None else [])
        for backend in backends:
            with start_nfs_server(base / backend, backend=backend) as server:
                write, read = _through_nfs(server, data, runs)
                mounted = _through_mount(server, base, data, runs)
            label = "Python NFSv3 server" if backend == "python" else "NFS-Ganesha v4.1"
            rows += [(f"nfs-rs -> {label}: sequential write {size_mb} MiB", f"{write:.0f} MB/s "
                      f"({write / local_w:.0%} of local)", "report"),
                     (f"nfs-rs -> {label}: sequential read {size_mb} MiB", f"{read:.0f} MB/s "
                      f"({read / local_r:.0%} of local)", "report")]
            if isinstance(mounted, str):
                rows.append((f"lab mount point -> {label}", "skipped", mounted[:60]))
            else:
                how, m_write, m_read = mounted
                rows += [(f"lab mount point ({how}) -> {label}: write {size_mb} MiB (+fsync)",
                          f"{m_write:.0f} MB/s ({m_write / local_w:.0%} of local)", "report"),
                         (f"lab mount point ({how}) -> {label}: read {size_mb} MiB",
                          f"{m_read:.0f} MB/s ({m_read / local_r:.0%} of local)", "report")]
    return rows


if __name__ == "__main__":
    for measure, result, target in run():
        print(f"{measure:<60} {result:<28} {target}")
