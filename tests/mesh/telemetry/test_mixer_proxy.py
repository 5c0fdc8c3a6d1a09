"""Two real sidecars (Pilot's ADS in the classic profile, loopback sockets) and a real Mixer gRPC server:
Check before forwarding (allow, deny → 403, quota → 429), batched Reports counted with both workloads, and
an unreachable Mixer handled as the mesh config's fail policy says."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace

import aiohttp
import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshlab.mesh.mixer.core import Mixer, parse_policy
from meshlab.mesh.mixer.server import MixerService, serve
from meshlab.mesh.pilot.model import MeshState, TelemetrySettings
from meshlab.mesh.pilot.snapshot import Snapshot
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.proxy import peer_metadata
from meshlab.mesh.proxy.decoding import ResourceError
from meshlab.mesh.proxy.mixer_decoding import decode_mixer_filter
from meshlab.mesh.proxy.mixer_plugin import GrpcTransport, MixerPlugin
from meshlab.mesh.proxy.stats_plugin import StatsPlugin
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import LISTENER
from tests.mesh.proxy.harness import Backend, Mesh, reviews_state, send

SERVER_IP, APP_IP, CLIENT_IP = "127.0.71.41", "127.0.72.41", "127.0.71.42"
SERVER = ProxyIdentity(ip=SERVER_IP, pod="reviews-v1", namespace="default", labels={"app": "reviews",
                       "version": "v1"}, service_account="bookinfo-reviews", workload_name="reviews-v1",
                       app_address=f"{APP_IP}:9080")
CLIENT = ProxyIdentity(ip=CLIENT_IP, pod="productpage-v1-xyz", namespace="default",
                       labels={"app": "productpage", "version": "v1"}, workload_name="productpage-v1")
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: connection refused, gRPC UNAVAILABLE


def classic(address: str, *, fail_open: bool = False) -> MeshState:
    return replace(reviews_state(versions={"v1": SERVER_IP}),
                   telemetry=TelemetrySettings("classic", address, fail_open))


async def _run(policy: str, *, requests: int, address: str | None = None, fail_open: bool = False
               ) -> tuple[list[tuple[int, str]], Mixer, list[MixerPlugin]]:
    mixer = Mixer(parse_policy(policy))
    grpc_server, port = await serve(MixerService(mixer))
    plugins: list[MixerPlugin] = []
    try:
        async with Mesh(classic(address or f"127.0.0.1:{port}", fail_open=fail_open), [Backend("v1", APP_IP)]) as mesh:
            server = await mesh.sidecar(SERVER, ports=(15001, 9080))
            client = await mesh.sidecar(CLIENT)
            for proxy, identity in ((server, SERVER), (client, CLIENT)):
                sidecar = proxy.sidecar
                config = functools.partial(getattr, sidecar, "config")
                sidecar.telemetry = StatsPlugin(peer_metadata.of_identity(identity), config=config)
                plugin = MixerPlugin(config, GrpcTransport(), stats=sidecar.stats)
                sidecar.mixer = plugin
                plugins.append(plugin)
            answers = []
            async with aiohttp.ClientSession() as http:
                for _ in range(requests):
                    status, _, text = await send(http, "http://reviews:9080/r", proxy=f"http://{CLIENT_IP}:15001")
                    answers.append((status, text))
            for plugin in plugins:
                await plugin.stop()  # flushes the queued reports
    finally:
        await grpc_server.stop(None)
    return answers, mixer, plugins


def test_allowed_requests_are_checked_once_and_reported_by_both_sidecars() -> None:
    answers, mixer, plugins = asyncio.run(asyncio.wait_for(_run("", requests=3), 30))
    assert [status for status, _ in answers] == [200, 200, 200]
    assert mixer.checks == 3  # the server's sidecar checks; the client's does not (disable_check_calls)
    assert mixer.metrics.requests(reporter="destination", source_workload="productpage-v1",
                                  destination_workload="reviews-v1", destination_version="v1",
                                  response_code="200", connection_security_policy="none") == 3
    assert mixer.metrics.requests(reporter="source", source_workload="productpage-v1",
                                  destination_workload="reviews-v1",
                                  destination_service="reviews.default.svc.cluster.local") == 3
    assert plugins[0].stats["mixer.report.sent"] == 3 and plugins[1].stats["mixer.report.sent"] == 3


@pytest.mark.parametrize(("policy", "statuses", "body"), [
    pytest.param("deny: [{source: {workload: productpage-v1}, destination: {workload: reviews-v1}}]",
                 [403, 403], "PERMISSION_DENIED:", id="deny rule -> 403"),
    pytest.param("deny: [{source: {workload: details-v1}}]", [200, 200], "", id="other pair allowed"),
    pytest.param("quotas: [{destination: reviews.default.svc.cluster.local, maxAmount: 1, validDuration: 60s}]",
                 [200, 429], "RESOURCE_EXHAUSTED:Quota is exhausted", id="quota -> 429"),
])
def test_check_decides(policy: str, statuses: list[int], body: str) -> None:
    answers, mixer, _ = asyncio.run(asyncio.wait_for(_run(policy, requests=2), 30))
    assert [status for status, _ in answers] == statuses
    if body:
        assert answers[-1][1].startswith(body)
        # The refused request is reported too, with the status the client saw.
        assert mixer.metrics.requests(reporter="destination", response_code=str(statuses[-1])) >= 1


@pytest.mark.parametrize(("fail_open", "status"), [
    pytest.param(True, 200, id="FAIL_OPEN lets requests through"),
    pytest.param(False, 503, id="FAIL_CLOSE refuses them"),
])
def test_unreachable_mixer(fail_open: bool, status: int) -> None:
    answers, _, plugins = asyncio.run(asyncio.wait_for(
        _run("", requests=2, address=UNREACHABLE, fail_open=fail_open), 30))
    assert [s for s, _ in answers] == [status, status]
    # A 503 is retried by the client's sidecar (Istio's default retry policy: 2 retries), so each refused
    # request reached the server's sidecar three times.
    attempts = 2 if fail_open else 6
    assert plugins[0].stats["mixer.check.unreachable"] == attempts
    assert plugins[0].stats["mixer.report.dropped"] == attempts  # the reports had nowhere to go either
    assert plugins[1].stats["mixer.report.dropped"] == 2
    if status == 503:
        assert answers[0][1].startswith("UNAVAILABLE:")


@pytest.mark.parametrize(("profile", "expected"), [
    pytest.param("classic", {"mixer"}, id="classic: mixer filter"),
    pytest.param("modern", set(), id="modern: no mixer filter"),
])
def test_pilot_adds_the_mixer_filter_in_the_classic_profile(profile: str, expected: set[str]) -> None:
    state = replace(reviews_state(versions={"v1": SERVER_IP}), telemetry=TelemetrySettings(profile, "mixer:9091"))
    filters = _listeners(translate(state, SERVER))
    assert set(filters) == {"virtualInbound", "virtualOutbound"}
    assert all({f.name for f in hcm} == expected for hcm in filters.values())
    if profile == "classic":
        inbound = decode_mixer_filter(filters["virtualInbound"][0].typed_config, "test")
        outbound = decode_mixer_filter(filters["virtualOutbound"][0].typed_config, "test")
        assert (inbound.check, outbound.check, inbound.fail_open) == (True, False, False)
        assert inbound.attributes["destination.workload.name"] == "reviews-v1"
        assert outbound.attributes["source.labels.app"] == "reviews"


def _listeners(snapshot: Snapshot) -> dict[str, list[hcm_pb2.HttpFilter]]:
    """Per listener, the mixer filters of its first chain's connection manager."""
    out: dict[str, list[hcm_pb2.HttpFilter]] = {}
    for message in snapshot.resources[LISTENER]:
        if isinstance(message, listener_pb2.Listener):
            hcm = hcm_pb2.HttpConnectionManager()
            message.filter_chains[0].filters[0].typed_config.Unpack(hcm)
            out[message.name] = [f for f in hcm.http_filters if f.name == "mixer"]
    return out


def test_a_malformed_mixer_filter_is_refused() -> None:
    state = replace(reviews_state(versions={"v1": SERVER_IP}), telemetry=TelemetrySettings("classic", "mixer:9091"))
    config = _listeners(translate(state, SERVER))["virtualInbound"][0].typed_config
    config.type_url = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
    with pytest.raises(ResourceError, match="must be a TypedStruct"):
        decode_mixer_filter(config, "test")
