"""Inbound connections as Envoy's listener takes them: accept, inspect, choose a filter chain, maybe TLS.

Envoy's ``tls_inspector`` listener filter peeks at the first bytes of a new connection without consuming
them and sets the transport protocol to ``tls`` when they are a TLS ClientHello, ``raw_buffer`` otherwise;
the filter-chain match then picks the chain for (destination port, transport protocol) — which is how one
port serves plaintext and mTLS at once in Istio's PERMISSIVE mode — and a connection no chain matches is
closed. asyncio's servers read from a socket as soon as it is accepted, so this module accepts itself:
:class:`InboundServer` accepts, :func:`peek` waits for the first byte and reads it with ``MSG_PEEK``
(left in the kernel's buffer), and :func:`streams` hands the untouched socket to asyncio — wrapped in the
chain's TLS context when it has one, so the handshake sees the ClientHello from its first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

from meshlab.mesh.proxy import http1

LIMIT = http1.MAX_HEAD + 1024


class InboundServer:
    """A listening socket whose accepted connections go to ``handle(sock)``; ``close()`` stops accepting."""

    def __init__(self, sock: socket.socket, handle: Callable[[socket.socket], Awaitable[None]]) -> None:
        self.sock = sock
        self._handle = handle
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = asyncio.ensure_future(self._accept())

    @classmethod
    async def listen(cls, host: str, port: int, handle: Callable[[socket.socket], Awaitable[None]]) -> InboundServer:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(sock, handle)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except (OSError, asyncio.CancelledError):
                return
            conn.setblocking(False)
            task = asyncio.ensure_future(self._handle(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._accepting.cancel()
        with contextlib.suppress(OSError):
            self.sock.close()


async def peek(sock: socket.socket, timeout: float) -> bytes:
    """The connection's first byte, left unread (b"" if the peer closed or sent nothing in time)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), readable)
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        return b""
    finally:
        loop.remove_reader(sock.fileno())
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, OSError):
        return b""


async def streams(sock: socket.socket, context: ssl.SSLContext | None, *, handshake_timeout: float
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over an accepted socket, with a server-side TLS handshake when ``context`` is given
    (handshake errors raise: ``ssl.SSLError``, ``ConnectionError``, ``TimeoutError``)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    if context is None:
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    else:
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=context,
                                                          ssl_handshake_timeout=handshake_timeout)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
