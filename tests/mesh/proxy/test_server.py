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
