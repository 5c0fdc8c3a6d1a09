"""Subcommands of ``meshlab`` for this area (registered by :mod:`meshlab.cli`); argparse only, imports lazy.

``meshlab citadel`` runs the CA (what the ``istio-citadel`` Deployment runs); ``meshlab citadel rotate-root``
replaces its self-signed root, keeping the old one trusted for an overlap period.
"""

from __future__ import annotations

import argparse
from typing import Any


def _citadel(args: argparse.Namespace) -> int:
    if args.action == "rotate-root":
        return _rotate_root(args)
    from meshlab.mesh.citadel import main

    return main.run(args)


def _rotate_root(args: argparse.Namespace) -> int:
    import meshlab.lab
    from meshlab.mesh.citadel import main
    from meshlab.mesh.citadel.settings import parse_duration

    lab = meshlab.lab.connect(args.kubeconfig)
    try:
        rotated = main.rotate_root(lab.clients, overlap=parse_duration(args.overlap))
    finally:
        lab.close()
    print(f"new root {rotated.root.subject.rfc4514_string()}, valid until {rotated.not_after:%Y-%m-%d}; "
          f"the old root stays trusted until {rotated.overlap_until:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``meshlab citadel [serve|rotate-root]`` to ``meshlab``'s parser."""
    citadel = sub.add_parser("citadel", help="run the mesh CA (istio-citadel), or rotate its root")
    citadel.add_argument("action", nargs="?", choices=["serve", "rotate-root"], default="serve",
                         help="serve (default): run the CA; rotate-root: replace the self-signed root")
    citadel.add_argument("--grpc-port", type=int, default=15012,
                         help="IstioCertificateService over TLS (default 15012)")
    citadel.add_argument("--http-port", type=int, default=15014, help="HTTP /ready, /roots, /debug/stats (15014)")
    citadel.add_argument("--key-algorithm", choices=["ECDSA_P256", "RSA_2048"], default="ECDSA_P256",
                         help="key type of a new self-signed root (default ECDSA_P256)")
    citadel.add_argument("--root-days", type=int, default=None,
                         help="validity of a new self-signed root in days (default 3650, as Istio)")
    citadel.add_argument("--overlap", default="24h",
                         help="rotate-root: how long the old root stays trusted (Go duration; default 24h, the "
                              "default workload certificate lifetime)")
    citadel.add_argument("--kubeconfig", default=None,
                         help="serve: cluster (default: the pod's service account, else $KUBECONFIG); "
                              "rotate-root: cluster (default: the running embedded lab)")
    citadel.set_defaults(func=_citadel)
