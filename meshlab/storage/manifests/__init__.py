"""Manifests shipped with meshlab's storage: the same YAML a real cluster and the embedded lab get.

``nfs-server.yaml`` (namespace ``meshlab-storage``, the NFS server Deployment and Service), ``csi-nfs.yaml``
(CSIDriver, controller Deployment with the driver and ``meshlab csi-provisioner``, node DaemonSet with the
driver and ``meshlab csi-registrar``, StorageClass ``meshlab-nfs``) and ``csi-nfs-rbac.yaml`` (what the
sidecars may do; the embedded lab serves no RBAC) and ``flexvolume.yaml`` (a DaemonSet installing the FlexVolume
driver ``meshlab~nfs/nfs`` on every node). Apply them with ``meshlab storage install``.
"""
