"""``meshlab tracing-collector``: run the in-memory Zipkin-compatible collector (the ``zipkin`` Deployment)."""

from __future__ import annotations

import argparse
from typing import Any


def _collector(args: argparse.Namespace) -> int:
    from meshlab import podnet
    from meshlab.mesh.tracing import server

    return server.run(args.address or podnet.listen_address(), args.port, args.max_spans)


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``meshlab tracing-collector`` to ``meshlab``'s parser."""
    collector = sub.add_parser("tracing-collector", help="run the mesh's in-memory Zipkin collector (port 9411)")
    collector.add_argument("--port", type=int, default=9411, help="HTTP port (default 9411, Zipkin's)")
    collector.add_argument("--address", default=None, help="listen address (default: the pod IP)")
    collector.add_argument("--max-spans", type=int, default=50_000,
                           help="spans kept; the oldest traces go first (default 50000)")
    collector.set_defaults(func=_collector)
