"""The NFS protocol as data, without I/O: XDR (:mod:`.xdr`), ONC RPC (:mod:`.rpc`), NFSv3 (:mod:`.nfs3`,
:mod:`.nfs3_args`) and MOUNT v3 / portmapper (:mod:`.mount3`). Servers and clients supply the sockets."""
