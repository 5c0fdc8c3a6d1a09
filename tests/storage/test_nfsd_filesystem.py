"""The NFSv3 procedures without sockets: paths never escape the export, ACCESS tells the truth, handles
stay valid across renames and server restarts and go stale when their file is gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshlab.nfs import nfs3_args as a
from meshlab.nfs.nfs3 import Access, CreateMode, Proc, SAttr, StableHow, Status, unpack_fattr
from meshlab.nfs.xdr import Unpacker
from meshlab.storage.nfsd.attributes import Caller
from meshlab.storage.nfsd.filesystem import Filesystem
from meshlab.storage.nfsd.handles import HandleIndex, load_secret

ROOT = Caller(0, 0)
ALICE = Caller(1000, 1000)


def make_fs(tmp_path: Path) -> Filesystem:
    export = tmp_path / "export"
    export.mkdir(exist_ok=True)
    return Filesystem(HandleIndex(export, load_secret(tmp_path / "state")))


def status(result: bytes) -> Status:
    return Status(Unpacker(result).uint())


def lookup(fs: Filesystem, directory: bytes, name: str, caller: Caller = ROOT) -> tuple[Status, bytes]:
    u = Unpacker(fs.call(Proc.LOOKUP, a.DirOpArgs(directory, name), caller))
    st = Status(u.uint())
    return st, (u.opaque(64) if st == Status.NFS3_OK else b"")


def created_handle(result: bytes) -> bytes:
    u = Unpacker(result)
    assert Status(u.uint()) == Status.NFS3_OK
    assert u.boolean()
    return u.opaque(64)


@pytest.mark.parametrize(("name", "expect"), [
    ("..", Status.NFS3_OK),  # the root's parent is the root itself
    ("a/b", Status.NFS3ERR_ACCES),
    ("../etc", Status.NFS3ERR_ACCES),
    ("", Status.NFS3ERR_ACCES),
    ("x" * 256, Status.NFS3ERR_NAMETOOLONG),
    ("missing", Status.NFS3ERR_NOENT),
], ids=["dotdot-at-root", "slash", "dotdot-slash", "empty", "too-long", "missing"])
def test_lookup_names_cannot_leave_the_export(tmp_path: Path, name: str, expect: Status) -> None:
    fs = make_fs(tmp_path)
    root = fs.root_handle()
    st, fh = lookup(fs, root, name)
    assert st == expect
    if name == "..":
        assert fh == root


def test_symlinks_are_never_followed_by_the_server(tmp_path: Path) -> None:
    fs = make_fs(tmp_path)
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", tmp_path / "export" / "file-link")
    os.symlink(tmp_path, tmp_path / "export" / "dir-link")
    st, link = lookup(fs, fs.root_handle(), "file-link")
    assert st == Status.NFS3_OK
    assert status(fs.call(Proc.READ, a.ReadArgs(link, 0, 100), ROOT)) == Status.NFS3ERR_INVAL
    assert status(fs.call(Proc.WRITE, a.WriteArgs(link, 0, StableHow.FILE_SYNC, b"x"), ROOT)) == Status.NFS3ERR_INVAL
    _, dir_link = lookup(fs, fs.root_handle(), "dir-link")
    assert lookup(fs, dir_link, "secret.txt")[0] == Status.NFS3ERR_NOTDIR
    assert (tmp_path / "secret.txt").read_text() == "outside"


def test_a_directory_swapped_for_a_symlink_on_disk_is_refused(tmp_path: Path) -> None:
    fs = make_fs(tmp_path)
    sub = created_handle(fs.call(Proc.MKDIR, a.MkdirArgs(fs.root_handle(), "sub"), ROOT))
    inner = created_handle(fs.call(Proc.MKDIR, a.MkdirArgs(sub, "inner"), ROOT))
    (tmp_path / "outside").mkdir()
    os.rename(tmp_path / "export" / "sub", tmp_path / "moved")
    os.symlink(tmp_path / "moved", tmp_path / "export" / "sub")  # the old path now leads out of the export
    result = fs.call(Proc.CREATE, a.CreateArgs(inner, "evil", CreateMode.UNCHECKED), ROOT)
    assert status(result) in (Status.NFS3ERR_STALE, Status.NFS3ERR_ACCES)
    assert not (tmp_path / "moved" / "inner" / "evil").exists()


@pytest.mark.parametrize(("mode", "caller", "expect"), [
    (0o755, ROOT, Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE | Access.EXECUTE),
    (0o755, ALICE, Access.READ | Access.LOOKUP),
    (0o777, ALICE, Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE),
    (0o700, ALICE, Access(0)),
    (0o750, Caller(1000, 1000, (0,)), Access.READ | Access.LOOKUP),
], ids=["root", "other-r-x", "other-rwx", "other-none", "group-member"])
def test_access_reports_the_callers_real_bits(tmp_path: Path, mode: int, caller: Caller, expect: Access) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs files owned by root with a different caller uid")
    fs = make_fs(tmp_path)
    os.chmod(tmp_path / "export", mode)
    u = Unpacker(fs.call(Proc.ACCESS, a.AccessArgs(fs.root_handle(), 0x3F), caller))
    assert Status(u.uint()) == Status.NFS3_OK
    u.boolean()
    unpack_fattr(u)
    assert Access(u.uint()) == expect


def test_writes_are_refused_when_access_says_no(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs files owned by root with a different caller uid")
    fs = make_fs(tmp_path)
    os.chmod(tmp_path / "export", 0o755)
    result = fs.call(Proc.MKDIR, a.MkdirArgs(fs.root_handle(), "nope"), ALICE)
    assert status(result) == Status.NFS3ERR_ACCES
    assert not (tmp_path / "export" / "nope").exists()


def test_files_created_for_a_user_belong_to_that_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root server can give files away")
    fs = make_fs(tmp_path)
    os.chmod(tmp_path / "export", 0o777)
    created_handle(fs.call(Proc.CREATE, a.CreateArgs(fs.root_handle(), "mine", CreateMode.GUARDED,
                                                     SAttr(mode=0o600)), ALICE))
    st = (tmp_path / "export" / "mine").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)


def test_handles_survive_rename_and_restart_and_go_stale_on_delete(tmp_path: Path) -> None:
    fs = make_fs(tmp_path)
    d = created_handle(fs.call(Proc.MKDIR, a.MkdirArgs(fs.root_handle(), "d"), ROOT))
    f = created_handle(fs.call(Proc.CREATE, a.CreateArgs(d, "f", CreateMode.UNCHECKED), ROOT))
    fs.call(Proc.WRITE, a.WriteArgs(f, 0, StableHow.UNSTABLE, b"hello"), ROOT)
    assert status(fs.call(Proc.RENAME, a.RenameArgs(fs.root_handle(), "d", fs.root_handle(), "e"), ROOT)) == 0
    assert status(fs.call(Proc.GETATTR, a.FhArgs(f), ROOT)) == Status.NFS3_OK
    assert fs.index.resolve(f)[0] == str(tmp_path / "export" / "e" / "f")  # followed the rename, no search
    restarted = make_fs(tmp_path)  # a new process: same secret on disk, empty memory
    u = Unpacker(restarted.call(Proc.READ, a.ReadArgs(f, 0, 100), ROOT))
    assert Status(u.uint()) == Status.NFS3_OK
    u.boolean()
    unpack_fattr(u)
    assert (u.uint(), u.boolean(), u.opaque()) == (5, True, b"hello")
    os.unlink(tmp_path / "export" / "e" / "f")
    assert status(restarted.call(Proc.GETATTR, a.FhArgs(f), ROOT)) == Status.NFS3ERR_STALE
    other = Filesystem(HandleIndex(tmp_path / "export", b"another secret, another export!"))
    assert status(other.call(Proc.GETATTR, a.FhArgs(d), ROOT)) == Status.NFS3ERR_BADHANDLE


@pytest.mark.parametrize(("proc", "args_of", "expect"), [
    (Proc.RMDIR, lambda r: a.DirOpArgs(r, "full"), Status.NFS3ERR_NOTEMPTY),
    (Proc.REMOVE, lambda r: a.DirOpArgs(r, "full"), Status.NFS3ERR_ISDIR),
    (Proc.MKDIR, lambda r: a.MkdirArgs(r, "full"), Status.NFS3ERR_EXIST),
    (Proc.CREATE, lambda r: a.CreateArgs(r, "full", CreateMode.GUARDED), Status.NFS3ERR_EXIST),
    (Proc.RENAME, lambda r: a.RenameArgs(r, "full", r, "full/inside"), Status.NFS3ERR_ACCES),
    (Proc.READDIR, lambda r: a.ReaddirArgs(r, 0, b"\0" * 8, 20), Status.NFS3ERR_TOOSMALL),
    (Proc.SETATTR, lambda r: a.SetAttrArgs(r, SAttr(size=0)), Status.NFS3ERR_ISDIR),
], ids=["rmdir-not-empty", "remove-directory", "mkdir-exists", "guarded-create-exists", "rename-slash-name",
        "readdir-too-small", "truncate-directory"])
def test_errors_map_to_the_rfc_status(tmp_path: Path, proc: Proc, args_of: object, expect: Status) -> None:
    fs = make_fs(tmp_path)
    (tmp_path / "export" / "full").mkdir()
    (tmp_path / "export" / "full" / "x").write_text("x")
    assert status(fs.call(proc, args_of(fs.root_handle()), ROOT)) == expect  # type: ignore[operator]


def test_a_file_whose_directory_left_the_export_is_stale(tmp_path: Path) -> None:
    fs = make_fs(tmp_path)
    sub = created_handle(fs.call(Proc.MKDIR, a.MkdirArgs(fs.root_handle(), "sub"), ROOT))
    f = created_handle(fs.call(Proc.CREATE, a.CreateArgs(sub, "f", CreateMode.UNCHECKED), ROOT))
    os.rename(tmp_path / "export" / "sub", tmp_path / "outside")
    os.symlink(tmp_path / "outside", tmp_path / "export" / "sub")  # the old path still reaches the file
    result = fs.call(Proc.WRITE, a.WriteArgs(f, 0, StableHow.FILE_SYNC, b"escaped"), ROOT)
    assert status(result) == Status.NFS3ERR_STALE
    assert (tmp_path / "outside" / "f").read_bytes() == b""


def readdir_page(fs: Filesystem, directory: bytes, cookie: int, maxcount: int) -> tuple[list[str], int, bool]:
    u = Unpacker(fs.call(Proc.READDIR, a.ReaddirArgs(directory, cookie, b"\0" * 8, maxcount), ROOT))
    assert Status(u.uint()) == Status.NFS3_OK
    if u.boolean():
        unpack_fattr(u)
    u.fixed_opaque(8)
    names = []
    while u.boolean():
        u.uhyper()
        names.append(u.string())
        cookie = u.uhyper()
    return names, cookie, u.boolean()


@pytest.mark.parametrize("hard_links", [False, True], ids=["plain-files", "hard-links-across-pages"])
def test_listing_while_deleting_skips_nothing(tmp_path: Path, hard_links: bool) -> None:
    fs = make_fs(tmp_path)
    export = tmp_path / "export"
    expected = set()
    for i in range(60):
        name = f"entry-{i:03d}"
        if hard_links and i % 3:
            os.link(export / f"entry-{i - i % 3:03d}", export / name)  # three names per inode
        else:
            (export / name).write_text(name)
        expected.add(name)
    seen: set[str] = set()
    cookie, eof = 0, False
    while not eof:
        names, cookie, eof = readdir_page(fs, fs.root_handle(), cookie, 512)
        assert names and not (seen & set(names))
        seen |= set(names)
        for name in names:  # like rm -r: delete what was listed before asking for more
            os.unlink(export / name)
    assert seen == expected
    assert os.listdir(export) == []
