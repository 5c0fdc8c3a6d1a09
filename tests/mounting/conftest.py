"""Fixtures for mounting tests: the storage tests' real NFS server (``nfs_server``, python and ganesha)."""

from __future__ import annotations

from tests.storage.conftest import nfs_server

__all__ = ["nfs_server"]
