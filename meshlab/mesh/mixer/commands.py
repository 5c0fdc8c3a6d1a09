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
    mixer.add_argument("--policy-configmap", default="istio-system/istio-mixer-policy",
                       help="namespace/name of the ConfigMap whose key policy.yaml is the policy (deny rules, "
                            "quotas), re-read every second (default istio-system/istio-mixer-policy)")
    mixer.add_argument("--policy-file", default=None, help="read the policy from this file instead")
    mixer.add_argument("--kubeconfig", default=None,
                       help="cluster (default: the pod's service account, else $KUBECONFIG)")
    mixer.set_defaults(func=_mixer)
