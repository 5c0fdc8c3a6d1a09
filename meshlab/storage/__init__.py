"""Storage: an NFS server, a FlexVolume driver and a CSI driver (deployed as pods; never imports meshlab.cluster)."""
