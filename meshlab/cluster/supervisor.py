"""The lab supervisor: one background process per embedded lab, holding the apiserver and its controllers.

``meshlab cluster up`` starts ``python -m meshlab.cluster.supervisor serve <state dir>`` detached, waits
for ``/readyz``, and leaves it running; ``down`` sends SIGTERM (the supervisor stops its parts in reverse
order and exits) and SIGKILL only if it does not. Parts plug in as :class:`Part` objects with ``start`` and
``stop`` — the kubelet and the other controllers of the lab runtime join the same list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.controllers import lab_controllers
from meshlab.cluster.controllers.namespaces import NamespaceController
from meshlab.cluster.kind_hooks import ClusterIPs, CrdServing, establish_crd
from meshlab.cluster.kube_proxy import KubeProxy
from meshlab.cluster.kubelet.kubelet import Kubelet, isolation_report
from meshlab.cluster.labdir import LabDir
from meshlab.cluster.pki import ensure_pki
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.cluster.store import HISTORY, Store
from meshlab.errors import AlreadyExists, LabError

log = logging.getLogger("meshlab.supervisor")

DEFAULT_PORT = 6443
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Part(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...


async def bootstrap(rest: RestStorage, port: int) -> None:
    """The objects every cluster has: system namespaces and the ``kubernetes`` Service."""
    opts = WriteOptions(user={"username": "system:apiserver", "groups": ["system:masters"]})
    ns_rt = rest.registry.lookup("", "v1", "namespaces")
    svc_rt = rest.registry.lookup("", "v1", "services")
    ep_rt = rest.registry.lookup("", "v1", "endpoints")
    assert ns_rt and svc_rt and ep_rt
    for ns in SYSTEM_NAMESPACES:
        with contextlib.suppress(AlreadyExists):
            await rest.create(ns_rt, "", {"metadata": {"name": ns}}, opts)
    with contextlib.suppress(AlreadyExists):
        await rest.create(svc_rt, "default", {
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                                           "targetPort": port}]},
        }, opts)
    endpoints = {
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }
    found = rest.store.get(rest.key(ep_rt, "default", "kubernetes"))
    if found is None:
        await rest.create(ep_rt, "default", endpoints, opts)
    elif found[1].get("subsets") != endpoints["subsets"]:
        await rest.update(ep_rt, "default", "kubernetes", {**found[1], "subsets": endpoints["subsets"]}, opts)


def free_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port there."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise LabError("no free TCP port on 127.0.0.1")


Configure = Callable[[ApiServer], list[Part]]


def runtime_parts(server: ApiServer, lab: LabDir, port: int) -> list[Part]:
    """The lab runtime: controllers, kube-proxy and the kubelet of ``lab-node`` (registered as the
    apiserver's PodIO), each with a readiness check of its own."""
    rest = server.rest
    ca_pem = server.pki.ca_cert.read_bytes()
    controllers = lab_controllers(rest, ca_pem=ca_pem)
    proxy = KubeProxy(rest)  # binds now, so pods get its URL as HTTP_PROXY
    kubelet = Kubelet(rest, state_dir=lab.path, signer=server.signer, apiserver_url=f"https://127.0.0.1:{port}",
                      ca_pem=ca_pem, proxy_url=proxy.url)

    def controllers_check() -> tuple[bool, str]:
        dead = [type(c).__name__ for c in controllers if not c.running]
        return (not dead, f"{len(controllers)} running" if not dead else f"stopped: {', '.join(dead)}")

    def kubelet_check() -> tuple[bool, str]:
        found = rest.store.get(("/nodes", "", kubelet.node_name))
        status = (found[1].get("status") or {}) if found else {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        return ready, f"node {kubelet.node_name} {'Ready' if ready else 'NotReady'}; {isolation_report()}"

    def proxy_check() -> tuple[bool, str]:
        return proxy.serving, proxy.url if proxy.serving else "not serving"

    server.health_checks.update({"controllers": controllers_check, "kubelet": kubelet_check,
                                 "kube-proxy": proxy_check})
    server.pod_io = kubelet
    return [*controllers, proxy, kubelet]


async def serve(lab: LabDir, port: int, *, configure: Configure | None = None,
                stop: asyncio.Event | None = None, runtime: bool = True) -> None:
    """Run the lab in this process until SIGTERM/SIGINT (or until ``stop`` is set).

    ``runtime=False`` runs the apiserver alone (no controllers but namespace deletion, no kubelet).
    ``configure`` adds parts after the runtime's (a test can register its own PodIO there).
    """
    lab.create()
    pki = ensure_pki(lab.pki)
    # How many recent changes a watch can resume from (etcd's compaction window); small in some tests.
    store = Store(lab.database, history=int(os.environ.get("MESHLAB_WATCH_HISTORY") or HISTORY))
    server = ApiServer(store, pki=pki, server_address=f"127.0.0.1:{port}")
    rest = server.rest
    rest.before_store.extend([ClusterIPs(rest), establish_crd])
    rest.after_store.append(CrdServing(rest))
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server.ssl_context(), reuse_address=True)
    await site.start()
    await bootstrap(rest, port)
    parts: list[Part] = runtime_parts(server, lab, port) if runtime else [NamespaceController(rest)]
    if configure is not None:
        parts.extend(configure(server))
    for part in parts:
        part.start()
    lab.write_kubeconfig(port, pki.ca_cert.read_bytes(), pki.read_admin_token())
    proxies = [p for p in parts if isinstance(p, KubeProxy)]
    lab.write_server_info(os.getpid(), port, **({"proxy_port": proxies[0].port} if proxies else {}))
    server.ready = True
    log.info("meshlab lab %r serving on https://127.0.0.1:%d", lab.name, port)
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    server.ready = False
    for part in reversed(parts):
        await part.stop()
    store.close()
    await runner.cleanup()
    with contextlib.suppress(FileNotFoundError):
        lab.server_file.unlink()


# -- the client side: start, stop, inspect a lab from another process ---------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ready(lab: LabDir, port: int, timeout: float = 1.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(lab.pki / "ca.crt"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ssl.SSLError):
        return False


def running(lab: LabDir) -> dict[str, Any] | None:
    """pid and port of a running, ready lab, or None."""
    info = lab.server_info()
    if not info or not _alive(int(info.get("pid", 0))):
        return None
    return info if _ready(lab, int(info["port"])) else None


def up(lab: LabDir, *, port: int | None = None, timeout: float = 30.0, runtime: bool = True) -> dict[str, Any]:
    """Start the lab in the background (or find it running); returns ``{"pid", "port"}`` once ready.

    ``runtime=False`` starts the apiserver alone (no kubelet, no controllers but namespace deletion).
    """
    info = running(lab)
    if info:
        return info
    lab.create()
    previous = lab.server_info() or {}
    chosen = free_port(port if port is not None else int(previous.get("port") or DEFAULT_PORT))
    with contextlib.suppress(FileNotFoundError):
        lab.server_file.unlink()
    # posix_spawn rather than Popen: the supervisor outlives this process, and nothing here will wait
    # for it (a Popen object would complain when collected while its child still runs).
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-m", "meshlab.cluster.supervisor", "serve", str(lab.path), "--name", lab.name,
         "--port", str(chosen), *([] if runtime else ["--no-runtime"])],
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(lab.log_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            tail = lab.log_file.read_text(errors="replace").splitlines()[-15:]
            raise LabError(f"the lab supervisor exited with status {os.waitstatus_to_exitcode(status)}; its "
                           f"log ({lab.log_file}) ends with:\n" + "\n".join(tail))
        info = lab.server_info()
        if info and info.get("pid") == pid and _ready(lab, int(info["port"]), timeout=0.5):
            return info
        time.sleep(0.02)
    os.kill(pid, signal.SIGTERM)
    raise LabError(f"the lab did not become ready within {timeout:.0f}s; see {lab.log_file}")


def down(lab: LabDir, *, timeout: float = 10.0) -> bool:
    """Stop the lab; returns False when it was not running."""
    info = lab.server_info()
    if not info or not _alive(int(info.get("pid", 0))):
        return False
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        lab.server_file.unlink()
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m meshlab.cluster.supervisor")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run a lab in the foreground")
    serve_p.add_argument("state", type=Path)
    serve_p.add_argument("--name", default="default")
    serve_p.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve_p.add_argument("--no-runtime", action="store_true", help="the apiserver alone: no kubelet, no controllers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    lab = LabDir(args.state, args.name)
    asyncio.run(serve(lab, args.port, runtime=not args.no_runtime))


if __name__ == "__main__":
    main()
