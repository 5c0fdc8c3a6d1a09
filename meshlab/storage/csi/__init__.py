"""The CSI driver ``nfs.csi.meshlab.io``: Identity, Controller and Node services over unix sockets."""
