"""XDR and ONC RPC: values survive a round trip, and malformed bytes are refused rather than misread."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlab.nfs import rpc
from meshlab.nfs.rpc import AcceptStat, AuthStat, AuthSys, RejectStat, RpcCall
from meshlab.nfs.xdr import Packer, Unpacker, XdrError

u32 = st.integers(0, 2**32 - 1)


@given(st.lists(st.tuples(u32, st.integers(-(2**63), 2**63 - 1), st.binary(max_size=40), st.text(max_size=20),
                          st.booleans())))
def test_xdr_values_round_trip(values: list[tuple[int, int, bytes, str, bool]]) -> None:
    p = Packer()
    for number, big, blob, text, flag in values:
        p.uint(number)
        p.hyper(big)
        p.opaque(blob)
        p.string(text)
        p.boolean(flag)
    data = bytes(p)
    assert len(data) % 4 == 0
    u = Unpacker(data)
    assert [(u.uint(), u.hyper(), u.opaque(), u.string(), u.boolean()) for _ in values] == values
    u.done()


@pytest.mark.parametrize(("data", "read", "message"), [
    (b"\x00\x00", lambda u: u.uint(), "truncated"),
    (b"\x00\x00\x00\x05abc", lambda u: u.opaque(), "truncated"),
    (b"\x00\x00\x00\x01a\x01\x00\x00", lambda u: u.opaque(), "padding"),
    (b"\x00\x00\x00\x02", lambda u: u.boolean(), "bool"),
    (b"\x00\x00\x01\x00" + b"x" * 256, lambda u: u.opaque(64), "limit"),
    (b"\xff\xff\xff\xff", lambda u: u.array(u.uint), "cannot fit"),
], ids=["short-uint", "short-opaque", "nonzero-padding", "bool-2", "opaque-over-limit", "huge-array-count"])
def test_xdr_refuses_malformed_input(data: bytes, read: object, message: str) -> None:
    with pytest.raises(XdrError, match=message):
        read(Unpacker(data))  # type: ignore[operator]


calls = st.builds(
    RpcCall, xid=u32, prog=u32, vers=u32, proc=u32,
    cred=st.one_of(st.just(rpc.NULL_AUTH),
                   st.builds(lambda a: a.as_auth(), st.builds(
                       AuthSys, stamp=u32, machinename=st.text(max_size=30), uid=u32, gid=u32,
                       gids=st.lists(u32, max_size=16).map(tuple)))),
    verf=st.just(rpc.NULL_AUTH),
    args=st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4]),
)


@given(calls)
def test_rpc_call_round_trips_and_keeps_its_credential(call: RpcCall) -> None:
    decoded = rpc.decode_call(rpc.encode_call(call))
    assert decoded == call
    if call.cred.flavor == rpc.AuthFlavor.AUTH_SYS:
        assert decoded.auth_sys() == AuthSys.decode(call.cred.body)


@given(st.binary(max_size=3000), st.integers(1, 700), st.integers(1, 500))
def test_record_marking_reassembles_any_fragmentation(message: bytes, fragment: int, chunk: int) -> None:
    stream = rpc.frame_record(message, fragment) + rpc.frame_record(b"next")
    reader = rpc.RecordReader()
    records = []
    for start in range(0, len(stream), chunk):
        records += reader.feed(stream[start:start + chunk])
    assert records == [message, b"next"]


def test_record_reader_refuses_a_giant_record() -> None:
    with pytest.raises(rpc.RecordTooLarge):
        rpc.RecordReader(max_record=1024).feed(b"\x80\x10\x00\x00")


@pytest.mark.parametrize(("reply", "expect"), [
    (rpc.accepted_reply(7, results=b"\0\0\0\1"), (AcceptStat.SUCCESS, None, b"\0\0\0\1")),
    (rpc.accepted_reply(7, AcceptStat.PROG_MISMATCH, mismatch=(3, 3)), (AcceptStat.PROG_MISMATCH, None, b"")),
    (rpc.accepted_reply(7, AcceptStat.GARBAGE_ARGS), (AcceptStat.GARBAGE_ARGS, None, b"")),
    (rpc.denied_reply(7, RejectStat.AUTH_ERROR, auth_stat=AuthStat.AUTH_TOOWEAK), (None, AuthStat.AUTH_TOOWEAK, b"")),
], ids=["success", "prog-mismatch", "garbage-args", "auth-tooweak"])
def test_replies_decode_to_what_was_encoded(reply: bytes, expect: tuple[object, object, bytes]) -> None:
    decoded = rpc.decode_reply(reply)
    assert decoded.xid == 7
    assert (decoded.accept_stat, decoded.auth_stat, decoded.results) == expect


@pytest.mark.parametrize(("message", "error"), [
    (b"\0\0\0\1\0\0\0\1", "not a call"),
    (b"\0\0\0\1\0\0\0\0\0\0\0\3", "version 3"),
    (b"\0\0\0\1\0\0\0\0\0\0\0\2\0\0", "truncated"),
], ids=["a-reply", "rpc-v3", "truncated-header"])
def test_decode_call_refuses_non_calls(message: bytes, error: str) -> None:
    with pytest.raises(XdrError, match=error):
        rpc.decode_call(message)


def test_auth_sys_with_seventeen_groups_is_refused() -> None:
    body = AuthSys(gids=tuple(range(16))).encode()
    too_many = body[:-4 * 17] + (17).to_bytes(4, "big") + body[-4 * 16:] + b"\0\0\0\0"
    with pytest.raises(XdrError, match="limit"):
        AuthSys.decode(too_many)
