"""One RPC record in, one reply out: the three programs meshlab's NFS server answers on its single port.

``Dispatcher.handle(record, client)`` decodes the ONC RPC call (RFC 5531), checks the credential (AUTH_NONE
or AUTH_SYS; anything else is AUTH_ERROR/TOOWEAK), and routes by program: NFS v3 (100003) to
:class:`~meshlab.storage.nfsd.filesystem.Filesystem`, MOUNT v3 (100005) to the export table here, and the
portmapper v2 (100000) GETPORT to "this same port" so a client that insists on asking still finds us.
Unknown programs get PROG_UNAVAIL, wrong versions PROG_MISMATCH, unknown procedures PROC_UNAVAIL,
undecodable arguments GARBAGE_ARGS; a record that is not even an RPC call gets ``None`` (close the
connection). A bug inside a procedure becomes SYSTEM_ERR for that call only — the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from meshlab.nfs import mount3, nfs3, rpc
from meshlab.nfs.mount3 import ExportEntry, MountEntry, MountProc, MountStatus, PortmapProc
from meshlab.nfs.nfs3 import Proc
from meshlab.nfs.nfs3_args import decode_args
from meshlab.nfs.rpc import AcceptStat, AuthFlavor, AuthStat, RejectStat, RpcCall
from meshlab.nfs.xdr import Packer, XdrError
from meshlab.storage.nfsd.filesystem import Caller, Filesystem

log = logging.getLogger(__name__)


class Dispatcher:
    """Routes RPC calls for one export named ``export_path`` (e.g. ``/export``) served on ``port``."""

    def __init__(self, filesystem: Filesystem, export_path: str, port: int,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.fs = filesystem
        self.export_path = "/" + export_path.strip("/")
        self.port = port
        self.on_event = on_event or (lambda message: None)
        self.mounts: set[MountEntry] = set()

    def handle(self, record: bytes, client: str) -> bytes | None:
        try:
            call = rpc.decode_call(record)
        except rpc.NotACall as err:
            if err.rpc_mismatch:
                return rpc.denied_reply(err.xid, RejectStat.RPC_MISMATCH)
            return None  # a reply or other message type sent to a server: not ours to answer
        except XdrError:
            return None  # not even an RPC header: the stream cannot be trusted any more
        if call.cred.flavor not in (AuthFlavor.AUTH_NONE, AuthFlavor.AUTH_SYS):
            return rpc.denied_reply(call.xid, RejectStat.AUTH_ERROR, auth_stat=AuthStat.AUTH_TOOWEAK)
        try:
            creds = call.auth_sys()
        except XdrError:
            return rpc.denied_reply(call.xid, RejectStat.AUTH_ERROR, auth_stat=AuthStat.AUTH_BADCRED)
        caller = Caller(creds.uid, creds.gid, creds.gids) if creds is not None else Caller()
        host = creds.machinename if creds is not None and creds.machinename else client
        try:
            if call.prog == nfs3.NFS_PROGRAM:
                return self._nfs(call, caller)
            if call.prog == mount3.MOUNT_PROGRAM:
                return self._mount(call, host)
            if call.prog == mount3.PORTMAP_PROGRAM:
                return self._portmap(call)
            return rpc.accepted_reply(call.xid, AcceptStat.PROG_UNAVAIL)
        except XdrError:
            return rpc.accepted_reply(call.xid, AcceptStat.GARBAGE_ARGS)
        except Exception:  # a bug must cost one call, not the server
            log.exception("nfs-server: %s failed (program %d proc %d)", client, call.prog, call.proc)
            return rpc.accepted_reply(call.xid, AcceptStat.SYSTEM_ERR)

    def _nfs(self, call: RpcCall, caller: Caller) -> bytes:
        if call.vers != nfs3.NFS_V3:
            return rpc.accepted_reply(call.xid, AcceptStat.PROG_MISMATCH, mismatch=(3, 3))
        if call.proc not in Proc._value2member_map_:
            return rpc.accepted_reply(call.xid, AcceptStat.PROC_UNAVAIL)
        proc = Proc(call.proc)
        if proc == Proc.NULL:
            return rpc.accepted_reply(call.xid)
        if proc == Proc.MKNOD:
            # Device nodes and FIFOs on a shared export are not something meshlab's lessons need.
            return rpc.accepted_reply(call.xid, results=nfs3.encode_failure(proc, nfs3.Status.NFS3ERR_NOTSUPP))
        args = decode_args(proc, call.args)
        return rpc.accepted_reply(call.xid, results=self.fs.call(proc, args, caller))

    def _mount(self, call: RpcCall, host: str) -> bytes:
        if call.vers != mount3.MOUNT_V3:
            return rpc.accepted_reply(call.xid, AcceptStat.PROG_MISMATCH, mismatch=(3, 3))
        if call.proc not in MountProc._value2member_map_:
            return rpc.accepted_reply(call.xid, AcceptStat.PROC_UNAVAIL)
        proc = MountProc(call.proc)
        if proc in (MountProc.NULL, MountProc.DUMP, MountProc.UMNTALL, MountProc.EXPORT) and call.args:
            raise XdrError("void procedure with arguments")
        if proc == MountProc.NULL:
            return rpc.accepted_reply(call.xid)
        if proc == MountProc.MNT:
            path = mount3.decode_dirpath(call.args)
            status, fh = self._mnt(path)
            if status == MountStatus.MNT3_OK:
                self.mounts.add(MountEntry(host, path))
                self.on_event(f"mount {path} by {host}")
            else:
                self.on_event(f"mount {path} by {host} refused: {status.name}")
            flavors = (int(AuthFlavor.AUTH_SYS), int(AuthFlavor.AUTH_NONE))
            return rpc.accepted_reply(call.xid, results=mount3.encode_mnt_result(status, fh, flavors))
        if proc == MountProc.DUMP:
            entries = sorted(self.mounts, key=lambda e: (e.hostname, e.directory))
            return rpc.accepted_reply(call.xid, results=mount3.encode_mountlist(entries))
        if proc == MountProc.UMNT:
            path = mount3.decode_dirpath(call.args)
            self.mounts.discard(MountEntry(host, path))
            self.on_event(f"unmount {path} by {host}")
            return rpc.accepted_reply(call.xid)
        if proc == MountProc.UMNTALL:
            self.mounts = {m for m in self.mounts if m.hostname != host}
            self.on_event(f"unmount all by {host}")
            return rpc.accepted_reply(call.xid)
        return rpc.accepted_reply(call.xid, results=mount3.encode_exports([ExportEntry(self.export_path)]))

    def _mnt(self, path: str) -> tuple[MountStatus, bytes]:
        normal = "/" + path.strip("/")
        if normal == self.export_path:
            return MountStatus.MNT3_OK, self.fs.root_handle()
        prefix = self.export_path.rstrip("/") + "/"
        if not normal.startswith(prefix):
            return MountStatus.MNT3ERR_NOENT, b""
        # A subdirectory of the export may be mounted directly (server:/export/volumes/pvc-1), as knfsd allows.
        fh = self.fs.handle_of_path(normal[len(prefix):])
        return (MountStatus.MNT3_OK, fh) if fh is not None else (MountStatus.MNT3ERR_NOENT, b"")

    def _portmap(self, call: RpcCall) -> bytes:
        if call.vers != mount3.PORTMAP_V2:
            return rpc.accepted_reply(call.xid, AcceptStat.PROG_MISMATCH, mismatch=(2, 2))
        if call.proc == PortmapProc.NULL:
            return rpc.accepted_reply(call.xid)
        if call.proc != PortmapProc.GETPORT:
            return rpc.accepted_reply(call.xid, AcceptStat.PROC_UNAVAIL)
        want = mount3.decode_mapping(call.args)
        ours = {(nfs3.NFS_PROGRAM, nfs3.NFS_V3), (mount3.MOUNT_PROGRAM, mount3.MOUNT_V3)}
        port = self.port if (want.prog, want.vers) in ours and want.prot == mount3.IPPROTO_TCP else 0
        p = Packer()
        p.uint(port)
        return rpc.accepted_reply(call.xid, results=bytes(p))

