"""Mixer's network face: the gRPC service ``istio.mixer.v1.Mixer`` (``Check``, ``Report``) and the Prometheus page.

``Check`` answers a ``CheckResponse`` whose ``precondition.status`` carries the decision (gRPC itself succeeds,
as Istio's Mixer did: a denial is data, not a transport error) and, per requested quota, the amount granted.
``Report`` takes a batch of attribute bags and answers an empty ``ReportResponse``. Both are wired with gRPC's
generic handlers around the generated messages of ``mixer.proto`` (plaintext: Istio's sidecars reached Mixer
over the mesh's own mTLS, which meshlab's sidecars do not apply to their own control traffic). The metrics are
served as Prometheus text at ``GET /metrics`` on port 42422, Mixer's ``prometheus`` port. :class:`PolicySource`
re-reads the policy document every second (Istio's Mixer watched its config through the Kubernetes API too; a
ConfigMap *volume* would lag by the kubelet's one-minute sync); a malformed document keeps the old policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from meshlab.mesh.mixer import mixer_pb2
from meshlab.mesh.mixer.core import Mixer, PolicyError, from_proto, parse_policy

log = logging.getLogger("meshlab.mixer")

SERVICE = "istio.mixer.v1.Mixer"
CHECK = f"/{SERVICE}/Check"
REPORT = f"/{SERVICE}/Report"
GRPC_PORT = 9091
PROMETHEUS_PORT = 42422
#: How long a sidecar could reuse a Check answer in Istio (meshlab's proxies ask every time).
VALID_DURATION_S = 5


class MixerService:
    """The gRPC servicer over one :class:`Mixer`."""

    def __init__(self, mixer: Mixer) -> None:
        self.mixer = mixer

    async def check(self, request: mixer_pb2.CheckRequest, context: Any) -> mixer_pb2.CheckResponse:
        result = self.mixer.check(from_proto(request.attributes),
                                  {name: params.amount for name, params in request.quotas.items()})
        response = mixer_pb2.CheckResponse()
        response.precondition.status.code = result.code
        response.precondition.status.message = result.message
        response.precondition.valid_duration.FromSeconds(VALID_DURATION_S)
        response.precondition.valid_use_count = 1
        for name, granted in result.granted.items():
            response.quotas[name].granted_amount = granted
            response.quotas[name].valid_duration.FromSeconds(1)
        return response

    async def report(self, request: mixer_pb2.ReportRequest, context: Any) -> mixer_pb2.ReportResponse:
        self.mixer.report(from_proto(a) for a in request.attributes)
        return mixer_pb2.ReportResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.check, request_deserializer=mixer_pb2.CheckRequest.FromString,
                response_serializer=mixer_pb2.CheckResponse.SerializeToString),
            "Report": grpc.unary_unary_rpc_method_handler(
                self.report, request_deserializer=mixer_pb2.ReportRequest.FromString,
                response_serializer=mixer_pb2.ReportResponse.SerializeToString),
        })


async def serve(service: MixerService, *, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server; returns it and the bound port (``port=0`` picks a free one)."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def serve_metrics(mixer: Mixer, *, host: str = "127.0.0.1", port: int = PROMETHEUS_PORT) -> web.AppRunner:
    """``GET /metrics`` (Prometheus text) and ``GET /ready`` on ``host:port``; the caller cleans the runner up."""
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=mixer.metrics.render(), content_type="text/plain", charset="utf-8")

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class PolicySource:
    """The policy document, read by ``read`` (the ConfigMap through the API, or a file): loaded into a Mixer
    whenever its text changes. ``read`` returns "" when there is no document (no rules) and raises OSError or
    the client's errors when it cannot tell (the previous policy stays)."""

    def __init__(self, read: Callable[[], str], name: str) -> None:
        self.read, self.name = read, name
        self._text: str | None = None

    def refresh(self, mixer: Mixer) -> bool:
        """Load the document if it changed since the last call; True when the policy was replaced."""
        try:
            text = self.read()
        except Exception as err:  # the API server unreachable, a file being replaced
            log.warning("policy %s: cannot read it (%s); keeping the current policy", self.name, err)
            return False
        if text == self._text:
            return False
        self._text = text
        try:
            mixer.policy = parse_policy(text)
        except PolicyError as err:
            log.error("policy %s: %s (keeping the previous policy)", self.name, err)
            return False
        log.info("policy %s: %d deny rules, %d quotas", self.name, len(mixer.policy.deny), len(mixer.policy.quotas))
        return True

    async def follow(self, mixer: Mixer, interval: float = 1.0) -> None:
        """Until cancelled: refresh every ``interval`` seconds (off the event loop: reads may block)."""
        while True:
            await asyncio.to_thread(self.refresh, mixer)
            await asyncio.sleep(interval)


def file_reader(path: Path) -> Callable[[], str]:
    def read() -> str:
        return path.read_text() if path.exists() else ""

    return read
