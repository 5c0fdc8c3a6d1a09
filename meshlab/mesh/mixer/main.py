"""The ``istio-mixer`` process: the gRPC service, the Prometheus page and the policy file, until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path

from meshlab.mesh.mixer.core import Mixer
from meshlab.mesh.mixer.server import MixerService, PolicyFile, serve, serve_metrics
from meshlab.podnet import listen_address


async def run_mixer(*, host: str, grpc_port: int, metrics_port: int, policy: Path) -> None:
    mixer = Mixer()
    policy_file = PolicyFile(policy)
    policy_file.refresh(mixer)
    server, bound = await serve(MixerService(mixer), host=host, port=grpc_port)
    runner = await serve_metrics(mixer, host=host, port=metrics_port)
    logging.getLogger("meshlab.mixer").info("mixer: gRPC on %s:%d, metrics on http://%s:%d/metrics",
                                            host, bound, host, metrics_port)
    try:
        await policy_file.follow(mixer)
    finally:
        await runner.cleanup()
        await server.stop(grace=1)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_mixer(host=listen_address(), grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                              policy=Path(args.policy)))
    return 0
