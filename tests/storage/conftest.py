"""Fixtures for storage tests: a real NFS server serving a real directory.

``nfs_server`` runs once per test module and backend: ``python`` (meshlab's NFSv3 + MOUNT server, one TCP
port, any user) and ``ganesha`` (NFS-Ganesha NFSv4, skipped unless root and ``ganesha.nfsd`` exist). It
yields a :class:`meshlab.storage.nfsd.running.RunningNfsServer`: ``.location`` (an ``NfsLocation``),
``.export_dir`` (the directory on disk behind the export), ``.url`` (for ``nfs-ls``), ``.restart()``.
Both export ``/export``. With Ganesha (NFSv4) nfs-rs cannot list the export root itself, so tests should
keep their volumes in a subdirectory (e.g. ``volumes/``) and never assert on the root's listing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshlab.storage.nfsd.ganesha import ganesha_unavailable
from meshlab.storage.nfsd.running import RunningNfsServer, start_nfs_server


@pytest.fixture(scope="module", params=["python", pytest.param("ganesha", marks=pytest.mark.root)])
def nfs_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNfsServer]:
    backend: str = request.param
    if backend == "ganesha":
        reason = ganesha_unavailable()
        if reason is not None:
            pytest.skip(reason)
    export_dir = tmp_path_factory.mktemp(f"nfs-{backend}") / "export"
    with start_nfs_server(export_dir, backend=backend) as server:
        yield server
