"""Tests of the sans-I/O NFS protocol package (meshlab/nfs)."""
