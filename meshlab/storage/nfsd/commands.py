"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy.

``meshlab nfs-server`` is what the NFS server pod runs: it serves ``--export`` on the pod's address, logs
every mount and unmount, and prints one ``nfs-server ready: ...`` line on stdout once clients can connect.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``meshlab nfs-server`` to ``meshlab``'s parser."""
    parser = sub.add_parser("nfs-server", help="serve a directory over NFS (what the NFS server pod runs)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", type=Path, default=None,
                        help="directory to serve (default: ./nfs-export in the working directory)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="handle secret and Ganesha files (default: .<export name>.nfsd beside the export)")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: the pod's address, meshlab.podnet.listen_address())")
    parser.add_argument("--port", type=int, default=2049, help="TCP port for NFS and MOUNT (default 2049)")
    parser.add_argument("--backend", choices=["python", "ganesha", "auto"], default="auto",
                        help="python (NFSv3, any user), ganesha (NFSv4, root) or auto (ganesha when root and "
                             "installed, else python)")


def choose_backend(requested: str) -> str:
    """``auto`` means Ganesha when it can run here (root and ``ganesha.nfsd``), else the Python server."""
    if requested != "auto":
        return requested
    from meshlab.storage.nfsd.ganesha import ganesha_unavailable

    return "ganesha" if ganesha_unavailable() is None else "python"


def run(args: argparse.Namespace) -> int:
    from meshlab import podnet
    from meshlab.storage.nfsd.running import default_state_dir

    export = (args.export or Path.cwd() / "nfs-export").resolve()
    export.mkdir(parents=True, exist_ok=True)
    state = (args.state_dir or default_state_dir(export)).resolve()
    host = args.host or podnet.listen_address()
    backend = choose_backend(args.backend)
    if backend == "ganesha":
        return _run_ganesha(export, state, host, args.port)
    return _run_python(export, state, host, args.port)


def _ready(backend: str, host: str, port: int, export: Path, version: int) -> None:
    print(f"nfs-server ready: backend={backend} listen={host}:{port} export=/export dir={export} "
          f"version={version}", flush=True)


def _run_python(export: Path, state: Path, host: str, port: int) -> int:
    import asyncio
    import logging
    import signal

    from meshlab.errors import StorageError
    from meshlab.storage.nfsd.server import serve_nfs

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def event(message: str) -> None:
        print(f"nfs-server: {message}", flush=True)

    async def main() -> None:
        try:
            server = await serve_nfs(export_dir=export, state_dir=state, host=host, port=port, on_event=event)
        except OSError as err:
            raise StorageError(f"nfs-server: cannot listen on {host}:{port}: {err.strerror or err}") from err
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _ready("python", host, server.port, export, 3)
        await stop.wait()
        await server.aclose()
        print("nfs-server: stopped", flush=True)

    asyncio.run(main())
    return 0


def _run_ganesha(export: Path, state: Path, host: str, port: int) -> int:
    import signal
    import threading

    from meshlab.storage.nfsd.ganesha import GaneshaConfig, GaneshaServer
    from meshlab.storage.nfsd.running import free_port

    if port == 0:  # Ganesha cannot be asked to pick a port: pick one for it
        port = free_port(host)
    server = GaneshaServer(GaneshaConfig(export, state, host, port))
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _ready("ganesha", host, port, export, 4)
    print(f"nfs-server: ganesha log {server.log_path} (mounts are logged there)", flush=True)
    while not stop.wait(1.0):
        if server.process is None or server.process.poll() is not None:
            print(f"nfs-server: ganesha.nfsd exited (log {server.log_path})", flush=True)
            return 1
    server.stop()
    print("nfs-server: stopped", flush=True)
    return 0


def main() -> int:
    """``python -m meshlab.storage.nfsd``: the same server without loading the whole CLI."""
    from meshlab.errors import MeshlabError

    parser = argparse.ArgumentParser(prog="python -m meshlab.storage.nfsd")
    add_arguments(parser)
    try:
        return run(parser.parse_args())
    except MeshlabError as err:
        print(f"meshlab nfs-server: {err}", file=sys.stderr)
        return 1
