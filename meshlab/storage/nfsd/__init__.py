"""The NFS server pod (``meshlab nfs-server``): NFSv3 + MOUNT in Python, or NFS-Ganesha where root allows.

``start_nfs_server(export_dir, backend="python"|"ganesha", host=..., port=...)`` is the context manager
tests and benchmarks use (see :mod:`meshlab.storage.nfsd.running`).
"""

from __future__ import annotations

from meshlab.storage.nfsd.running import RunningNfsServer, start_nfs_server

__all__ = ["RunningNfsServer", "start_nfs_server"]
