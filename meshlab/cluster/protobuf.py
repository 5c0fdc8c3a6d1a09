"""Decode the protobuf request bodies kubectl 1.32+ sends into the JSON form of the object.

Since 1.32, kubectl encodes the objects its imperative commands build (``create namespace|configmap|
secret|deployment|...``, ``auth can-i``, ``create token``) with the Kubernetes protobuf serializer
(``Content-Type: application/vnd.kubernetes.protobuf``) and has no JSON fallback. The body is the 4-byte
magic ``k8s\\x00`` and a ``runtime.Unknown`` message: ``typeMeta`` = 1 (``apiVersion`` = 1, ``kind`` = 2),
``raw`` = 2 (the object, a message from k8s.io/api ``generated.proto``), ``contentEncoding`` = 3,
``contentType`` = 4 (https://kubernetes.io/docs/reference/using-api/api-concepts/#protobuf-encoding).
Protobuf's wire format (https://protobuf.dev/programming-guides/encoding/) is a run of keys
``field_number << 3 | wire_type``, each followed by a varint (0), 8 bytes (1), a length-prefixed byte string
(2: strings, bytes, nested messages, map entries) or 4 bytes (5). Nothing on the wire names a field, so the
descriptors in :mod:`meshlab.cluster.protobuf_schema` say what each number means; unknown numbers are
skipped, as protobuf readers must, so newer clients still decode. The JSON produced is what the Go
apiserver would produce from the same bytes: zero values of ``omitempty`` fields dropped, pointer fields
kept when present, ``Time`` as RFC 3339, ``bytes`` as base64. Malformed bodies raise
:class:`~meshlab.errors.BadRequest`, kinds without a descriptor :class:`~meshlab.errors.UnsupportedMediaType`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from meshlab import errors
from meshlab.cluster import protobuf_schema

__all__ = ["MAGIC", "MEDIA_TYPE", "Schema", "decode", "is_protobuf"]

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_MAX_FIELD_NUMBER = (1 << 29) - 1

SCALARS = frozenset({"string", "int", "bool", "bytes"})
# Types whose JSON form is not an object of their fields (apimachinery's custom marshallers).
SPECIALS = frozenset({"Time", "Quantity", "IntOrString", "FieldsV1", "StringList"})


class Presence(Enum):
    """When a decoded scalar appears in the JSON (see the notation in ``protobuf_schema``)."""

    OMIT_ZERO = ""  # Go value field with omitempty
    KEEP = "?"  # Go pointer field: present means set, even to zero
    ALWAYS = "!"  # required field: zero values are shown


@dataclass(frozen=True)
class Field:
    number: int
    name: str  # the JSON name; INLINE for a Go embedded struct
    type: str  # a scalar, a special, or a qualified message name such as "core.v1.PodSpec"
    repeated: bool = False
    map: bool = False
    presence: Presence = Presence.OMIT_ZERO


@dataclass(frozen=True)
class Message:
    name: str
    fields: dict[int, Field]  # in Go struct order, which is the Go JSON order


INLINE = "..."
_ZERO: dict[str, Any] = {"string": "", "int": 0, "bool": False, "bytes": ""}
_FIELD = re.compile(r"(\d+) ([A-Za-z]\w*|\.\.\.)(?::(\[\S+\]|\{\S+\}|[\w.]+))?([?!]?)(?=\s|$)")


def parse_schema(text: str) -> dict[str, Message]:
    """Read the descriptor notation of ``protobuf_schema.SCHEMA`` into messages keyed by qualified name."""
    entries: list[tuple[str, str, list[str]]] = []  # (package, message, field tokens text)
    package = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("package "):
            package = line.split()[1]
        elif not line[0].isspace():
            name, _, rest = line.partition(" ")
            entries.append((package, name, [rest]))
        else:
            entries[-1][2].append(line)
    raw: dict[str, tuple[str, list[tuple[int, str, str, str]]]] = {}
    for package, name, lines in entries:
        if f"{package}.{name}" in raw:
            raise ValueError(f"schema: {package}.{name} is described twice")
        text_fields = " ".join(lines)
        if _FIELD.sub("", text_fields).strip():
            raise ValueError(f"schema: cannot read {package}.{name}: {text_fields!r}")
        raw[f"{package}.{name}"] = (package, [
            (int(m[1]), m[2], m[3] or "string", m[4]) for m in _FIELD.finditer(text_fields)
        ])
    messages: dict[str, Message] = {}
    for qualified, (package, specs) in raw.items():
        fields: dict[int, Field] = {}
        for number, name, type_text, flag in specs:
            repeated, is_map = type_text.startswith("["), type_text.startswith("{")
            type_name = type_text.strip("[]{}")
            if type_name not in SCALARS and type_name not in SPECIALS:
                local = f"{package}.{type_name}"
                type_name = local if local in raw else type_name
                if type_name not in raw:
                    raise ValueError(f"schema: {qualified}.{name} names unknown type {type_text}")
            if number in fields:
                raise ValueError(f"schema: {qualified} uses field number {number} twice")
            fields[number] = Field(number, name, type_name, repeated and not is_map, is_map, Presence(flag))
        messages[qualified] = Message(qualified, fields)
    return messages


def is_protobuf(body: bytes, content_type: str | None) -> bool:
    """Whether a request body is Kubernetes protobuf: by its media type, or by its magic when untyped."""
    if content_type:
        return content_type.split(";", 1)[0].strip().lower() == MEDIA_TYPE
    return body.startswith(MAGIC)


def decode(body: bytes) -> dict[str, Any]:
    """The object a ``k8s\\x00`` + ``runtime.Unknown`` body carries, as the API's JSON form (a dict)."""
    if not body.startswith(MAGIC):
        raise errors.BadRequest("protobuf body does not start with the k8s\\x00 magic")
    api_version = kind = encoding = ""
    raw = b""
    for number, wire, value in _fields(body[len(MAGIC):]):
        if number == 1:
            for inner, inner_wire, inner_value in _fields(_bytes(value, wire, "Unknown.typeMeta")):
                if inner in (1, 2):
                    text = _text(inner_value, inner_wire, "TypeMeta")
                    api_version, kind = (text, kind) if inner == 1 else (api_version, text)
        elif number == 2:
            raw = _bytes(value, wire, "Unknown.raw")
        elif number == 3:
            encoding = _text(value, wire, "Unknown.contentEncoding")
    if encoding:
        raise errors.UnsupportedMediaType(f"protobuf content encoding {encoding!r} is not supported")
    if not kind or not api_version:
        raise errors.BadRequest("protobuf body names no apiVersion and kind")
    body_fields = KUBERNETES.decode_message(raw, _type_of(api_version, kind))
    return {"apiVersion": api_version, "kind": kind, **body_fields}


def _type_of(api_version: str, kind: str) -> str:
    package = protobuf_schema.PACKAGES.get(api_version)
    for candidate in (package, "meta.v1"):
        if candidate and kind in protobuf_schema.KINDS.get(candidate, ()):
            return f"{candidate}.{kind}"
    raise errors.UnsupportedMediaType(
        f"cannot decode {kind} ({api_version}) from protobuf: send it as application/json"
    )


# --- the wire format ---------------------------------------------------------------------------------


def _malformed(why: str) -> errors.ApiError:
    return errors.BadRequest(f"malformed protobuf body: {why}")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos
        shift += 7
        if shift >= 70:
            raise _malformed("varint longer than 10 bytes")
    raise _malformed("truncated varint")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field: an int for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if not 0 < number <= _MAX_FIELD_NUMBER:
            raise _malformed(f"invalid field number {number}")
        value: int | bytes
        if wire == VARINT:
            value, pos = _varint(data, pos)
        elif wire in (FIXED64, FIXED32, LENGTH_DELIMITED):
            if wire == LENGTH_DELIMITED:
                size, pos = _varint(data, pos)
            else:
                size = 8 if wire == FIXED64 else 4
            if pos + size > len(data):
                raise _malformed(f"field {number} runs past the end of its message")
            value, pos = data[pos:pos + size], pos + size
        else:  # 3 and 4 are proto2 groups, which Kubernetes never uses; 6 and 7 do not exist
            raise _malformed(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value


def _signed(value: int) -> int:
    """Varints carry int32/int64 as two's complement in 64 bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _bytes(value: int | bytes, wire: int, where: str) -> bytes:
    if wire != LENGTH_DELIMITED or isinstance(value, int):
        raise _malformed(f"{where} arrived with wire type {wire}, expected {LENGTH_DELIMITED}")
    return value


def _text(value: int | bytes, wire: int, where: str) -> str:
    # Go does not check proto2 strings and its JSON encoder replaces invalid UTF-8: do the same.
    return _bytes(value, wire, where).decode("utf-8", "replace")


def _integer(value: int | bytes, wire: int, where: str) -> int:
    if wire != VARINT or not isinstance(value, int):
        raise _malformed(f"{where} arrived with wire type {wire}, expected {VARINT}")
    return _signed(value)


# --- messages to JSON --------------------------------------------------------------------------------


class Schema:
    """Decodes messages described in the notation of ``protobuf_schema`` (see :func:`parse_schema`)."""

    def __init__(self, text: str) -> None:
        self.messages = parse_schema(text)

    def decode_message(self, data: bytes, type_name: str) -> dict[str, Any]:
        """One message's bytes (no magic, no envelope) as its JSON form."""
        message = self.messages[type_name]
        occurrences: dict[int, list[tuple[int, int | bytes]]] = {}
        for number, wire, value in _fields(data):
            if number in message.fields:  # unknown numbers: a newer client's fields, skipped
                occurrences.setdefault(number, []).append((wire, value))
        out: dict[str, Any] = {}
        for field in message.fields.values():
            where = f"{message.name}.{field.name} (field {field.number})"
            found = occurrences.get(field.number)
            if found is None:
                if field.presence is Presence.ALWAYS and field.type in _ZERO:
                    out[field.name] = _ZERO[field.type]
                continue
            if field.map:
                out[field.name] = dict(self._map_entry(value, wire, field, where) for wire, value in found)
            elif field.repeated:
                out[field.name] = [i for wire, value in found for i in self._items(value, wire, field, where)]
            elif field.type in SCALARS:
                wire, value = found[-1]  # a scalar given twice: the last one wins
                decoded = _scalar(field.type, value, wire, where)
                if decoded or field.presence is not Presence.OMIT_ZERO:
                    out[field.name] = decoded
            else:  # a message given twice is merged, which is what decoding the concatenation does
                decoded = self._typed(field.type, b"".join(_bytes(v, w, where) for w, v in found), where)
                if field.name == INLINE:
                    out.update(decoded)
                else:
                    out[field.name] = decoded
        return out

    def _items(self, value: int | bytes, wire: int, field: Field, where: str) -> list[Any]:
        if field.type in ("int", "bool") and wire == LENGTH_DELIMITED and isinstance(value, bytes):
            # A packed run of varints (proto3 style); go-to-protobuf writes a key per item, both are valid.
            items, pos = [], 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                items.append(_scalar(field.type, item, VARINT, where))
            return items
        if field.type in SCALARS:
            return [_scalar(field.type, value, wire, where)]
        return [self._typed(field.type, _bytes(value, wire, where), where)]

    def _map_entry(self, value: int | bytes, wire: int, field: Field, where: str) -> tuple[str, Any]:
        """Maps travel as repeated ``{key = 1, value = 2}`` messages; a missing part is its zero value."""
        key, item, item_wire = "", None, LENGTH_DELIMITED
        for number, entry_wire, entry_value in _fields(_bytes(value, wire, where)):
            if number == 1:
                key = _text(entry_value, entry_wire, where + " key")
            elif number == 2:
                item, item_wire = entry_value, entry_wire
        if field.type in SCALARS:
            return key, _ZERO[field.type] if item is None else _scalar(field.type, item, item_wire, where)
        return key, self._typed(field.type, b"" if item is None else _bytes(item, item_wire, where), where)

    def _typed(self, type_name: str, payload: bytes, where: str) -> Any:
        """A message, or a special type in its JSON form."""
        if type_name == "Time":
            return _time(payload, where)
        if type_name == "Quantity":  # {string = 1}: the canonical string; the zero Quantity prints as "0"
            return _small(payload, {1: "string"}, where)[1] or "0"
        if type_name == "IntOrString":  # {type = 1 (0 int, 1 string), intVal = 2, strVal = 3}
            kind, int_value, str_value = _small(payload, {1: "int", 2: "int", 3: "string"}, where).values()
            if kind not in (0, 1):
                raise _malformed(f"{where} has IntOrString type {kind}, expected 0 (int) or 1 (string)")
            return str_value if kind == 1 else int_value
        if type_name == "FieldsV1":  # {Raw = 1}: the managed-fields JSON document itself
            raw = _small(payload, {1: "raw"}, where)[1]
            try:
                return json.loads(raw) if raw else None
            except (ValueError, RecursionError) as err:
                raise _malformed(f"{where} does not hold JSON") from err
        if type_name == "StringList":  # {items = 1 repeated}
            return [_text(value, wire, where) for number, wire, value in _fields(payload) if number == 1]
        return self.decode_message(payload, type_name)


def _scalar(type_name: str, value: int | bytes, wire: int, where: str) -> Any:
    if type_name == "string":
        return _text(value, wire, where)
    if type_name == "bytes":
        return base64.b64encode(_bytes(value, wire, where)).decode("ascii")
    number = _integer(value, wire, where)
    return number != 0 if type_name == "bool" else number


def _small(payload: bytes, types: dict[int, str], where: str) -> dict[int, Any]:
    """The scalars of a small fixed message, by field number, zero when absent ("raw": undecoded bytes)."""
    values: dict[int, Any] = {number: b"" if kind == "raw" else _ZERO[kind] for number, kind in types.items()}
    for number, wire, value in _fields(payload):
        kind = types.get(number)
        if kind == "raw":
            values[number] = _bytes(value, wire, where)
        elif kind is not None:
            values[number] = _scalar(kind, value, wire, where)
    return values


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(payload: bytes, where: str) -> str | None:
    """metav1.Time {seconds = 1, nanos = 2} -> RFC 3339 in UTC, to the second; empty (zero time) -> null."""
    if not payload:
        return None
    seconds, nanos = _small(payload, {1: "int", 2: "int"}, where).values()
    try:
        moment = _EPOCH + timedelta(seconds=seconds + nanos // 1_000_000_000)
    except OverflowError as err:
        raise _malformed(f"{where} holds a time out of range") from err
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z")


# Parsed once, at import: a typo in the table fails loudly here rather than on some request.
KUBERNETES = Schema(protobuf_schema.SCHEMA)
