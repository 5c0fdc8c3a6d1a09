"""Two real sidecars (Pilot's ADS, loopback sockets) with telemetry: metadata exchange, metrics, spans."""

from __future__ import annotations

import asyncio
import functools
import json

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from meshlab.mesh.proxy import peer_metadata
from meshlab.mesh.proxy.stats_plugin import StatsPlugin, serve_prometheus
from meshlab.mesh.proxy.tracing_reporter import SpanReporter
from meshlab.mesh.tracing.server import make_app
from meshlab.mesh.tracing.store import SpanStore
from meshlab.mesh.xds.node import ProxyIdentity
from tests.mesh.proxy.harness import Backend, Mesh, reviews_state, send

SERVER_IP, APP_IP, CLIENT_IP = "127.0.71.31", "127.0.72.31", "127.0.71.32"
SERVER = ProxyIdentity(ip=SERVER_IP, pod="reviews-v1", namespace="default", labels={"app": "reviews",
                       "version": "v1"}, service_account="bookinfo-reviews", workload_name="reviews-v1",
                       app_address=f"{APP_IP}:9080")
CLIENT = ProxyIdentity(ip=CLIENT_IP, pod="productpage-v1-xyz", namespace="default",
                       labels={"app": "productpage", "version": "v1"}, workload_name="productpage-v1")


def test_two_sidecars_exchange_metadata_count_and_trace() -> None:
    async def body() -> None:
        store = SpanStore()
        collector = web.AppRunner(make_app(store))
        await collector.setup()
        await web.TCPSite(collector, "127.0.0.1", 0).start()
        zipkin = f"127.0.0.1:{collector.addresses[0][1]}"
        try:
            app = Backend("v1", APP_IP)
            async with Mesh(reviews_state(versions={"v1": SERVER_IP}), [app]) as mesh:
                server = await mesh.sidecar(SERVER, ports=(15001, 9080))
                client = await mesh.sidecar(CLIENT)
                plugins = []
                for proxy, identity in ((server, SERVER), (client, CLIENT)):
                    reporter = SpanReporter(zipkin, interval=0.05)
                    reporter.start()
                    sidecar = proxy.sidecar
                    plugin = StatsPlugin(peer_metadata.of_identity(identity), reporter=reporter, pod_ip=identity.ip,
                                         config=functools.partial(getattr, sidecar, "config"))
                    proxy.sidecar.telemetry = plugin
                    plugins.append(plugin)
                metrics_page = await serve_prometheus(SERVER_IP, lambda: plugins[0].prometheus_text({"x.y": 1}))
                try:
                    async with aiohttp.ClientSession() as http:
                        status, headers, text = await send(http, "http://reviews:9080/r", proxy=f"http://{CLIENT_IP}:15001",
                                                           headers={"x-request-id": "rid-42"})
                        async with http.get(f"http://{SERVER_IP}:15090/stats/prometheus") as page:
                            prometheus = await page.text()
                        async with http.get(f"http://{SERVER_IP}:15000/stats/prometheus") as page:
                            admin_page = await page.text()
                    for _ in range(100):
                        if len(store) >= 2:
                            break
                        await asyncio.sleep(0.05)
                finally:
                    for plugin in plugins:
                        assert plugin.reporter is not None
                        await plugin.reporter.stop()
                    await metrics_page.cleanup()
        finally:
            await collector.cleanup()

        assert status == 200, text
        seen = json.loads(text)["headers"]
        # The application sees neither side's metadata; the caller's app gets none back either.
        assert not {"x-envoy-peer-metadata", "x-envoy-peer-metadata-id"} & set(seen)
        assert not {"x-envoy-peer-metadata", "x-envoy-peer-metadata-id"} & {k.lower() for k in headers}
        # Both sidecars learnt who was at the other end.
        destination = plugins[0].metrics
        source = plugins[1].metrics
        assert destination.requests(reporter="destination", source_workload="productpage-v1",
                                    destination_workload="reviews-v1", response_code="200",
                                    connection_security_policy="none") == 1
        assert source.requests(reporter="source", destination_workload="reviews-v1", destination_version="v1",
                               destination_service="reviews.default.svc.cluster.local") == 1
        # Port 15090 serves text prometheus_client parses, with the proxy's own counters after Istio's.
        families = {f.name: f for f in text_string_to_metric_families(prometheus)}
        (sample,) = families["istio_requests"].samples
        assert sample.labels["reporter"] == "destination" and sample.value == 1
        assert "envoy_x_y" in families
        # The admin listener's /stats/prometheus has the same istio_* series (and the real proxy counters).
        admin = {f.name: f for f in text_string_to_metric_families(admin_page)}
        assert admin["istio_requests"].samples == families["istio_requests"].samples
        assert "envoy_http_downstream_rq" in admin
        # One trace: the client sidecar's root CLIENT span, the server sidecar's SERVER span under it, and the
        # app was handed the server span as its parent.
        (trace,) = store.traces(annotation_query="guid:x-request-id=rid-42")
        by_kind = {s["kind"]: s for s in trace}
        assert set(by_kind) == {"CLIENT", "SERVER"}
        assert "parentId" not in by_kind["CLIENT"]
        assert by_kind["SERVER"]["parentId"] == by_kind["CLIENT"]["id"]
        assert seen["x-b3-spanid"] == by_kind["SERVER"]["id"] and seen["x-b3-parentspanid"] == by_kind["CLIENT"]["id"]
        assert seen["traceparent"] == f"00-{by_kind['SERVER']['traceId']}-{by_kind['SERVER']['id']}-01"
        assert by_kind["SERVER"]["localEndpoint"]["serviceName"] == "reviews.default"

    asyncio.run(asyncio.wait_for(body(), 30))
