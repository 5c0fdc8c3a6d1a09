"""Pilot's ADS server on 127.0.0.1, driven by real gRPC clients that act as proxies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from meshlab.mesh.pilot.ads import AdsServer, serve
from meshlab.mesh.pilot.model import DestinationRule, Endpoint, MeshState, Service, ServicePort, VirtualService
from meshlab.mesh.pilot.sync import Sync
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import CLUSTER, ENDPOINTS, LISTENER, ORDER, ROUTE, XdsType, unpack

REVIEWS = "reviews.default.svc.cluster.local"
SUBSETS = DestinationRule("reviews", "default", {"host": "reviews", "subsets": [
    {"name": v, "labels": {"version": v}} for v in ("v1", "v2")]})
PRODUCTPAGE = ProxyIdentity(ip="127.0.0.10", pod="productpage-v1", namespace="default", app_address="127.0.0.10:19080")
SLEEP = ProxyIdentity(ip="127.0.0.50", pod="sleep", namespace="tools")


def _state(*virtual_services: VirtualService) -> MeshState:
    return MeshState(
        (Service("reviews", "default", "10.96.0.20", (ServicePort("http", 9080),)),
         Service("productpage", "default", "10.96.0.10", (ServicePort("http", 9080),))),
        {("default", "reviews"): tuple(Endpoint(f"127.0.0.2{i}", {"http": 9080}, {"version": f"v{i}"}, True,
                                                f"reviews-v{i}", "default") for i in (1, 2)),
         ("default", "productpage"): (Endpoint("127.0.0.10", {"http": 9080}, {}, True, "productpage-v1", "default"),)},
        virtual_services, (SUBSETS,))


def _to(subset: str, namespace: str = "default") -> VirtualService:
    return VirtualService("reviews", namespace, {"hosts": [REVIEWS], "http": [
        {"route": [{"destination": {"host": REVIEWS, "subset": subset}}]}]})


class Proxy:
    """A sidecar's side of one ADS stream: send requests, read responses."""

    def __init__(self, channel: grpc.aio.Channel, identity: ProxyIdentity) -> None:
        self.identity = identity
        self._outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._first = True
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(self._requests())
        # One reader for the stream's life: cancelling a pending read() would cancel the whole RPC.
        self._inbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | grpc.aio.AioRpcError] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self._inbox.put_nowait(response)
        except grpc.aio.AioRpcError as err:
            self._inbox.put_nowait(err)

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    def send(self, type_url: str, *, version: str = "", nonce: str = "", error: str = "") -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce)
        if self._first:
            request.node.CopyFrom(self.identity.to_node())
            self._first = False
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._outbox.put_nowait(request)

    def ack(self, response: discovery_pb2.DiscoveryResponse) -> None:
        self.send(response.type_url, version=response.version_info, nonce=response.nonce)

    async def recv(self) -> discovery_pb2.DiscoveryResponse:
        response = await asyncio.wait_for(self._inbox.get(), 2)
        if isinstance(response, grpc.aio.AioRpcError):
            raise response
        return response

    async def silence(self, seconds: float = 0.3) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(self._inbox.get(), seconds)

    async def subscribe_all(self, order: tuple[str, ...] = ORDER) -> dict[str, discovery_pb2.DiscoveryResponse]:
        for type_url in order:
            self.send(type_url)
        got = {}
        for _ in ORDER:
            response = await self.recv()
            got[response.type_url] = response
            self.ack(response)
        return got

    def close(self) -> None:
        self._outbox.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()


Scenario = Callable[[AdsServer, Callable[[ProxyIdentity], Proxy]], Awaitable[None]]


def _run(scenario: Scenario, state: MeshState | None = None) -> None:
    async def main() -> None:
        ads = AdsServer(state or _state())
        server, port = await serve(ads)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        proxies: list[Proxy] = []

        def connect(identity: ProxyIdentity) -> Proxy:
            proxies.append(Proxy(channel, identity))
            return proxies[-1]
        try:
            await asyncio.wait_for(scenario(ads, connect), 10)
        finally:
            for p in proxies:
                p.close()
            await channel.close()
            await server.stop(None)
    asyncio.run(main())


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in 2 s")


def _statuses(ads: AdsServer, proxy: ProxyIdentity) -> dict[str, Sync]:
    status = next(s for s in ads.proxy_status() if s.proxy_id == proxy.node_id)
    return {t.short: t.status for t in status.types}


@pytest.mark.parametrize("order", [
    pytest.param(ORDER, id="subscribed-in-order"),
    pytest.param(tuple(reversed(ORDER)), id="subscribed-rds-first"),
    pytest.param((LISTENER, CLUSTER, ROUTE, ENDPOINTS), id="subscribed-like-envoy-lds-before-eds"),
])
def test_initial_push_is_cds_eds_lds_rds(order: tuple[str, ...]) -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        proxy = connect(PRODUCTPAGE)
        for type_url in order:
            proxy.send(type_url)
        received = [await proxy.recv() for _ in ORDER]
        assert [XdsType.short(r.type_url) for r in received] == ["CDS", "EDS", "LDS", "RDS"]
        assert len({r.nonce for r in received}) == 4
        clusters = [r.type_url for r in received[0].resources]
        assert set(clusters) == {CLUSTER} and len(clusters) == 5  # reviews (+ v1, v2), productpage, inbound
        await _until(lambda: set(_statuses(ads, PRODUCTPAGE).values()) == {Sync.STALE})
        for response in received:
            proxy.ack(response)
        await proxy.silence()
        await _until(lambda: set(_statuses(ads, PRODUCTPAGE).values()) == {Sync.SYNCED})
    _run(scenario)


def test_no_push_on_ack_or_unchanged_state() -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        proxy = connect(PRODUCTPAGE)
        await proxy.subscribe_all()
        await proxy.silence()
        assert ads.set_state(_state()) == {}
        await proxy.silence()
        assert sorted(e.kind for e in ads.events) == ["ack"] * 4 + ["push"] * 4
    _run(scenario)


def test_changed_virtual_service_pushes_rds_only_to_proxies_it_affects() -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        productpage, sleep = connect(PRODUCTPAGE), connect(SLEEP)
        first = await productpage.subscribe_all()
        await sleep.subscribe_all()
        # A VirtualService in "tools" wins for proxies in "tools" only (the proxy's namespace comes first).
        pushed = ads.set_state(_state(_to("v1"), _to("v2", "tools")))
        assert pushed == {PRODUCTPAGE.node_id: ["RDS"], SLEEP.node_id: ["RDS"]}
        for proxy in (productpage, sleep):
            proxy.ack(await proxy.recv())
        pushed = ads.set_state(_state(_to("v1"), _to("v1", "tools")))
        assert pushed == {SLEEP.node_id: ["RDS"]}
        response = await sleep.recv()
        assert response.version_info != first[ROUTE].version_info
        routes = unpack(response.resources[0], route_pb2.RouteConfiguration)
        vhost = next(v for v in routes.virtual_hosts if v.name == f"{REVIEWS}:9080")
        assert vhost.routes[0].route.cluster == f"outbound|9080|v1|{REVIEWS}"
        await productpage.silence()
    _run(scenario)


def test_nack_is_recorded_and_last_good_version_kept() -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        proxy = connect(PRODUCTPAGE)
        good = (await proxy.subscribe_all())[ROUTE].version_info
        await _until(lambda: set(_statuses(ads, PRODUCTPAGE).values()) == {Sync.SYNCED})
        ads.set_state(_state(_to("v2")))
        bad = await proxy.recv()
        error = "route: unknown cluster 'outbound|9080|v2|x'"
        proxy.send(ROUTE, version=good, nonce=bad.nonce, error=error)
        await proxy.silence()  # the rejected version is not sent again
        await _until(lambda: _statuses(ads, PRODUCTPAGE)["RDS"] is Sync.NACKED)
        rds = next(s for s in ads.proxy_status()).of(ROUTE)
        assert (rds.acked, rds.sent, rds.error) == (good, bad.version_info, error)
        assert [e.kind for e in ads.events][-1] == "nack"
        ads.set_state(_state(_to("v1")))  # a later, fixed config is pushed and accepted
        proxy.ack(await proxy.recv())
        await _until(lambda: _statuses(ads, PRODUCTPAGE)["RDS"] is Sync.SYNCED)
    _run(scenario)


def test_stale_nonce_is_ignored() -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        proxy = connect(PRODUCTPAGE)
        old = (await proxy.subscribe_all())[ROUTE]
        await _until(lambda: set(_statuses(ads, PRODUCTPAGE).values()) == {Sync.SYNCED})
        ads.set_state(_state(_to("v2")))
        new = await proxy.recv()
        proxy.send(ROUTE, version=old.version_info, nonce=old.nonce, error="late NACK of an old response")
        await proxy.silence()
        await _until(lambda: bool(ads.events) and ads.events[-1].kind == "stale")
        assert _statuses(ads, PRODUCTPAGE)["RDS"] is Sync.STALE  # still waiting for the ACK of `new`
        proxy.ack(new)
        await _until(lambda: _statuses(ads, PRODUCTPAGE)["RDS"] is Sync.SYNCED)
    _run(scenario)


@pytest.mark.parametrize(("changed_meanwhile", "expected_pushes"), [
    pytest.param(False, [], id="unchanged-state-no-push"),
    pytest.param(True, ["RDS"], id="changed-state-pushes-what-changed"),
])
def test_reconnect_resyncs(changed_meanwhile: bool, expected_pushes: list[str]) -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        first = connect(PRODUCTPAGE)
        had = await first.subscribe_all()
        first.close()
        await _until(lambda: not ads.proxy_status())
        if changed_meanwhile:
            ads.set_state(_state(_to("v1")))
        again = connect(PRODUCTPAGE)
        for type_url in ORDER:  # a proxy that kept its config says which versions it has
            again.send(type_url, version=had[type_url].version_info)
        pushed = []
        for _ in expected_pushes:
            response = await again.recv()
            pushed.append(XdsType.short(response.type_url))
            again.ack(response)
        await again.silence()
        assert pushed == expected_pushes
        await _until(lambda: set(_statuses(ads, PRODUCTPAGE).values()) == {Sync.SYNCED})
    _run(scenario)


def test_fresh_proxy_after_restart_gets_everything() -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        got = await connect(PRODUCTPAGE).subscribe_all()
        assert list(got) == list(ORDER)
    _run(scenario)


@pytest.mark.parametrize("node_id", [
    pytest.param("router~1.2.3.4~x.y~y.svc.cluster.local", id="[Error] not a sidecar"),
    pytest.param("sidecar~~pod.ns~ns.svc.cluster.local", id="[Error] no ip"),
    pytest.param("", id="[Error] empty node"),
])
def test_bad_node_id_is_refused(node_id: str) -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        proxy = connect(PRODUCTPAGE)
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        request.node.id = node_id
        proxy._first = False
        proxy._outbox.put_nowait(request)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await proxy.recv()
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "node id" in str(err.value.details())
    _run(scenario)


def test_config_dump_is_json_with_problems_and_status() -> None:
    async def scenario(ads: AdsServer, connect: Callable[[ProxyIdentity], Proxy]) -> None:
        await connect(PRODUCTPAGE).subscribe_all()
        ads.set_state(_state(_to("v9")))
        await asyncio.sleep(0.05)
        dump: dict[str, Any] = ads.config_dump(PRODUCTPAGE.node_id)
        assert list(dump["types"]) == ["CDS", "EDS", "LDS", "RDS"]
        assert dump["types"]["RDS"]["status"] == "STALE" and dump["types"]["CDS"]["status"] == "SYNCED"
        assert "subset 'v9'" in dump["problems"][0]
        names = [c["name"] for c in dump["types"]["CDS"]["resources"]]
        assert f"outbound|9080|v1|{REVIEWS}" in names and "inbound|9080||" in names
        assert dump["types"]["EDS"]["resources"][0]["clusterName"] == "inbound|9080||"
    _run(scenario)
