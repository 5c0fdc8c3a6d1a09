"""HTTP/1.1 messages on asyncio streams, strict enough for a proxy that faces garbage.

Message syntax follows RFC 9112: a start line, header fields ``name: value`` (no whitespace before the colon,
no obsolete line folding: both are answered 400, §5.1/§5.2), an empty line, then a body framed by
``Transfer-Encoding: chunked`` or ``Content-Length`` (§6; both at once, or two different lengths, is a
request-smuggling vector and answered 400, §6.3). A request target is origin-form (``/path?q``) or, to a
forward proxy, absolute-form (``http://host:port/path``, §3.2.2), whose authority replaces ``Host``. Bodies
are read whole (the proxy must be able to replay a request for retries and mirrors, as Envoy buffers one).
The proxy's own limits mirror Envoy's: a head over 60 KiB is answered 431 (``max_request_headers_kb``, RFC
6585), a head that has not fully arrived ``header_timeout`` seconds after its first byte is answered 408
(``request_headers_timeout``, the slowloris defence), and an idle keep-alive connection is closed silently.
Hop-by-hop fields (RFC 9110 §7.6.1) are dropped when a message is forwarded; framing is rewritten.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_HEAD = 60 * 1024
MAX_BODY = 16 * 1024 * 1024
#: Fields that describe one connection, never forwarded (plus any the Connection field names).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "expect"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_REASONS = {100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

Headers = list[tuple[str, str]]


class HttpError(Exception):
    """The peer broke HTTP: answer ``status`` (when a request is being read) and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str  # as sent: origin-form or absolute-form
    version: str
    headers: Headers
    body: bytes = b""
    head_size: int = 0

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def keep_alive(self) -> bool:
        return keep_alive(self.version, self.headers)


@dataclass
class Response:
    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    version: str = "HTTP/1.1"
    reason: str = ""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


def header(headers: Headers, name: str) -> str | None:
    """All values of ``name`` joined with ``,`` (RFC 9110 §5.3), or None."""
    values = [v for k, v in headers if k.lower() == name]
    return ",".join(values) if values else None


def keep_alive(version: str, headers: Headers) -> bool:
    tokens = {t.strip().lower() for t in (header(headers, "connection") or "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def split_target(target: str) -> tuple[str | None, str]:
    """``http://a:1/p?q`` → (``a:1``, ``/p?q``); an origin-form target has no authority."""
    lowered = target[:8].lower()
    if lowered.startswith("http://") or lowered.startswith("https://"):
        rest = target.split("://", 1)[1]
        slash = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
        path = rest[slash:]
        return rest[:slash], path if path.startswith("/") else "/" + path
    return None, target


async def _read_head(reader: asyncio.StreamReader, idle_timeout: float | None, header_timeout: float) -> bytes | None:
    """The head up to its blank line; None on a clean close (or idle timeout) before any byte."""
    try:
        first = await asyncio.wait_for(reader.read(1), idle_timeout)
    except TimeoutError:
        return None
    if not first:
        return None
    try:
        rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), header_timeout)
    except TimeoutError:
        raise HttpError(408, "request headers not received in time") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request headers too large") from None
    except asyncio.IncompleteReadError as err:
        if len(err.partial) + 1 > MAX_HEAD:
            raise HttpError(431, "request headers too large") from None
        raise HttpError(400, "connection closed inside the request head") from None
    head = first + rest
    if len(head) > MAX_HEAD:
        raise HttpError(431, "request headers too large")
    return head


def _parse_fields(lines: list[bytes]) -> Headers:
    headers: Headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, f"malformed header field {line[:40]!r}")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise HttpError(400, "control characters in a header value")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return headers


def parse_request_head(head: bytes) -> Request:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or not _VERSION.fullmatch(parts[2]):
        raise HttpError(400, f"malformed request line {lines[0][:60]!r}")
    if any(c < 0x21 or c > 0x7E for c in parts[1]):
        raise HttpError(400, "invalid characters in the request target")
    method, target, version = (p.decode("ascii") for p in parts)
    return Request(method, target, version, _parse_fields(lines[1:]), head_size=len(head))


def _framing(headers: Headers) -> tuple[bool, int | None]:
    """(chunked, content length); refuses ambiguous framing."""
    encoding = header(headers, "transfer-encoding")
    length = header(headers, "content-length")
    if encoding is not None:
        if length is not None:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        if [t.strip().lower() for t in encoding.split(",")] != ["chunked"]:
            raise HttpError(501, f"transfer coding {encoding!r} is not supported")
        return True, None
    if length is None:
        return False, None
    values = {v.strip() for v in length.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise HttpError(400, f"invalid Content-Length {length!r}")
    return False, int(next(iter(values)))


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
            raise HttpError(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields are dropped
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise HttpError(413, "body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "chunk not followed by CRLF")


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, idle_timeout: float | None,
    header_timeout: float, max_body: int = MAX_BODY,
) -> Request | None:
    """The next request on a connection, body included; None when the client closed (or idled) cleanly."""
    head = await _read_head(reader, idle_timeout, header_timeout)
    if head is None:
        return None
    request = parse_request_head(head)
    chunked, length = _framing(request.headers)
    if (length or chunked) and "100-continue" in (request.header("expect") or "").lower():
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for this before sending the body
    try:
        if chunked:
            request.body = await _read_chunked(reader, max_body)
        elif length:
            if length > max_body:
                raise HttpError(413, "body too large")
            request.body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise HttpError(400, "connection closed inside the request body") from None
    return request


async def read_response(reader: asyncio.StreamReader, *, method: str) -> Response:
    """One response (a 1xx interim response is skipped); raises ``IncompleteReadError`` if the server left."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not _VERSION.fullmatch(version) or len(code) != 3 or not code.isdigit():
            raise HttpError(502, f"malformed status line {lines[0][:60]!r}")
        response = Response(int(code), _parse_fields(lines[1:]), version=version.decode(),
                            reason=reason.decode("latin-1"))
        if response.status >= 200:
            break
    if method == "HEAD" or response.status in (204, 304):
        return response
    chunked, length = _framing(response.headers)
    if chunked:
        response.body = await _read_chunked(reader, MAX_BODY)
    elif length is not None:
        response.body = await reader.readexactly(length)
    else:
        response.body = await reader.read(MAX_BODY)  # framed by the connection's end (RFC 9112 §6.3 item 8)
        response.headers.append(("connection", "close"))
    return response


def forwardable(headers: Headers) -> Headers:
    """``headers`` without hop-by-hop fields, including those the Connection field lists."""
    listed = {t.strip().lower() for t in (header(headers, "connection") or "").split(",") if t.strip()}
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in listed]


def _head_bytes(start: str, headers: Headers, body: bytes, *, with_length: bool) -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers)]
    if with_length:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_request(method: str, target: str, headers: Headers, body: bytes) -> bytes:
    with_length = bool(body) or method in ("POST", "PUT", "PATCH")
    return _head_bytes(f"{method} {target} HTTP/1.1", headers, body, with_length=with_length) + body


def encode_response(response: Response, *, method: str = "GET") -> bytes:
    status = response.status
    reason = response.reason or _REASONS.get(status, "")
    no_body = status in (204, 304) or 100 <= status < 200
    head = _head_bytes(f"HTTP/1.1 {status} {reason}", response.headers, response.body, with_length=not no_body)
    return head if method == "HEAD" or no_body else head + response.body


def error_response(status: int, message: str) -> bytes:
    body = (message + "\n").encode()
    headers = [("content-type", "text/plain"), ("connection", "close")]
    return encode_response(Response(status, headers, body))
