"""``meshlab mixer``: run Mixer (what the ``istio-mixer`` Deployment runs); argparse only, imports lazy."""

from __future__ import annotations

import argparse
from typing import Any


def _mixer(args: argparse.Namespace) -> int:
    from meshlab.mesh.mixer import main

    return main.run(args)


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``meshlab mixer`` to ``meshlab``'s parser."""
    mixer = sub.add_parser("mixer", help="run Mixer: Check/Report over gRPC, Istio metrics in Prometheus text")
    mixer.add_argument("--grpc-port", type=int, default=9091, help="istio.mixer.v1.Mixer gRPC (default 9091)")
    mixer.add_argument("--metrics-port", type=int, default=42422,
                       help="GET /metrics (Prometheus text) and /ready (default 42422)")
    mixer.add_argument("--policy", default="/etc/istio/mixer/policy.yaml",
                       help="the policy document (deny rules, quotas), re-read when it changes")
    mixer.set_defaults(func=_mixer)
