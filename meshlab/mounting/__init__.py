"""Mounting NFS on a node: the kernel on real nodes, a FUSE client in the embedded lab (below kubelet and drivers)."""
