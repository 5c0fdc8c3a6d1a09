"""The NFS server pod (``meshlab nfs-server``): NFSv3 + MOUNT in Python, or NFS-Ganesha where root allows."""
