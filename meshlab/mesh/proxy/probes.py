"""istio-agent's status port (15020): the kubelet's rewritten HTTP probes, answered by probing the app directly.

With mTLS a kubelet probe cannot pass through the sidecar's inbound port (STRICT refuses plaintext), so Istio's
injector rewrites each app ``httpGet`` probe to ``<pod IP>:15020/app-health/<container>/readyz`` (``livez``,
``startupz``) and gives the agent the originals as JSON in ``ISTIO_KUBE_APP_PROBERS``
(https://istio.io/latest/docs/ops/configuration/mesh/app-health-check/). The agent makes the original request
to the app itself — never through the inbound listener — and answers with its status (a failure to connect or
a timeout is 503); ``/healthz/ready`` is the sidecar's own readiness.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from meshlab.errors import XdsError
from meshlab.mesh.proxy import http1

log = logging.getLogger(__name__)
STATUS_PORT = 15020


def parse_probers(text: str) -> dict[str, dict[str, Any]]:
    """``ISTIO_KUBE_APP_PROBERS``: ``{"/app-health/<c>/readyz": {"httpGet": {...}, "timeoutSeconds": 1}}``."""
    if not text:
        return {}
    try:
        probers = json.loads(text)
    except json.JSONDecodeError as err:
        raise XdsError(f"ISTIO_KUBE_APP_PROBERS is not JSON: {err}") from err
    if not isinstance(probers, dict) or not all(isinstance(v, dict) and "httpGet" in v for v in probers.values()):
        raise XdsError("ISTIO_KUBE_APP_PROBERS must map paths to probes with an httpGet")
    return probers


async def probe_app(host: str, prober: Mapping[str, Any]) -> int:
    """The app's answer to the original probe (its status), or 503 when it cannot be reached in time."""
    get = prober["httpGet"]
    timeout = float(prober.get("timeoutSeconds") or 1)
    headers = [("host", f"{host}:{get['port']}"), ("user-agent", "kube-probe/1.33"), ("connection", "close")]
    headers += [(str(h["name"]), str(h["value"])) for h in get.get("httpHeaders") or ()]

    async def exchange() -> int:
        reader, writer = await asyncio.open_connection(host, int(get["port"]), limit=http1.MAX_HEAD + 1024)
        try:
            writer.write(http1.encode_request("GET", str(get.get("path") or "/"), headers, b""))
            await writer.drain()
            return (await http1.read_response(reader, method="GET")).status
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, http1.HttpError) as err:
        log.info("app probe %s:%s%s failed: %s", host, get["port"], get.get("path"), err or type(err).__name__)
        return 503


async def serve_status(host: str, probers: Mapping[str, Mapping[str, Any]], app_host: str,
                       ready: Callable[[], bool], *, port: int = STATUS_PORT) -> asyncio.Server:
    """The status listener: ``/app-health/...`` probes the app at ``app_host``; ``/healthz/ready``."""
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await http1.read_request(reader, writer, idle_timeout=30, header_timeout=10)
            if request is None:
                return
            path = http1.split_target(request.target)[1].split("?", 1)[0]
            if path == "/healthz/ready":
                status = 200 if ready() else 503
            elif path in probers:
                status = await probe_app(app_host, probers[path])
            else:
                status = 404
            response = http1.Response(status, [("content-type", "text/plain"), ("connection", "close")], b"")
            writer.write(http1.encode_response(response, method=request.method))
            await writer.drain()
        except (http1.HttpError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port, limit=http1.MAX_HEAD + 1024)
