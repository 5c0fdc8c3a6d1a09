"""The CSI driver ``nfs.csi.meshlab.io``: Identity, Controller and Node services over unix sockets.

Layout (one module per concern, sans-I/O services behind a thin gRPC shell, as kubernetes-csi drivers are):
:mod:`.identity`, :mod:`.controller`, :mod:`.node` (the services: request message in, response or
:class:`meshlab.errors.CsiError` out), :mod:`.snapshots` (directory copies through NFS), :mod:`.volume_id`
and :mod:`.parameters` (what ids and StorageClass parameters mean), :mod:`.records` (capacity records on the
export), :mod:`.locks` (ABORTED on contention), :mod:`.serving` (gRPC on a unix socket, logging interceptor),
:mod:`.driver` (``meshlab csi-driver``), :mod:`.trace` (the call log, per volume or pod). The provisioner and
registrar sidecars live beside them (:mod:`.provisioner`, :mod:`.registrar`).
"""
