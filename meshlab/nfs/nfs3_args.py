"""NFSv3 procedure arguments (RFC 1813 §3.3): one frozen dataclass per procedure, XDR both ways.

A server decodes them with ``decode_args(proc, data)`` — which insists the whole argument body is consumed,
so trailing garbage is GARBAGE_ARGS rather than silently ignored — and a client (tests, tools) encodes them
with ``.encode()``. Names in directory operations are ``filename3`` strings; this module only checks XDR
bounds, the server decides which names are acceptable (no ``/``, not too long).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from meshlab.nfs.nfs3 import (
    COOKIEVERF3,
    CREATEVERF3,
    CreateMode,
    NfsTime,
    Proc,
    SAttr,
    StableHow,
    pack_fh,
    pack_sattr,
    pack_time,
    unpack_fh,
    unpack_sattr,
    unpack_time,
)
from meshlab.nfs.xdr import Packer, Unpacker, XdrError

MAX_NAME = 1024  # the XDR bound we accept; NAME_MAX (255) is the server's business
MAX_PATH = 4096
MAX_DATA = 16 * 1024 * 1024
NO_ATTRS = SAttr()  # sattr3 with nothing to set (immutable, so one shared default is safe)


@dataclass(frozen=True)
class FhArgs:
    """GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF: just the object's handle."""

    fh: bytes

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.fh)

    @classmethod
    def unpack(cls, u: Unpacker) -> FhArgs:
        return cls(unpack_fh(u))


@dataclass(frozen=True)
class DirOpArgs:
    """``diropargs3``: LOOKUP, REMOVE, RMDIR (a directory handle and a name in it)."""

    dir: bytes
    name: str

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.dir)
        p.string(self.name, MAX_NAME)

    @classmethod
    def unpack(cls, u: Unpacker) -> DirOpArgs:
        return cls(unpack_fh(u), u.string(MAX_NAME))


@dataclass(frozen=True)
class SetAttrArgs:
    fh: bytes
    attrs: SAttr
    guard: NfsTime | None = None  # SETATTR only if the object's ctime still equals this

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.fh)
        pack_sattr(p, self.attrs)
        p.optional(self.guard, lambda t: pack_time(p, t))

    @classmethod
    def unpack(cls, u: Unpacker) -> SetAttrArgs:
        return cls(unpack_fh(u), unpack_sattr(u), u.optional(lambda: unpack_time(u)))


@dataclass(frozen=True)
class AccessArgs:
    fh: bytes
    access: int

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.fh)
        p.uint(self.access)

    @classmethod
    def unpack(cls, u: Unpacker) -> AccessArgs:
        return cls(unpack_fh(u), u.uint())


@dataclass(frozen=True)
class ReadArgs:
    """READ and COMMIT: a handle, an offset and a byte count."""

    fh: bytes
    offset: int
    count: int

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.fh)
        p.uhyper(self.offset)
        p.uint(self.count)

    @classmethod
    def unpack(cls, u: Unpacker) -> ReadArgs:
        return cls(unpack_fh(u), u.uhyper(), u.uint())


@dataclass(frozen=True)
class WriteArgs:
    fh: bytes
    offset: int
    stable: StableHow
    data: bytes

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.fh)
        p.uhyper(self.offset)
        p.uint(len(self.data))
        p.uint(self.stable)
        p.opaque(self.data, MAX_DATA)

    @classmethod
    def unpack(cls, u: Unpacker) -> WriteArgs:
        fh, offset, count, stable = unpack_fh(u), u.uhyper(), u.uint(), u.uint()
        if stable not in StableHow._value2member_map_:
            raise XdrError(f"unknown stable_how {stable}")
        data = u.opaque(MAX_DATA)
        if count != len(data):
            raise XdrError(f"WRITE count {count} differs from the {len(data)} data bytes")
        return cls(fh, offset, StableHow(stable), data)


@dataclass(frozen=True)
class CreateArgs:
    """CREATE: UNCHECKED/GUARDED carry attributes, EXCLUSIVE an 8-byte verifier instead."""

    dir: bytes
    name: str
    mode: CreateMode
    attrs: SAttr = NO_ATTRS
    verf: bytes = b"\0" * CREATEVERF3

    def pack(self, p: Packer) -> None:
        DirOpArgs(self.dir, self.name).pack(p)
        p.uint(self.mode)
        if self.mode == CreateMode.EXCLUSIVE:
            p.fixed_opaque(self.verf, CREATEVERF3)
        else:
            pack_sattr(p, self.attrs)

    @classmethod
    def unpack(cls, u: Unpacker) -> CreateArgs:
        where = DirOpArgs.unpack(u)
        mode = u.uint()
        if mode == CreateMode.EXCLUSIVE:
            return cls(where.dir, where.name, CreateMode.EXCLUSIVE, verf=u.fixed_opaque(CREATEVERF3))
        if mode not in CreateMode._value2member_map_:
            raise XdrError(f"unknown createmode3 {mode}")
        return cls(where.dir, where.name, CreateMode(mode), unpack_sattr(u))


@dataclass(frozen=True)
class MkdirArgs:
    dir: bytes
    name: str
    attrs: SAttr = NO_ATTRS

    def pack(self, p: Packer) -> None:
        DirOpArgs(self.dir, self.name).pack(p)
        pack_sattr(p, self.attrs)

    @classmethod
    def unpack(cls, u: Unpacker) -> MkdirArgs:
        where = DirOpArgs.unpack(u)
        return cls(where.dir, where.name, unpack_sattr(u))


@dataclass(frozen=True)
class SymlinkArgs:
    dir: bytes
    name: str
    target: str
    attrs: SAttr = NO_ATTRS

    def pack(self, p: Packer) -> None:
        DirOpArgs(self.dir, self.name).pack(p)
        pack_sattr(p, self.attrs)
        p.string(self.target, MAX_PATH)

    @classmethod
    def unpack(cls, u: Unpacker) -> SymlinkArgs:
        where = DirOpArgs.unpack(u)
        attrs = unpack_sattr(u)
        return cls(where.dir, where.name, u.string(MAX_PATH), attrs)


@dataclass(frozen=True)
class RenameArgs:
    from_dir: bytes
    from_name: str
    to_dir: bytes
    to_name: str

    def pack(self, p: Packer) -> None:
        DirOpArgs(self.from_dir, self.from_name).pack(p)
        DirOpArgs(self.to_dir, self.to_name).pack(p)

    @classmethod
    def unpack(cls, u: Unpacker) -> RenameArgs:
        src, dst = DirOpArgs.unpack(u), DirOpArgs.unpack(u)
        return cls(src.dir, src.name, dst.dir, dst.name)


@dataclass(frozen=True)
class LinkArgs:
    fh: bytes
    dir: bytes
    name: str

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.fh)
        DirOpArgs(self.dir, self.name).pack(p)

    @classmethod
    def unpack(cls, u: Unpacker) -> LinkArgs:
        fh = unpack_fh(u)
        where = DirOpArgs.unpack(u)
        return cls(fh, where.dir, where.name)


@dataclass(frozen=True)
class ReaddirArgs:
    """READDIR (``maxcount`` is the reply limit) and READDIRPLUS (``dircount`` limits the names part)."""

    dir: bytes
    cookie: int
    cookieverf: bytes
    maxcount: int
    dircount: int = 0
    plus: ClassVar[bool] = False

    def pack(self, p: Packer) -> None:
        pack_fh(p, self.dir)
        p.uhyper(self.cookie)
        p.fixed_opaque(self.cookieverf, COOKIEVERF3)
        if self.plus:
            p.uint(self.dircount)
        p.uint(self.maxcount)

    @classmethod
    def unpack(cls, u: Unpacker) -> ReaddirArgs:
        fh, cookie, verf = unpack_fh(u), u.uhyper(), u.fixed_opaque(COOKIEVERF3)
        if cls.plus:
            dircount = u.uint()
            return cls(fh, cookie, verf, u.uint(), dircount)
        return cls(fh, cookie, verf, u.uint())


@dataclass(frozen=True)
class ReaddirPlusArgs(ReaddirArgs):
    plus: ClassVar[bool] = True


Args = (FhArgs | DirOpArgs | SetAttrArgs | AccessArgs | ReadArgs | WriteArgs | CreateArgs | MkdirArgs
        | SymlinkArgs | RenameArgs | LinkArgs | ReaddirArgs)

ARG_TYPES: dict[Proc, type[Args]] = {
    Proc.GETATTR: FhArgs, Proc.SETATTR: SetAttrArgs, Proc.LOOKUP: DirOpArgs, Proc.ACCESS: AccessArgs,
    Proc.READLINK: FhArgs, Proc.READ: ReadArgs, Proc.WRITE: WriteArgs, Proc.CREATE: CreateArgs,
    Proc.MKDIR: MkdirArgs, Proc.SYMLINK: SymlinkArgs, Proc.REMOVE: DirOpArgs, Proc.RMDIR: DirOpArgs,
    Proc.RENAME: RenameArgs, Proc.LINK: LinkArgs, Proc.READDIR: ReaddirArgs,
    Proc.READDIRPLUS: ReaddirPlusArgs, Proc.FSSTAT: FhArgs, Proc.FSINFO: FhArgs, Proc.PATHCONF: FhArgs,
    Proc.COMMIT: ReadArgs,
}


def encode_args(args: Args) -> bytes:
    p = Packer()
    args.pack(p)
    return bytes(p)


def decode_args(proc: Proc, data: bytes) -> Args:
    """Decode ``proc``'s arguments; XdrError when they are malformed or followed by extra bytes."""
    u = Unpacker(data)
    args = ARG_TYPES[proc].unpack(u)
    u.done()
    return args
