"""ONC RPC version 2 (RFC 5531): call and reply messages, AUTH_NONE/AUTH_SYS, and TCP record marking.

A call names a *program* (NFS is 100003, MOUNT 100005, the portmapper 100000), its version and a procedure
number, carries a credential and a verifier (``opaque_auth``: a flavor and up to 400 bytes), then the
procedure's XDR-encoded arguments. The reply echoes the transaction id (``xid``) and is either *accepted*
(SUCCESS with results, or PROG_UNAVAIL / PROG_MISMATCH / PROC_UNAVAIL / GARBAGE_ARGS / SYSTEM_ERR) or
*denied* (RPC_MISMATCH, AUTH_ERROR). AUTH_SYS (flavor 1) is the classic Unix credential — a stamp, a machine
name, uid, gid and up to 16 groups — asserted by the client, not proven. Over TCP each message is a *record*
split into fragments, each behind a 4-byte header whose top bit marks the last fragment and whose other 31
bits give its length (RFC 5531 §11). Everything here is pure: bytes in, values out.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from meshlab.nfs.xdr import Packer, Unpacker, XdrError

RPC_VERSION = 2
MAX_AUTH_BYTES = 400
CALL, REPLY = 0, 1


class AuthFlavor(enum.IntEnum):
    AUTH_NONE = 0
    AUTH_SYS = 1
    AUTH_SHORT = 2
    AUTH_DH = 3
    RPCSEC_GSS = 6


class ReplyStat(enum.IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(enum.IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(enum.IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(enum.IntEnum):
    AUTH_OK = 0
    AUTH_BADCRED = 1
    AUTH_REJECTEDCRED = 2
    AUTH_BADVERF = 3
    AUTH_REJECTEDVERF = 4
    AUTH_TOOWEAK = 5


@dataclass(frozen=True)
class OpaqueAuth:
    flavor: int = AuthFlavor.AUTH_NONE
    body: bytes = b""


NULL_AUTH = OpaqueAuth()


@dataclass(frozen=True)
class AuthSys:
    """The AUTH_SYS credential body (RFC 5531 appendix A)."""

    stamp: int = 0
    machinename: str = ""
    uid: int = 0
    gid: int = 0
    gids: tuple[int, ...] = ()

    def encode(self) -> bytes:
        p = Packer()
        p.uint(self.stamp)
        p.string(self.machinename, 255)
        p.uint(self.uid)
        p.uint(self.gid)
        p.array(list(self.gids), p.uint, 16)
        return bytes(p)

    @classmethod
    def decode(cls, body: bytes) -> AuthSys:
        u = Unpacker(body)
        cred = cls(u.uint(), u.string(255), u.uint(), u.uint(), tuple(u.array(u.uint, 16)))
        u.done()
        return cred

    def as_auth(self) -> OpaqueAuth:
        return OpaqueAuth(AuthFlavor.AUTH_SYS, self.encode())


@dataclass(frozen=True)
class RpcCall:
    xid: int
    prog: int
    vers: int
    proc: int
    cred: OpaqueAuth = NULL_AUTH
    verf: OpaqueAuth = NULL_AUTH
    args: bytes = b""

    def auth_sys(self) -> AuthSys | None:
        """The AUTH_SYS credential, None for other flavors; XdrError when its body is malformed."""
        if self.cred.flavor != AuthFlavor.AUTH_SYS:
            return None
        return AuthSys.decode(self.cred.body)


@dataclass(frozen=True)
class RpcReply:
    """A decoded reply (the client side, used by tests and tools)."""

    xid: int
    reply_stat: ReplyStat
    accept_stat: AcceptStat | None = None
    reject_stat: RejectStat | None = None
    auth_stat: AuthStat | None = None
    mismatch: tuple[int, int] | None = None
    verf: OpaqueAuth = NULL_AUTH
    results: bytes = field(default=b"", repr=False)


class NotACall(XdrError):
    """A well-formed message that is not an RPC v2 call; ``xid`` is known so a reply can still be sent."""

    def __init__(self, xid: int, message: str, *, rpc_mismatch: bool = False) -> None:
        super().__init__(message)
        self.xid = xid
        self.rpc_mismatch = rpc_mismatch


def _pack_auth(p: Packer, auth: OpaqueAuth) -> None:
    p.uint(auth.flavor)
    p.opaque(auth.body, MAX_AUTH_BYTES)


def _unpack_auth(u: Unpacker) -> OpaqueAuth:
    return OpaqueAuth(u.uint(), u.opaque(MAX_AUTH_BYTES))


def encode_call(call: RpcCall) -> bytes:
    p = Packer()
    p.uint(call.xid)
    p.uint(CALL)
    p.uint(RPC_VERSION)
    p.uint(call.prog)
    p.uint(call.vers)
    p.uint(call.proc)
    _pack_auth(p, call.cred)
    _pack_auth(p, call.verf)
    p.raw(call.args)
    return bytes(p)


def decode_call(message: bytes) -> RpcCall:
    """Decode a call; XdrError when it is garbage, NotACall when it is a reply or another RPC version."""
    u = Unpacker(message)
    xid = u.uint()
    msg_type = u.uint()
    if msg_type != CALL:
        raise NotACall(xid, f"message type {msg_type} is not a call")
    rpcvers = u.uint()
    if rpcvers != RPC_VERSION:
        raise NotACall(xid, f"RPC version {rpcvers} is not 2", rpc_mismatch=True)
    prog, vers, proc = u.uint(), u.uint(), u.uint()
    cred = _unpack_auth(u)
    verf = _unpack_auth(u)
    return RpcCall(xid, prog, vers, proc, cred, verf, u.remaining())


def accepted_reply(xid: int, stat: AcceptStat = AcceptStat.SUCCESS, results: bytes = b"", *,
                   mismatch: tuple[int, int] | None = None) -> bytes:
    """An accepted reply: SUCCESS with ``results``, or an error (PROG_MISMATCH carries the version range)."""
    p = Packer()
    p.uint(xid)
    p.uint(REPLY)
    p.uint(ReplyStat.MSG_ACCEPTED)
    _pack_auth(p, NULL_AUTH)
    p.uint(stat)
    if stat == AcceptStat.SUCCESS:
        p.raw(results)
    elif stat == AcceptStat.PROG_MISMATCH:
        low, high = mismatch or (0, 0)
        p.uint(low)
        p.uint(high)
    return bytes(p)


def denied_reply(xid: int, stat: RejectStat, *, auth_stat: AuthStat = AuthStat.AUTH_BADCRED) -> bytes:
    """A denied reply: RPC_MISMATCH (we speak version 2 only) or AUTH_ERROR with its reason."""
    p = Packer()
    p.uint(xid)
    p.uint(REPLY)
    p.uint(ReplyStat.MSG_DENIED)
    p.uint(stat)
    if stat == RejectStat.RPC_MISMATCH:
        p.uint(RPC_VERSION)
        p.uint(RPC_VERSION)
    else:
        p.uint(auth_stat)
    return bytes(p)


def decode_reply(message: bytes) -> RpcReply:
    u = Unpacker(message)
    xid = u.uint()
    if u.uint() != REPLY:
        raise XdrError("not a reply")
    reply_stat = ReplyStat(u.uint())
    if reply_stat == ReplyStat.MSG_DENIED:
        reject = RejectStat(u.uint())
        if reject == RejectStat.RPC_MISMATCH:
            return RpcReply(xid, reply_stat, reject_stat=reject, mismatch=(u.uint(), u.uint()))
        return RpcReply(xid, reply_stat, reject_stat=reject, auth_stat=AuthStat(u.uint()))
    verf = _unpack_auth(u)
    accept = AcceptStat(u.uint())
    if accept == AcceptStat.PROG_MISMATCH:
        return RpcReply(xid, reply_stat, accept, verf=verf, mismatch=(u.uint(), u.uint()))
    return RpcReply(xid, reply_stat, accept, verf=verf, results=u.remaining())


# --- TCP record marking (RFC 5531 §11) -------------------------------------------------------------------

_HEADER = struct.Struct(">I")
LAST_FRAGMENT = 0x80000000


def frame_record(message: bytes, fragment_size: int = 0x7FFFFFFF) -> bytes:
    """``message`` as one record: fragments of at most ``fragment_size`` bytes, the last one marked."""
    if len(message) <= fragment_size:  # the usual case: one fragment, one copy
        return b"".join((_HEADER.pack(LAST_FRAGMENT | len(message)), message))
    out = []
    chunks = [message[i:i + fragment_size] for i in range(0, len(message), fragment_size)]
    for index, chunk in enumerate(chunks):
        last = LAST_FRAGMENT if index == len(chunks) - 1 else 0
        out += [_HEADER.pack(last | len(chunk)), chunk]
    return b"".join(out)


class RecordTooLarge(XdrError):
    """A record longer than the reader accepts: the stream is garbage or hostile; close the connection."""


class RecordReader:
    """Reassembles records from a TCP byte stream: ``feed(data)`` returns the records completed so far."""

    def __init__(self, max_record: int = 8 * 1024 * 1024) -> None:
        self.max_record = max_record
        # Bytes arrive in pieces; they are joined once per fragment rather than appended to one growing
        # buffer, which copied every 1 MiB WRITE several times.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._fragment_length: int | None = None  # of the fragment being received, once its header is in
        self._last = False
        self._fragments: list[bytes] = []
        self._size = 0

    def _take(self, n: int) -> bytes:
        data = b"".join(self._pending)
        self._pending = [data[n:]] if len(data) > n else []
        self._pending_size -= n
        return data[:n]

    def feed(self, data: bytes) -> list[bytes]:
        if data:
            self._pending.append(data)
            self._pending_size += len(data)
        records: list[bytes] = []
        while True:
            if self._fragment_length is None:
                if self._pending_size < 4:
                    break
                (header,) = _HEADER.unpack(self._take(4))
                self._fragment_length = header & 0x7FFFFFFF
                self._last = bool(header & LAST_FRAGMENT)
                if self._size + self._fragment_length > self.max_record:
                    raise RecordTooLarge(f"record of more than {self.max_record} bytes")
            if self._pending_size < self._fragment_length:
                break
            self._fragments.append(self._take(self._fragment_length))
            self._size += self._fragment_length
            self._fragment_length = None
            if self._last:
                records.append(b"".join(self._fragments))
                self._fragments, self._size = [], 0
        return records
