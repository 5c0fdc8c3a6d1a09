"""Running one probe or lifecycle handler: ``httpGet``, ``tcpSocket``, ``exec`` (``pkg/probe``).

``httpGet`` sends ``GET`` to the pod's address (unless ``host`` says otherwise) with the kubelet's
``User-Agent: kube-probe/<version>``; any status from 200 to 399 succeeds (a redirect is not followed and
counts as success). ``tcpSocket`` succeeds when a connection opens. ``exec`` runs the command in the
container's environment and succeeds on exit code 0. Failures are described with the messages the real
kubelet's Go prober shows in ``Unhealthy`` events (``HTTP probe failed with statuscode: 503``,
``dial tcp 127.10.0.5:8080: connect: connection refused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Obj = dict[str, Any]
ExecRunner = Callable[[Sequence[str], float], Awaitable[tuple[int | None, bytes]]]

USER_AGENT = "kube-probe/1.33"


def resolve_port(port: Any, container: Obj) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"unable to find port {port!r} in container {container.get('name')}")


def _dial_error(host: str, port: int, err: OSError) -> str:
    reason = os.strerror(err.errno).lower() if err.errno else str(err)
    return f"dial tcp {host}:{port}: connect: {reason}"


async def http_get(action: Obj, *, pod_ip: str, container: Obj, timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    try:
        port = resolve_port(action.get("port"), container)
    except ValueError as err:
        return False, str(err)
    scheme = str(action.get("scheme") or "HTTP").lower()
    path = action.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"Host": f"{host}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*"}
    for header in action.get("httpHeaders") or []:
        headers[str(header.get("name"))] = str(header.get("value", ""))
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request += "Connection: close\r\n\r\n"
    context = None
    if scheme == "https":  # the kubelet does not verify probe certificates
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
            except OSError as err:
                return False, f'Get "{url}": {_dial_error(host, port, err)}'
            try:
                writer.write(request.encode())
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        return False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except (OSError, ssl.SSLError) as err:
        return False, f'Get "{url}": {err}'
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f'Get "{url}": malformed HTTP response {status_line[:40]!r}'
    code = int(parts[1])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def tcp_socket(action: Obj, *, pod_ip: str, container: Obj, timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    try:
        port = resolve_port(action.get("port"), container)
    except ValueError as err:
        return False, str(err)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return False, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as err:
        return False, _dial_error(host, port, err)
    writer.close()
    return True, ""


async def run(handler: Obj, *, pod_ip: str, container: Obj, timeout: float,
              run_exec: ExecRunner) -> tuple[bool, str]:
    """Run a probe or a lifecycle hook handler; returns (success, message)."""
    if handler.get("httpGet"):
        return await http_get(handler["httpGet"], pod_ip=pod_ip, container=container, timeout=timeout)
    if handler.get("tcpSocket"):
        return await tcp_socket(handler["tcpSocket"], pod_ip=pod_ip, container=container, timeout=timeout)
    if handler.get("exec"):
        command = list((handler["exec"] or {}).get("command") or [])
        if not command:
            return False, "exec handler without a command"
        code, output = await run_exec(command, timeout)
        text = output.decode(errors="replace").strip()
        if code is None:
            return False, f"command {command!r} timed out"
        return code == 0, text
    if handler.get("sleep"):
        await asyncio.sleep(float((handler["sleep"] or {}).get("seconds") or 0))
        return True, ""
    if handler.get("grpc"):
        return False, "grpc probes are not supported by the embedded lab's kubelet"
    return False, "the probe names no handler (httpGet, tcpSocket or exec)"
