"""The sidecar end to end: real sockets on loopback, Pilot's real ADS server, aiohttp applications."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from meshlab.mesh.xds.node import ProxyIdentity
from tests.mesh.proxy.harness import (
    CLIENT_IP,
    Backend,
    Mesh,
    many,
    reviews_state,
    reviews_vs,
    send,
    to,
)

URL = "http://reviews:9080/reviews/1"
TWO_VERSIONS = {"v1": "127.0.72.1", "v2": "127.0.72.2"}


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 30))


def _backends(**overrides: dict[str, Any]) -> list[Backend]:
    return [Backend(v, ip, **overrides.get(v, {})) for v, ip in TWO_VERSIONS.items()]


def test_two_sidecars_carry_request_id_and_service_time() -> None:
    """client app → client sidecar (outbound) → server sidecar (inbound 9080) → the app at APP_ADDRESS."""
    async def body() -> None:
        app = Backend("v1", "127.0.72.11")
        state = reviews_state(versions={"v1": "127.0.71.11"})  # the endpoint is the server pod (its sidecar)
        async with Mesh(state, [app]) as mesh:
            server = await mesh.sidecar(ProxyIdentity(ip="127.0.71.11", pod="reviews-v1", namespace="default",
                                                      labels={"version": "v1"}, app_address="127.0.72.11:9080"),
                                        ports=(15001, 9080))
            client = await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                status, headers, text = await send(http, URL)
                again = await send(http, URL, headers={"x-request-id": "given-id"})
        assert status == 200, text
        assert json.loads(text)["name"] == "v1"
        request_id = json.loads(text)["headers"]["x-request-id"]
        assert len(request_id) == 36  # a UUID the client sidecar made
        assert int(headers["x-envoy-upstream-service-time"]) >= 0
        assert headers["server"] == "envoy"
        # Both hops log the same id, so one request can be followed through the mesh.
        assert request_id in client.lines[0] and request_id in server.lines[0]
        assert '"reviews:9080"' in client.lines[0] and "outbound|9080||reviews.default.svc.cluster.local" in (
            client.lines[0])
        assert "inbound|9080||" in server.lines[0]
        assert json.loads(again[2])["headers"]["x-request-id"] == "given-id"

    _run(body)


def test_weighted_split_80_20() -> None:
    async def body() -> None:
        vs = reviews_vs({"route": [to("v1", 80), to("v2", 20)]})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), _backends()) as mesh:
            await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                results = await many(1000, lambda: send(http, URL))
        names = Counter(json.loads(text)["name"] for status, _, text in results if status == 200)
        assert sum(names.values()) == 1000
        assert 750 <= names["v1"] <= 850 and 150 <= names["v2"] <= 250, names

    _run(body)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"end-user": "jason"}, "v2"),
    ({"end-user": "json"}, "v1"),
    ({}, "v1"),
], ids=["jason-to-v2", "other-user-to-v1", "anonymous-to-v1"])
def test_header_match_routes_jason_to_v2(headers: dict[str, str], expected: str) -> None:
    async def body() -> None:
        vs = reviews_vs({"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to("v2")]},
                        {"route": [to("v1")]})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), _backends()) as mesh:
            await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                results = [await send(http, URL, headers=headers) for _ in range(5)]
        assert {json.loads(text)["name"] for _, _, text in results} == {expected}

    _run(body)


def test_fault_abort_500_for_half_of_the_requests() -> None:
    async def body() -> None:
        vs = reviews_vs({"fault": {"abort": {"httpStatus": 500, "percentage": {"value": 50}}}, "route": [to("v1")]})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), _backends()) as mesh:
            client = await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                results = await many(400, lambda: send(http, URL))
        statuses = Counter(status for status, _, _ in results)
        assert set(statuses) == {200, 500} and 170 <= statuses[500] <= 230, statuses
        aborted = next(text for status, _, text in results if status == 500)
        assert aborted == "fault filter abort"
        assert any(" 500 FI fault_filter_abort " in line for line in client.lines)

    _run(body)


def test_fixed_delay_holds_the_request() -> None:
    async def body() -> None:
        vs = reviews_vs({"fault": {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}},
                         "route": [to("v1")]})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), _backends()) as mesh:
            await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                status, _, _ = await send(http, URL)
                elapsed = time.monotonic() - started
        assert status == 200 and 0.3 <= elapsed < 1.0

    _run(body)


@pytest.mark.parametrize(("retries", "minimum", "maximum"), [
    ({"attempts": 3, "retryOn": "5xx"}, 0.98, 1.0),
    ({"attempts": 0}, 0.60, 0.80),
], ids=["retries-mask-failures", "no-retries-show-them"])
def test_retries_turn_a_30_percent_failing_backend_into_success(
        retries: dict[str, Any], minimum: float, maximum: float) -> None:
    async def body() -> None:
        vs = reviews_vs({"route": [to("v1")], "retries": retries})
        backends = _backends(v1={"fail_rate": 0.3})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), backends) as mesh:
            client = await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                results = await many(500, lambda: send(http, URL))
            stats = client.sidecar.all_stats()
        success = sum(status == 200 for status, _, _ in results) / len(results)
        assert minimum <= success <= maximum, success
        retried = stats.get("cluster.outbound|9080|v1|reviews.default.svc.cluster.local.upstream_rq_retry", 0)
        assert (retried > 100) == bool(retries["attempts"])

    _run(body)


def test_route_timeout_answers_504() -> None:
    async def body() -> None:
        vs = reviews_vs({"route": [to("v1")], "timeout": "0.3s"})
        backends = _backends(v1={"delay": 1.0})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), backends) as mesh:
            client = await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                status, _, text = await send(http, URL)
                elapsed = time.monotonic() - started
        assert (status, text) == (504, "upstream request timeout")
        assert 0.3 <= elapsed < 0.8
        assert " 504 UT upstream_response_timeout " in client.lines[0]

    _run(body)


def test_connection_pool_limits_overflow_with_503() -> None:
    async def body() -> None:
        policy = {"connectionPool": {"tcp": {"maxConnections": 1},
                                     "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}}
        backends = _backends(v1={"delay": 0.2})
        state = reviews_state(versions={"v1": TWO_VERSIONS["v1"]}, traffic_policy=policy)
        async with Mesh(state, backends) as mesh:
            client = await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                results = await many(10, lambda: send(http, URL), concurrency=10)
            stats = client.sidecar.all_stats()
        statuses = Counter(status for status, _, _ in results)
        overflowed = [headers for status, headers, _ in results if status == 503]
        assert statuses[200] >= 2 and statuses[503] >= 5, statuses
        assert all(h.get("x-envoy-overloaded") == "true" for h in overflowed)
        assert stats["cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_pending_overflow"] >= 5

    _run(body)


def test_outlier_detection_ejects_a_failing_endpoint_and_takes_it_back() -> None:
    async def body() -> None:
        policy = {"loadBalancer": {"simple": "ROUND_ROBIN"},
                  "outlierDetection": {"consecutive5xxErrors": 3, "interval": "100ms", "baseEjectionTime": "1s",
                                       "maxEjectionPercent": 100}}
        vs = reviews_vs({"route": [{"destination": {"host": "reviews"}}], "retries": {"attempts": 0}})
        backends = _backends(v2={"fail_rate": 1.0})
        state = reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,), traffic_policy=policy)
        async with Mesh(state, backends) as mesh:
            await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                first = [await send(http, URL) for _ in range(8)]
                ejected = [await send(http, URL) for _ in range(10)]
                clusters = await _admin(http, "/clusters")
                mesh.backends["v2"].fail_rate = 0.0
                await asyncio.sleep(1.3)  # the ejection time, then the next sweep
                back = [await send(http, URL) for _ in range(10)]
        assert Counter(s for s, _, _ in first)[503] == 3  # three failures in a row, then v2 is out
        assert {s for s, _, _ in ejected} == {200}
        assert f"{TWO_VERSIONS['v2']}:9080::health_flags::/failed_outlier_check" in clusters
        assert Counter(json.loads(text)["name"] for _, _, text in back) == {"v1": 5, "v2": 5}

    _run(body)


def test_mirroring_sends_copies_whose_answers_never_reach_the_caller() -> None:
    async def body() -> None:
        vs = reviews_vs({"route": [to("v1")], "mirror": {"host": "reviews", "subset": "v2"},
                         "mirrorPercentage": {"value": 100}})
        backends = _backends(v2={"fail_rate": 1.0})  # the shadow fails; the caller must not notice
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), backends) as mesh:
            await mesh.client_proxy()
            async with aiohttp.ClientSession() as http:
                results = [await send(http, URL) for _ in range(20)]
            await asyncio.sleep(0.1)
        assert {(s, json.loads(t)["name"]) for s, _, t in results} == {(200, "v1")}
        copies = mesh.backends["v2"].seen
        assert len(copies) == 20 and {c["host"] for c in copies} == {"reviews-shadow:9080"}

    _run(body)


def test_stopping_pilot_keeps_traffic_flowing() -> None:
    async def body() -> None:
        vs = reviews_vs({"route": [to("v2")]})
        async with Mesh(reviews_state(versions=TWO_VERSIONS, virtual_services=(vs,)), _backends()) as mesh:
            await mesh.client_proxy()
            await mesh.grpc.stop(None)
            mesh.grpc = None
            await asyncio.sleep(0.3)  # the ADS stream breaks; the client starts reconnecting
            async with aiohttp.ClientSession() as http:
                results = [await send(http, URL) for _ in range(10)]
        assert {(s, json.loads(t)["name"]) for s, _, t in results} == {(200, "v2")}

    _run(body)


async def _admin(http: aiohttp.ClientSession, path: str, method: str = "GET") -> str:
    async with http.request(method, f"http://{CLIENT_IP}:15000{path}") as response:
        return f"{response.status} {await response.text()}"
