"""The NFS server's socket shell: asyncio TCP, record marking, one :class:`Dispatcher` for every connection.

All protocol work happens in :mod:`~meshlab.storage.nfsd.dispatch`; this module only moves records. Each
connection reassembles RPC records (RFC 5531 §11) and answers them in order. A connection that sends an
oversized record or bytes that are not RPC is closed; the others carry on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshlab.nfs.rpc import RecordReader, RecordTooLarge, frame_record
from meshlab.storage.nfsd.dispatch import Dispatcher
from meshlab.storage.nfsd.filesystem import Filesystem
from meshlab.storage.nfsd.handles import HandleIndex, load_secret

log = logging.getLogger(__name__)

EXPORT_PATH = "/export"


@dataclass
class NfsServer:
    """A listening server; ``port`` is the one actually bound (useful when 0 was asked)."""

    server: asyncio.Server
    dispatcher: Dispatcher
    host: str
    port: int
    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Stop listening and close every client connection (each handler then ends normally)."""
        self.server.close()
        for writer in list(self.connections.values()):
            writer.close()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)
        await self.server.wait_closed()


async def serve_nfs(*, export_dir: Path, state_dir: Path, host: str, port: int,
                    export_path: str = EXPORT_PATH, on_event: Callable[[str], None] | None = None) -> NfsServer:
    """Start serving ``export_dir`` as ``export_path`` (NFSv3 + MOUNTv3 + GETPORT on one TCP port)."""
    index = HandleIndex(export_dir, load_secret(state_dir))
    dispatcher = Dispatcher(Filesystem(index), export_path, port, on_event)
    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) else str(peer)
        records = RecordReader()
        task = asyncio.current_task()
        if task is not None:
            connections[task] = writer
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                for record in records.feed(data):
                    reply = dispatcher.handle(record, client)
                    if reply is None:
                        log.info("nfs-server: closing %s: not an RPC call", client)
                        return
                    writer.write(frame_record(reply))
                await writer.drain()
        except RecordTooLarge as err:
            log.info("nfs-server: closing %s: %s", client, err)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                connections.pop(task, None)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    server = await asyncio.start_server(connection, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    dispatcher.port = bound
    return NfsServer(server, dispatcher, host, bound, connections)
