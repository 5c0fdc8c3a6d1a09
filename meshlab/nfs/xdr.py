"""XDR, the External Data Representation (RFC 4506) that ONC RPC and NFS put on the wire.

Everything is big-endian and padded to 4-byte units: ``int``/``unsigned int`` are 4 bytes, ``hyper`` 8,
``bool`` is an int (0 or 1), fixed opaque data is padded with zeros to a multiple of 4, variable-length
opaque data and strings carry a 4-byte length first, optional data (``*T``) is a bool followed by the value
when true, and arrays carry a count. XDR is not self-describing: both sides must agree on the types, so a
decoder can only check lengths and bounds — which is exactly where hostile or corrupt input shows up. The
:class:`Unpacker` raises :class:`XdrError` on truncated data, oversized lengths and non-zero padding, and
never reads past its buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class XdrError(ValueError):
    """Bytes that do not decode as the expected XDR type (truncated, too long, bad padding)."""


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


class Packer:
    """Appends XDR-encoded values to a buffer; ``bytes()`` gives the result."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)

    def raw(self, data: bytes) -> None:
        """Bytes already in XDR (an encoded sub-structure)."""
        self._parts.append(data)

    def uint(self, value: int) -> None:
        self._parts.append(_U32.pack(value))

    def int32(self, value: int) -> None:
        self._parts.append(_I32.pack(value))

    def uhyper(self, value: int) -> None:
        self._parts.append(_U64.pack(value))

    def hyper(self, value: int) -> None:
        self._parts.append(_I64.pack(value))

    def boolean(self, value: bool) -> None:
        self._parts.append(_U32.pack(1 if value else 0))

    def fixed_opaque(self, data: bytes, size: int) -> None:
        if len(data) != size:
            raise XdrError(f"fixed opaque needs {size} bytes, got {len(data)}")
        self._parts.append(data)
        if size % 4:
            self._parts.append(b"\0" * _pad(size))

    def opaque(self, data: bytes, max_size: int | None = None) -> None:
        if max_size is not None and len(data) > max_size:
            raise XdrError(f"opaque of {len(data)} bytes exceeds its limit of {max_size}")
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(data)  # not data + padding: that would copy a 1 MiB READ once more
        if len(data) % 4:
            self._parts.append(b"\0" * _pad(len(data)))

    def string(self, text: str | bytes, max_size: int | None = None) -> None:
        # NFS names are bytes on the wire; UTF-8 is the convention, surrogateescape keeps any byte.
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
        self.opaque(data, max_size)

    def optional(self, value: T | None, pack: Callable[[T], None]) -> None:
        self.boolean(value is not None)
        if value is not None:
            pack(value)

    def array(self, values: list[T], pack: Callable[[T], None], max_size: int | None = None) -> None:
        if max_size is not None and len(values) > max_size:
            raise XdrError(f"array of {len(values)} items exceeds its limit of {max_size}")
        self.uint(len(values))
        for value in values:
            pack(value)


class Unpacker:
    """Reads XDR values from ``data`` in order; ``done()`` checks that nothing is left over."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._data = memoryview(data)
        self._pos = offset

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> bytes:
        return bytes(self._data[self._pos:])

    def _take(self, n: int) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise XdrError(f"truncated: need {n} bytes at offset {self._pos}, have {len(self._data) - self._pos}")
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def done(self) -> None:
        if self._pos != len(self._data):
            raise XdrError(f"{len(self._data) - self._pos} unexpected bytes after the value")

    def uint(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def int32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def uhyper(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def hyper(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def boolean(self) -> bool:
        value = self.uint()
        if value > 1:
            raise XdrError(f"bool must be 0 or 1, got {value}")
        return value == 1

    def fixed_opaque(self, size: int) -> bytes:
        data = bytes(self._take(size))
        if any(self._take(_pad(size))):
            raise XdrError("non-zero padding")
        return data

    def opaque(self, max_size: int | None = None) -> bytes:
        size = self.uint()
        if max_size is not None and size > max_size:
            raise XdrError(f"opaque of {size} bytes exceeds its limit of {max_size}")
        return self.fixed_opaque(size)

    def string(self, max_size: int | None = None) -> str:
        return self.opaque(max_size).decode("utf-8", "surrogateescape")

    def optional(self, unpack: Callable[[], T]) -> T | None:
        return unpack() if self.boolean() else None

    def array(self, unpack: Callable[[], T], max_size: int | None = None) -> list[T]:
        count = self.uint()
        if max_size is not None and count > max_size:
            raise XdrError(f"array of {count} items exceeds its limit of {max_size}")
        # Each item takes at least 4 bytes: a huge count in a short buffer is garbage, not a reason to loop.
        if count * 4 > len(self._data) - self._pos:
            raise XdrError(f"array of {count} items cannot fit in {len(self._data) - self._pos} bytes")
        return [unpack() for _ in range(count)]
