"""The sidecar facing garbage and its admin listener: raw sockets on loopback against a proxy fed by Pilot."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from tests.mesh.proxy.harness import CLIENT_IP, Backend, Mesh, reviews_state, send

OUTBOUND = (CLIENT_IP, 15001)
GOOD = b"GET http://reviews:9080/ HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"


def _run(body: Callable[[Mesh], Awaitable[None]], *, header_timeout: float = 10.0) -> None:
    async def main() -> None:
        async with Mesh(reviews_state(versions={"v1": "127.0.72.1"}), [Backend("v1", "127.0.72.1")],
                        header_timeout=header_timeout) as mesh:
            await mesh.client_proxy()
            await body(mesh)

    asyncio.run(asyncio.wait_for(main(), 30))


async def _status_of(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 5)
    return int(line.split()[1]) if line else 0


async def _exchange(payload: bytes) -> int:
    reader, writer = await asyncio.open_connection(*OUTBOUND)
    writer.write(payload)
    try:
        return await _status_of(reader)
    finally:
        writer.close()


@pytest.mark.parametrize(("payload", "status"), [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)) + b"\r\n\r\n", 400),
    (b"HELLO THERE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(700)) + b"\r\n", 431),
    (b"GET http://nowhere:1234/ HTTP/1.1\r\nHost: nowhere:1234\r\n\r\n", 404),
    (GOOD, 200),
], ids=["tls-handshake", "not-http", "space-before-colon", "obsolete-folding", "smuggling-framing",
        "one-huge-header", "many-headers-over-60KiB", "unknown-host-no-route", "well-formed"])
def test_garbage_gets_a_status_not_a_crash(payload: bytes, status: int) -> None:
    async def body(mesh: Mesh) -> None:
        assert await _exchange(payload) == status
        assert await _exchange(GOOD) == 200  # and the proxy still serves

    _run(body)


def test_slowloris_trickle_gets_408_after_the_header_timeout() -> None:
    async def body(mesh: Mesh) -> None:
        reader, writer = await asyncio.open_connection(*OUTBOUND)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: list[int] = []
        reading = asyncio.create_task(_status_of(reader))
        for byte in GOOD[:-2]:  # never finishes the head
            if reading.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        status.append(await reading)
        writer.close()
        assert status == [408] and 0.5 <= loop.time() - started < 2.0

    _run(body, header_timeout=0.5)


def test_abrupt_resets_do_not_disturb_other_connections() -> None:
    async def body(mesh: Mesh) -> None:
        async with aiohttp.ClientSession() as http:  # one keep-alive connection kept across the resets
            assert (await send(http, "http://reviews:9080/"))[0] == 200
            for partial in (b"", b"GET http://rev", GOOD[:-4], b"POST http://reviews:9080/ HTTP/1.1\r\n"
                            b"Host: reviews:9080\r\nContent-Length: 100\r\n\r\nonly-some"):
                sock = socket.create_connection(OUTBOUND)
                sock.sendall(partial)
                # SO_LINGER 0: close() sends a RST instead of a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            await asyncio.sleep(0.05)
            results = [(await send(http, "http://reviews:9080/"))[0] for _ in range(5)]
        assert results == [200] * 5

    _run(body)


def test_admin_listener_pages() -> None:
    async def body(mesh: Mesh) -> None:
        async with aiohttp.ClientSession() as http:
            await send(http, "http://reviews:9080/")
            base = f"http://{CLIENT_IP}:15000"
            async with http.get(f"{base}/ready") as r:
                assert (r.status, await r.text()) == (200, "LIVE\n")
            async with http.get(f"{base}/config_dump") as r:
                dump = await r.json()
            async with http.get(f"{base}/clusters") as r:
                clusters = await r.text()
            async with http.get(f"{base}/stats") as r:
                stats = await r.text()
            async with http.get(f"{base}/quitquitquit") as r:
                assert r.status == 405
            async with http.post(f"{base}/quitquitquit") as r:
                assert r.status == 200
        types = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
        assert types == ["ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "RoutesConfigDump",
                     "SecretsConfigDump"]
        listeners = [d["name"] for d in dump["configs"][2]["dynamicListeners"]]
        assert listeners == ["virtualOutbound"]
        assert "outbound|9080|v1|reviews.default.svc.cluster.local::127.0.72.1:9080::health_flags::healthy" in clusters
        assert "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_2xx: 1" in stats
        proxy = mesh.proxies[0].sidecar
        await asyncio.wait_for(proxy.stopped.wait(), 5)
        with pytest.raises(OSError):
            await asyncio.open_connection(*OUTBOUND)

    _run(body)


def test_config_dump_is_json_of_envoy_resources() -> None:
    async def body(mesh: Mesh) -> None:
        async with aiohttp.ClientSession() as http, http.get(f"http://{CLIENT_IP}:15000/config_dump") as r:
            dump = json.loads(await r.text())
        clusters = dump["configs"][0]["dynamicActiveClusters"]
        assert {c["cluster"]["@type"] for c in clusters} == {"type.googleapis.com/envoy.config.cluster.v3.Cluster"}
        assert all(c["versionInfo"] for c in clusters)

    _run(body)
