"""NFSv3 and MOUNT v3 types: attributes, every procedure's arguments and MOUNT lists round-trip through XDR."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlab.nfs import mount3
from meshlab.nfs import nfs3_args as a
from meshlab.nfs.nfs3 import (
    FAILURE_ATTR_FLAGS,
    CreateMode,
    FAttr,
    FType,
    NfsTime,
    Proc,
    SAttr,
    StableHow,
    Status,
    encode_failure,
    pack_fattr,
    unpack_fattr,
)
from meshlab.nfs.xdr import Packer, Unpacker, XdrError

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
times = st.builds(NfsTime, u32, st.integers(0, 999_999_999))
fhs = st.binary(min_size=1, max_size=64)
names = st.text(min_size=1, max_size=40)
sattrs = st.builds(SAttr, st.none() | u32, st.none() | u32, st.none() | u32, st.none() | u64,
                   st.none() | st.just("server") | times, st.none() | st.just("server") | times)

ARGS: dict[Proc, st.SearchStrategy[a.Args]] = {
    Proc.GETATTR: st.builds(a.FhArgs, fhs),
    Proc.SETATTR: st.builds(a.SetAttrArgs, fhs, sattrs, st.none() | times),
    Proc.LOOKUP: st.builds(a.DirOpArgs, fhs, names),
    Proc.ACCESS: st.builds(a.AccessArgs, fhs, u32),
    Proc.READ: st.builds(a.ReadArgs, fhs, u64, u32),
    Proc.WRITE: st.builds(a.WriteArgs, fhs, u64, st.sampled_from(StableHow), st.binary(max_size=100)),
    Proc.CREATE: st.one_of(
        st.builds(a.CreateArgs, fhs, names, st.sampled_from([CreateMode.UNCHECKED, CreateMode.GUARDED]), sattrs),
        st.builds(a.CreateArgs, fhs, names, st.just(CreateMode.EXCLUSIVE), st.just(SAttr()),
                  st.binary(min_size=8, max_size=8))),
    Proc.MKDIR: st.builds(a.MkdirArgs, fhs, names, sattrs),
    Proc.SYMLINK: st.builds(a.SymlinkArgs, fhs, names, st.text(max_size=100), sattrs),
    Proc.RENAME: st.builds(a.RenameArgs, fhs, names, fhs, names),
    Proc.LINK: st.builds(a.LinkArgs, fhs, fhs, names),
    Proc.READDIR: st.builds(a.ReaddirArgs, fhs, u64, st.binary(min_size=8, max_size=8), u32),
    Proc.READDIRPLUS: st.builds(a.ReaddirPlusArgs, fhs, u64, st.binary(min_size=8, max_size=8), u32, u32),
    Proc.COMMIT: st.builds(a.ReadArgs, fhs, u64, u32),
}


@pytest.mark.parametrize("proc", list(ARGS), ids=[p.name for p in ARGS])
@given(data=st.data())
def test_procedure_arguments_round_trip(proc: Proc, data: st.DataObject) -> None:
    args = data.draw(ARGS[proc])
    assert a.decode_args(proc, a.encode_args(args)) == args


@given(st.builds(FAttr, st.sampled_from(FType), u32, u32, u32, u32, u64, u64, st.tuples(u32, u32), u64, u64,
                 times, times, times))
def test_fattr_round_trips(attr: FAttr) -> None:
    p = Packer()
    pack_fattr(p, attr)
    assert len(bytes(p)) == 84  # RFC 1813's fixed fattr3 size
    assert unpack_fattr(Unpacker(bytes(p))) == attr


@pytest.mark.parametrize(("proc", "data", "error"), [
    (Proc.GETATTR, b"\0\0\0\x41" + b"\0" * 68, "limit"),
    (Proc.GETATTR, a.encode_args(a.FhArgs(b"abcd")) + b"\0\0\0\0", "unexpected"),
    (Proc.WRITE, a.encode_args(a.ReadArgs(b"fh", 0, 7)) + b"\0\0\0\0" + b"\0\0\0\4data", "differs"),
    (Proc.CREATE, a.encode_args(a.DirOpArgs(b"fh", "n")) + b"\0\0\0\x09", "createmode3"),
    (Proc.SETATTR, a.encode_args(a.FhArgs(b"fh")) + b"\0\0\0\0" * 4 + b"\0\0\0\x07", "time_how"),
], ids=["handle-over-64-bytes", "trailing-bytes", "write-count-mismatch", "bad-createmode", "bad-time-how"])
def test_malformed_arguments_are_refused(proc: Proc, data: bytes, error: str) -> None:
    with pytest.raises(XdrError, match=error):
        a.decode_args(proc, data)


@pytest.mark.parametrize("proc", list(FAILURE_ATTR_FLAGS), ids=[p.name for p in FAILURE_ATTR_FLAGS])
def test_failure_results_carry_status_then_absent_attributes(proc: Proc) -> None:
    u = Unpacker(encode_failure(proc, Status.NFS3ERR_NOENT))
    assert u.uint() == Status.NFS3ERR_NOENT
    assert [u.boolean() for _ in range(FAILURE_ATTR_FLAGS[proc])] == [False] * FAILURE_ATTR_FLAGS[proc]
    u.done()


@given(st.lists(st.builds(mount3.MountEntry, st.text(max_size=20), st.text(max_size=40)), max_size=5),
       st.lists(st.builds(mount3.ExportEntry, st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3)
                          .map(tuple)), max_size=5))
def test_mount_lists_round_trip(mounts: list[mount3.MountEntry], exports: list[mount3.ExportEntry]) -> None:
    assert mount3.decode_mountlist(mount3.encode_mountlist(mounts)) == mounts
    assert mount3.decode_exports(mount3.encode_exports(exports)) == exports


@given(st.binary(min_size=1, max_size=64), st.lists(u32, max_size=4).map(tuple))
def test_mnt_result_round_trips(fh: bytes, flavors: tuple[int, ...]) -> None:
    result = mount3.encode_mnt_result(mount3.MountStatus.MNT3_OK, fh, flavors)
    assert mount3.decode_mnt_result(result) == (mount3.MountStatus.MNT3_OK, fh, flavors)
