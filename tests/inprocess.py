"""A lab run in-process, in a thread, for tests that plug their own parts into the supervisor."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from meshlab.cluster import supervisor
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.labdir import LabDir


@contextmanager
def lab_in_thread(lab: LabDir, configure: Callable[[ApiServer, int], list[Any]], *,
                  runtime: bool = False, timeout: float = 20.0) -> Iterator[int]:
    """Serve ``lab`` on a free port until the block ends; ``configure(server, port)`` adds parts.

    ``runtime=False`` (the default) runs the apiserver alone plus what ``configure`` returns.
    Yields the apiserver's port once the lab answers ``/readyz``.
    """
    port = supervisor.free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(supervisor.serve(lab, port, configure=lambda server: configure(server, port),
                                                 stop=stop, runtime=runtime))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while supervisor.running(lab) is None:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError(f"the in-process lab did not become ready within {timeout:.0f}s")
        time.sleep(0.05)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
