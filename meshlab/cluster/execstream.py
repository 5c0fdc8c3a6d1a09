"""``kubectl exec`` over WebSocket: the Kubernetes remote-command channel protocol.

The client upgrades ``GET .../pods/<name>/exec?command=...&stdin=true&stdout=true&stderr=true`` with the
subprotocol ``v5.channel.k8s.io`` (or ``v4.channel.k8s.io``). Every binary frame starts with a channel byte:
0 stdin, 1 stdout, 2 stderr, 3 error (one JSON ``Status`` when the command ends: Success, or Failure with
reason ``NonZeroExitCode`` and the exit code as a cause), 4 terminal resize. Version 5 adds channel 255,
"close": ``[255, 0]`` from the client means its stdin has ended (see KEP-4006).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from meshlab.cluster.podio import ExecProcess

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exit_status(code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


async def bridge(ws: web.WebSocketResponse, proc: ExecProcess) -> None:
    """Move bytes between the WebSocket and the process until it exits; then report its status."""

    async def pump(reader: asyncio.StreamReader | None, channel: int) -> None:
        if reader is None:
            return
        while chunk := await reader.read(32768):
            await ws.send_bytes(bytes([channel]) + chunk)

    async def from_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN:
                await proc.write_stdin(payload)
            elif channel == RESIZE:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    size = json.loads(payload)
                    proc.resize(int(size["Width"]), int(size["Height"]))
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                await proc.close_stdin()
        # The client went away: nobody will read the output any more.
        proc.kill()

    reader_task = asyncio.create_task(from_client())
    try:
        await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
        code = await proc.wait()
        await ws.send_bytes(bytes([ERROR]) + json.dumps(exit_status(code)).encode())
    except (ConnectionResetError, RuntimeError):
        proc.kill()
    finally:
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader_task
        await ws.close()
