"""Fuzzing the server core without sockets: any decoded call gets an NFS status back, any byte string gets an
RPC reply or ``None`` (close) — never an exception that would take the connection or the server down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlab.nfs import nfs3_args as a
from meshlab.nfs import rpc
from meshlab.nfs.nfs3 import CreateMode, NfsTime, Proc, SAttr, StableHow, Status
from meshlab.nfs.rpc import RpcCall
from meshlab.nfs.xdr import Unpacker
from meshlab.storage.nfsd.attributes import Caller
from meshlab.storage.nfsd.dispatch import Dispatcher
from meshlab.storage.nfsd.filesystem import Filesystem
from meshlab.storage.nfsd.handles import HandleIndex, load_secret

ROOT_FH = b"<root>"  # replaced by the export's real root handle at call time


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filesystem]:
    base: Path = tmp_path_factory.mktemp("fuzz")
    (base / "export" / "dir").mkdir(parents=True)
    (base / "export" / "file").write_bytes(b"0123456789")
    yield Filesystem(HandleIndex(base / "export", load_secret(base / "state")))


def real(fs: Filesystem, args: a.Args) -> a.Args:
    root = fs.root_handle()
    changes = {k: root for k, v in vars(args).items() if v == ROOT_FH}
    return type(args)(**{**vars(args), **changes})

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
handles = st.one_of(st.just(ROOT_FH), st.binary(min_size=1, max_size=64))
names = st.one_of(st.sampled_from(["dir", "file", ".", "..", "new", "a/b", "x\0y", "é"]), st.text(max_size=300))
times = st.builds(NfsTime, u32, st.integers(0, 999_999_999))
# Modes and owners are left alone: the fuzzer must not lock itself (or this test's cleanup) out.
sattrs = st.builds(SAttr, st.none(), st.none(), st.none(), st.none() | st.integers(0, 4096),
                   st.none() | st.just("server") | times, st.none() | times)
calls = st.one_of(
    st.builds(lambda fh: (Proc.GETATTR, a.FhArgs(fh)), handles),
    st.builds(lambda fh, s: (Proc.SETATTR, a.SetAttrArgs(fh, s)), handles, sattrs),
    st.builds(lambda fh, n: (Proc.LOOKUP, a.DirOpArgs(fh, n)), handles, names),
    st.builds(lambda fh, n: (Proc.ACCESS, a.AccessArgs(fh, n)), handles, u32),
    st.builds(lambda fh, o, c: (Proc.READ, a.ReadArgs(fh, o, c)), handles, u64, u32),
    st.builds(lambda fh, o, d: (Proc.WRITE, a.WriteArgs(fh, o, StableHow.UNSTABLE, d)), handles,
              st.integers(0, 4096) | u64, st.binary(max_size=64)),
    st.builds(lambda fh, n, m: (Proc.CREATE, a.CreateArgs(fh, n, m)), handles, names, st.sampled_from(CreateMode)),
    st.builds(lambda fh, n: (Proc.MKDIR, a.MkdirArgs(fh, n)), handles, names),
    st.builds(lambda fh, n, t: (Proc.SYMLINK, a.SymlinkArgs(fh, n, t)), handles, names, st.text(max_size=50)),
    st.builds(lambda fh, n: (Proc.REMOVE, a.DirOpArgs(fh, n)), handles, names),
    st.builds(lambda fh, n: (Proc.RMDIR, a.DirOpArgs(fh, n)), handles, names),
    st.builds(lambda f, n, t: (Proc.RENAME, a.RenameArgs(f, n, ROOT_FH, t)), handles, names, names),
    st.builds(lambda fh, c, m: (Proc.READDIR, a.ReaddirArgs(fh, c, b"\0" * 8, m)), handles, u64, u32),
    st.builds(lambda fh, c, d, m: (Proc.READDIRPLUS, a.ReaddirPlusArgs(fh, c, b"\0" * 8, m, d)), handles,
              st.integers(0, 10) | u64, u32, u32),
    st.builds(lambda fh, p: (p, a.FhArgs(fh)), handles, st.sampled_from([Proc.FSSTAT, Proc.FSINFO,
                                                                          Proc.PATHCONF, Proc.READLINK])),
    st.builds(lambda fh, o, c: (Proc.COMMIT, a.ReadArgs(fh, o, c)), handles, u64, u32),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls, st.sampled_from([Caller(0, 0), Caller(1000, 1000), Caller()]))
def test_any_call_gets_a_status(fs: Filesystem, call: tuple[Proc, a.Args], caller: Caller) -> None:
    proc, args = call
    result = fs.call(proc, real(fs, args), caller)
    assert Unpacker(result).uint() in Status._value2member_map_


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda prog, vers, proc, args: rpc.encode_call(RpcCall(1, prog, vers, proc, args=args)),
              st.sampled_from([100000, 100003, 100005, 7]), st.integers(0, 5), st.integers(0, 25),
              st.binary(max_size=120)),
))
def test_any_record_gets_a_reply_or_a_close(fs: Filesystem, record: bytes) -> None:
    reply = Dispatcher(fs, "/export", 2049).handle(record, "fuzzer")
    if reply is not None:
        decoded = rpc.decode_reply(reply)
        assert decoded.xid == int.from_bytes(record[:4], "big")
        assert decoded.accept_stat != rpc.AcceptStat.SYSTEM_ERR  # that would be a bug in a procedure
