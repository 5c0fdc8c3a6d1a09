"""Hostile and odd input on the Python NFS server's TCP port: exact RPC errors, or a closed connection —
never a crash, and other connections keep working."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlab.nfs import mount3, nfs3, rpc
from meshlab.nfs.nfs3_args import FhArgs, encode_args
from meshlab.nfs.rpc import AcceptStat, AuthStat, AuthSys, OpaqueAuth, RpcCall, RpcReply
from meshlab.nfs.xdr import Unpacker
from meshlab.storage.nfsd.running import RunningNfsServer, start_nfs_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNfsServer]:
    with start_nfs_server(tmp_path_factory.mktemp("wire") / "export") as running:
        yield running


def connect(server: RunningNfsServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=5)


def exchange(sock: socket.socket, message: bytes) -> RpcReply | None:
    """Send one record; the decoded reply, or None when the server closed the connection."""
    sock.sendall(rpc.frame_record(message))
    reader = rpc.RecordReader()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        records = reader.feed(data)
        if records:
            return rpc.decode_reply(records[0])


def call(server: RunningNfsServer, prog: int, vers: int, proc: int, args: bytes = b"",
         cred: OpaqueAuth = rpc.NULL_AUTH) -> RpcReply | None:
    with connect(server) as sock:
        return exchange(sock, rpc.encode_call(RpcCall(42, prog, vers, proc, cred, rpc.NULL_AUTH, args)))


@pytest.mark.parametrize(("prog", "vers", "proc", "args", "expect"), [
    (nfs3.NFS_PROGRAM, 3, 0, b"", AcceptStat.SUCCESS),
    (mount3.MOUNT_PROGRAM, 3, 0, b"", AcceptStat.SUCCESS),
    (100099, 1, 0, b"", AcceptStat.PROG_UNAVAIL),
    (nfs3.NFS_PROGRAM, 2, 0, b"", AcceptStat.PROG_MISMATCH),
    (nfs3.NFS_PROGRAM, 4, 0, b"", AcceptStat.PROG_MISMATCH),
    (mount3.MOUNT_PROGRAM, 1, 1, b"", AcceptStat.PROG_MISMATCH),
    (nfs3.NFS_PROGRAM, 3, 99, b"", AcceptStat.PROC_UNAVAIL),
    (mount3.MOUNT_PROGRAM, 3, 77, b"", AcceptStat.PROC_UNAVAIL),
    (nfs3.NFS_PROGRAM, 3, nfs3.Proc.GETATTR, b"\0\0", AcceptStat.GARBAGE_ARGS),
    (nfs3.NFS_PROGRAM, 3, nfs3.Proc.LOOKUP, b"\0\0\0\x08abcdefgh\xff\xff\xff\xf0", AcceptStat.GARBAGE_ARGS),
    (mount3.MOUNT_PROGRAM, 3, mount3.MountProc.MNT, b"\0\0\x10\0", AcceptStat.GARBAGE_ARGS),
    (mount3.MOUNT_PROGRAM, 3, mount3.MountProc.EXPORT, b"junk", AcceptStat.GARBAGE_ARGS),
], ids=["nfs-null", "mount-null", "unknown-program", "nfs-v2", "nfs-v4", "mount-v1", "nfs-proc-99",
        "mount-proc-77", "getattr-truncated", "lookup-huge-name", "mnt-huge-path", "export-with-args"])
def test_rpc_errors_are_exact(server: RunningNfsServer, prog: int, vers: int, proc: int, args: bytes,
                              expect: AcceptStat) -> None:
    reply = call(server, prog, vers, proc, args)
    assert reply is not None and reply.xid == 42
    assert reply.accept_stat == expect
    if expect == AcceptStat.PROG_MISMATCH:
        assert reply.mismatch == (3, 3)


@pytest.mark.parametrize(("cred", "expect"), [
    (OpaqueAuth(rpc.AuthFlavor.AUTH_DH, b"x" * 8), AuthStat.AUTH_TOOWEAK),
    (OpaqueAuth(rpc.AuthFlavor.RPCSEC_GSS, b""), AuthStat.AUTH_TOOWEAK),
    (OpaqueAuth(rpc.AuthFlavor.AUTH_SYS, b"\0\0\0\0"), AuthStat.AUTH_BADCRED),
], ids=["auth-dh", "rpcsec-gss", "truncated-auth-sys"])
def test_unsupported_or_broken_credentials_are_denied(server: RunningNfsServer, cred: OpaqueAuth,
                                                      expect: AuthStat) -> None:
    reply = call(server, nfs3.NFS_PROGRAM, 3, 0, cred=cred)
    assert reply is not None and reply.reply_stat == rpc.ReplyStat.MSG_DENIED
    assert reply.auth_stat == expect


@pytest.mark.parametrize("garbage", [
    b"\x80\x00\x00\x08" + b"\xde\xad\xbe\xef" * 2,  # a record that is not an RPC call header
    b"\xff\xff\xff\xff",  # a 2 GiB record announced
    b"\x80\x00\x00\x0c" + struct.pack(">III", 1, 1, 0),  # a *reply* sent to the server
], ids=["random-record", "giant-record", "reply-instead-of-call"])
def test_garbage_closes_only_that_connection(server: RunningNfsServer, garbage: bytes) -> None:
    with connect(server) as bystander, connect(server) as attacker:
        attacker.sendall(garbage)
        attacker.settimeout(5)
        try:
            assert attacker.recv(100) == b""
        except ConnectionResetError:
            pass
        reply = exchange(bystander, rpc.encode_call(RpcCall(7, nfs3.NFS_PROGRAM, 3, 0)))
    assert reply is not None and reply.accept_stat == AcceptStat.SUCCESS


def test_rpc_version_3_gets_rpc_mismatch(server: RunningNfsServer) -> None:
    with connect(server) as sock:
        reply = exchange(sock, struct.pack(">IIIIII", 9, 0, 3, nfs3.NFS_PROGRAM, 3, 0) + b"\0" * 16)
    assert reply is not None and reply.reject_stat == rpc.RejectStat.RPC_MISMATCH and reply.mismatch == (2, 2)


@pytest.mark.parametrize(("path", "expect"), [
    ("/export", mount3.MountStatus.MNT3_OK),
    ("/export/", mount3.MountStatus.MNT3_OK),
    ("/export/sub", mount3.MountStatus.MNT3_OK),
    ("/export/missing", mount3.MountStatus.MNT3ERR_NOENT),
    ("/export/../..", mount3.MountStatus.MNT3ERR_NOENT),
    ("/export/escape", mount3.MountStatus.MNT3ERR_NOENT),
    ("/etc", mount3.MountStatus.MNT3ERR_NOENT),
    ("/", mount3.MountStatus.MNT3ERR_NOENT),
], ids=["export", "trailing-slash", "subdirectory", "missing", "dot-dot", "symlink-out", "other-path", "root"])
def test_mount_only_gives_handles_inside_the_export(server: RunningNfsServer, path: str,
                                                   expect: mount3.MountStatus) -> None:
    (server.export_dir / "sub").mkdir(exist_ok=True)
    if not (server.export_dir / "escape").is_symlink():
        (server.export_dir / "escape").symlink_to("/etc")
    reply = call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.MNT, mount3.encode_dirpath(path),
                 AuthSys(machinename="tester").as_auth())
    assert reply is not None and reply.accept_stat == AcceptStat.SUCCESS
    assert mount3.decode_mnt_result(reply.results)[0] == expect


def test_forged_handle_is_badhandle(server: RunningNfsServer) -> None:
    mnt = call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.MNT, mount3.encode_dirpath("/export"))
    assert mnt is not None
    _, fh, _ = mount3.decode_mnt_result(mnt.results)
    forged = fh[:-1] + bytes([fh[-1] ^ 1])
    for handle, status in ((fh, nfs3.Status.NFS3_OK), (forged, nfs3.Status.NFS3ERR_BADHANDLE),
                           (b"\0" * 8, nfs3.Status.NFS3ERR_BADHANDLE)):
        reply = call(server, nfs3.NFS_PROGRAM, 3, nfs3.Proc.GETATTR, encode_args(FhArgs(handle)))
        assert reply is not None and Unpacker(reply.results).uint() == status


def test_portmap_getport_points_at_this_port(server: RunningNfsServer) -> None:
    for prog, vers, prot, expect in ((nfs3.NFS_PROGRAM, 3, mount3.IPPROTO_TCP, server.port),
                                     (mount3.MOUNT_PROGRAM, 3, mount3.IPPROTO_TCP, server.port),
                                     (mount3.MOUNT_PROGRAM, 3, mount3.IPPROTO_UDP, 0),
                                     (100021, 4, mount3.IPPROTO_TCP, 0)):
        args = mount3.encode_mapping(mount3.PortMapping(prog, vers, prot))
        reply = call(server, mount3.PORTMAP_PROGRAM, 2, mount3.PortmapProc.GETPORT, args)
        assert reply is not None and Unpacker(reply.results).uint() == expect


def test_mounts_are_listed_by_dump_and_removed_by_umnt(server: RunningNfsServer, tmp_path: Path) -> None:
    cred = AuthSys(machinename="dump-client").as_auth()
    call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.MNT, mount3.encode_dirpath("/export"), cred)
    dump = call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.DUMP)
    assert dump is not None
    assert mount3.MountEntry("dump-client", "/export") in mount3.decode_mountlist(dump.results)
    call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.UMNT, mount3.encode_dirpath("/export"), cred)
    dump = call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.DUMP)
    assert dump is not None
    assert mount3.MountEntry("dump-client", "/export") not in mount3.decode_mountlist(dump.results)
    exports = call(server, mount3.MOUNT_PROGRAM, 3, mount3.MountProc.EXPORT)
    assert exports is not None and mount3.decode_exports(exports.results) == [mount3.ExportEntry("/export")]
