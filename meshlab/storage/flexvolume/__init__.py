"""The FlexVolume driver ``meshlab~nfs/nfs``: the exec call protocol (init, mount, unmount; JSON out)."""
