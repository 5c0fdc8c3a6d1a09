"""The ADS client against a tiny scripted ADS server on 127.0.0.1: subscribe, ACK, NACK, survive, resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from meshlab.mesh.proxy.config import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, ProxyConfig
from meshlab.mesh.proxy.xds_client import AdsClient, AdsSession
from meshlab.mesh.xds.node import ProxyIdentity
from tests.mesh.proxy.resources import RATINGS, cluster, listener, packed, route, route_config, virtual_host

IDENTITY = ProxyIdentity(ip="127.0.3.4", pod="productpage-v1-abc", namespace="default",
                         labels={"app": "productpage", "version": "v1"}, service_account="bookinfo-productpage",
                         workload_name="productpage-v1")


class ScriptedAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Records what the proxy sends; sends what the test queues."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async def read() -> None:
            async for request in request_iterator:
                await self.requests.put(request)

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await self.responses.get()
        finally:
            reader.cancel()

    def push(self, type_url: str, version: str, *resources: Any) -> str:
        nonce = f"{type_url.rsplit('.', 1)[-1]}-{version}"
        self.responses.put_nowait(discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=version, nonce=nonce, resources=[packed(r) for r in resources]))
        return nonce

    async def next_request(self) -> discovery_pb2.DiscoveryRequest:
        return await asyncio.wait_for(self.requests.get(), 2)


async def start_server(port: int = 0) -> tuple[grpc.aio.Server, ScriptedAds, int]:
    server = grpc.aio.server()
    ads = ScriptedAds()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, ads, port


@dataclass
class Harness:
    server: grpc.aio.Server
    ads: ScriptedAds
    port: int
    client: AdsClient
    seen: list[ProxyConfig] = field(default_factory=list)


def scenario(body: Callable[[Harness], Awaitable[None]]) -> None:
    """Run ``body`` with a started ADS server and a proxy's ADS client streaming to it."""

    async def main() -> None:
        server, ads, port = await start_server()
        seen: list[ProxyConfig] = []
        client = AdsClient(AdsSession(IDENTITY.to_node()), target=f"127.0.0.1:{port}", on_config=seen.append,
                           backoff_base=0.05, backoff_max=0.2)
        harness = Harness(server, ads, port, client, seen)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(body(harness), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await harness.server.stop(None)

    asyncio.run(main())


async def opening(ads: ScriptedAds) -> list[discovery_pb2.DiscoveryRequest]:
    return [await ads.next_request() for _ in range(4)]


async def push_good_config(ads: ScriptedAds) -> None:
    ads.push(CLUSTER_TYPE, "1", cluster(RATINGS))
    ads.push(LISTENER_TYPE, "1", listener())
    ads.push(ROUTE_TYPE, "1", route_config(virtual_host("ratings", ["ratings"], route(cluster=RATINGS))))
    for _ in range(3):
        assert not (await ads.next_request()).HasField("error_detail")


def test_the_first_requests_say_who_the_proxy_is_and_subscribe_to_every_type() -> None:
    async def body(h: Harness) -> None:
        ads = h.ads
        first = await opening(ads)
        assert [r.type_url for r in first] == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
        assert first[0].node.id == "sidecar~127.0.3.4~productpage-v1-abc.default~default.svc.cluster.local"
        metadata = json_format.MessageToDict(first[0].node.metadata)
        assert metadata["NAMESPACE"] == "default" and metadata["LABELS"] == {"app": "productpage", "version": "v1"}
        assert metadata["SERVICE_ACCOUNT"] == "bookinfo-productpage" and metadata["WORKLOAD_NAME"] == "productpage-v1"
        assert all(r.version_info == "" and r.response_nonce == "" and not r.resource_names for r in first)

    scenario(body)


def test_an_accepted_response_is_acked_with_its_version_and_nonce() -> None:
    async def body(h: Harness) -> None:
        ads, client, seen = h.ads, h.client, h.seen
        await opening(ads)
        nonce = ads.push(CLUSTER_TYPE, "2024-06-01/7", cluster(RATINGS))
        ack = await ads.next_request()
        assert (ack.type_url, ack.version_info, ack.response_nonce) == (CLUSTER_TYPE, "2024-06-01/7", nonce)
        assert not ack.HasField("error_detail")
        assert RATINGS in client.config.clusters and RATINGS in seen[-1].clusters

    scenario(body)


def test_a_bad_route_is_nacked_and_the_proxy_keeps_its_last_good_routes() -> None:
    async def body(h: Harness) -> None:
        ads, client, seen = h.ads, h.client, h.seen
        await opening(ads)
        await push_good_config(ads)
        good = client.config
        nonce = ads.push(ROUTE_TYPE, "2", route_config(virtual_host("ratings", ["ratings"], route(cluster="gone"))))
        nack = await ads.next_request()
        assert (nack.version_info, nack.response_nonce) == ("1", nonce)
        assert nack.error_detail.code == 3 and 'unknown cluster "gone"' in nack.error_detail.message
        assert client.config is good and len(seen) == 3
        status = client.session.status[ROUTE_TYPE]
        assert (status.version, status.nacks, status.error) == ("1", 1, nack.error_detail.message)
        # The next good push clears the error.
        ads.push(ROUTE_TYPE, "3", route_config(virtual_host("ratings", ["ratings", "ratings:9080"],
                                                            route(cluster=RATINGS))))
        ack = await ads.next_request()
        assert ack.version_info == "3" and client.session.status[ROUTE_TYPE].error == ""

    scenario(body)


def test_when_pilot_goes_away_the_config_stays_and_a_new_pilot_gets_the_versions_back() -> None:
    async def body(h: Harness) -> None:
        ads, client = h.ads, h.client
        await opening(ads)
        await push_good_config(ads)
        held = client.config
        await h.server.stop(None)  # Pilot dies
        await asyncio.sleep(0.3)
        assert client.config is held and client.config.route_table_for("virtualOutbound") is not None
        h.server, new_ads, _ = await start_server(h.port)  # and comes back on the same address
        resumed = await opening(new_ads)
        assert {r.type_url: r.version_info for r in resumed} == {
            CLUSTER_TYPE: "1", ENDPOINT_TYPE: "", LISTENER_TYPE: "1", ROUTE_TYPE: "1"}
        assert client.reconnects >= 1

    scenario(body)


def test_the_address_is_resolved_again_before_every_connection() -> None:
    # Pilot comes back on another address: the resolve hook is asked before each (re)connection, and a
    # failing resolution is retried with back-off instead of ending the client.
    async def main() -> None:
        first, first_ads, first_port = await start_server()
        second, second_ads, second_port = await start_server()
        answers: list[object] = [f"127.0.0.1:{first_port}", LookupError("no ready endpoint yet"),
                                 f"127.0.0.1:{second_port}"]
        asked = 0

        async def resolve() -> str:
            nonlocal asked
            answer = answers[min(asked, len(answers) - 1)]
            asked += 1
            if isinstance(answer, Exception):
                raise answer
            return str(answer)

        client = AdsClient(AdsSession(IDENTITY.to_node()), target="istiod.istio-system.svc:15010",
                           resolve=resolve, backoff_base=0.05, backoff_max=0.1)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(opening(first_ads), 10)
            await asyncio.wait_for(push_good_config(first_ads), 10)
            await first.stop(None)  # Pilot moves
            await asyncio.wait_for(opening(second_ads), 10)
            assert asked >= 3 and client.target == f"127.0.0.1:{second_port}"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await second.stop(None)

    asyncio.run(main())
