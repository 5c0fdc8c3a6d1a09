"""The ``istio-mixer`` process: the gRPC service, the Prometheus page and the policy, until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from meshlab.mesh.mixer.core import Mixer
from meshlab.mesh.mixer.server import MixerService, PolicySource, file_reader, serve, serve_metrics
from meshlab.podnet import listen_address

POLICY_KEY = "policy.yaml"


def configmap_reader(reference: str, kubeconfig: str | None = None) -> Callable[[], str]:
    """Reads key ``policy.yaml`` of the ConfigMap ``<namespace>/<name>`` (none, or no key: "")."""
    from kubernetes.client.rest import ApiException

    from meshlab import kube

    namespace, _, name = reference.partition("/")
    core = kube.clients(kubeconfig).core

    def read() -> str:
        try:
            data = core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as err:
            if err.status == 404:
                return ""
            raise
        return str(data.get(POLICY_KEY) or "")

    return read


async def run_mixer(*, host: str, grpc_port: int, metrics_port: int, policy: PolicySource) -> None:
    mixer = Mixer()
    await asyncio.to_thread(policy.refresh, mixer)
    server, bound = await serve(MixerService(mixer), host=host, port=grpc_port)
    runner = await serve_metrics(mixer, host=host, port=metrics_port)
    logging.getLogger("meshlab.mixer").info("mixer: gRPC on %s:%d, metrics on http://%s:%d/metrics",
                                            host, bound, host, metrics_port)
    try:
        await policy.follow(mixer)
    finally:
        await runner.cleanup()
        await server.stop(grace=1)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.policy_file:
        source = PolicySource(file_reader(Path(args.policy_file)), args.policy_file)
    else:
        source = PolicySource(configmap_reader(args.policy_configmap, args.kubeconfig), args.policy_configmap)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_mixer(host=listen_address(), grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                              policy=source))
    return 0
