"""kube-proxy: the resolution table without I/O, then the proxy between real clients and real backends.

The backends are aiohttp servers on their own 127.x addresses standing for pods; Services have no selector
and their Endpoints are written directly, so the test controls exactly which addresses are ready.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import http.client
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from aiohttp import web

from meshlab import kube
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.kube_proxy import (
    Backend,
    KubeProxy,
    RoundRobin,
    Route,
    Target,
    Unroutable,
    caller_namespace,
    end_to_end,
    request_target,
    resolve,
    service_key,
    service_url,
)
from meshlab.cluster.labdir import LabDir
from tests.inprocess import lab_in_thread

# -- the decision -------------------------------------------------------------------------------------------


def _svc(ns: str, name: str, ports: list[dict[str, Any]], cluster_ip: str = "10.96.0.10",
         **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": cluster_ip, "ports": ports, **spec}}


def _eps(ns: str, name: str, *subsets: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "subsets": list(subsets)}


SERVICES = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in [
    _svc("shop", "web", [{"name": "http", "port": 80, "targetPort": "http"},
                         {"name": "metrics", "port": 9100, "targetPort": 9090}], "10.96.0.20"),
    _svc("default", "web", [{"port": 80, "targetPort": 8080}], "10.96.0.21"),
    _svc("shop", "empty", [{"port": 80}], "10.96.0.22"),
    _svc("shop", "db", [{"port": 5432}], "None"),
    _svc("shop", "ext", [], None, type="ExternalName", externalName="example.com"),
]}
ENDPOINTS = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in [
    _eps("shop", "web",
         {"addresses": [{"ip": "127.1.0.2"}, {"ip": "127.1.0.1"}], "notReadyAddresses": [{"ip": "127.1.0.9"}],
          "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]}),
    _eps("default", "web", {"addresses": [{"ip": "127.2.0.1"}], "ports": [{"port": 8080}]}),
    _eps("shop", "empty", {"notReadyAddresses": [{"ip": "127.1.0.5"}], "ports": [{"port": 80}]}),
    _eps("shop", "db", {"addresses": [{"ip": "127.3.0.1"}], "ports": [{"port": 5432}]}),
]}
SHOP_WEB = (Backend("127.1.0.1", 8080), Backend("127.1.0.2", 8080))


@pytest.mark.parametrize(("host", "port", "caller", "expected"), [
    ("web", 80, "shop", SHOP_WEB),
    ("web", 80, "default", (Backend("127.2.0.1", 8080),)),
    ("web.shop", 80, "default", SHOP_WEB),
    ("web.shop.svc", 80, "default", SHOP_WEB),
    ("web.shop.svc.cluster.local", 80, "default", SHOP_WEB),
    ("WEB.Shop.svc.cluster.local.", 80, "default", SHOP_WEB),
    ("10.96.0.20", 80, "default", SHOP_WEB),
    ("web.shop", 9100, "default", (Backend("127.1.0.1", 9090), Backend("127.1.0.2", 9090))),
    ("db.shop", 5432, "default", (Backend("127.3.0.1", 5432),)),
    ("127.4.0.7", 3000, "default", (Backend("127.4.0.7", 3000),)),
], ids=["short name, caller's namespace", "short name, other namespace", "name.ns", "name.ns.svc", "fqdn",
        "case and trailing dot", "cluster IP", "second port by name", "headless keeps the port", "pod IP"])
def test_resolve_finds_ready_backends(host: str, port: int, caller: str, expected: tuple[Backend, ...]) -> None:
    route = resolve(host, port, caller, SERVICES, ENDPOINTS, pod_ips={"127.4.0.7"})
    assert route.backends == expected


@pytest.mark.parametrize(("host", "port", "caller", "status", "message"), [
    ("nope", 80, "shop", 502, 'no such service "nope" in namespace "shop"'),
    ("web.elsewhere", 80, "shop", 502, 'no such service "web" in namespace "elsewhere"'),
    ("empty.shop", 80, "default", 503, 'service "empty" has no ready endpoints'),
    ("web.shop", 8080, "default", 502, 'service "web" in namespace "shop" has no port 8080 (its ports: 80, 9100)'),
    ("ext.shop", 80, "default", 502, "ExternalName"),
    ("www.example.com", 80, "default", 502, "is not a Service name"),
    ("web.shop.svc.other.domain", 80, "default", 502, "is not a Service name"),
    ("under_score", 80, "default", 502, "is not a Service name"),
    ("10.96.9.9", 80, "default", 502, "10.96.9.9 is neither a Service's cluster IP nor a pod's IP"),
], ids=["unknown name", "unknown namespace", "only unready endpoints", "port the service lacks",
        "external name", "outside name", "other cluster domain", "not a DNS label", "unknown IP"])
def test_resolve_says_why_nothing_answers(host: str, port: int, caller: str, status: int, message: str) -> None:
    with pytest.raises(Unroutable) as err:
        resolve(host, port, caller, SERVICES, ENDPOINTS)
    assert err.value.status == status
    assert message in err.value.message


@pytest.mark.parametrize(("host", "expected"), [
    ("a", ("caller", "a")), ("a.b", ("b", "a")), ("a.b.svc", ("b", "a")), ("a.b.svc.cluster.local", ("b", "a")),
    ("a.b.c", None), ("a.b.pod.cluster.local", None), ("9lives", None), ("", None),
], ids=["name", "name.ns", "name.ns.svc", "fqdn", "three labels not svc", "pod dns", "leading digit", "empty"])
def test_service_key(host: str, expected: tuple[str, str] | None) -> None:
    assert service_key(host, "caller") == expected


SVC_PROXY = "/api/v1/namespaces/shop/services/web:80/proxy"


@pytest.mark.parametrize(("target", "host_field", "expected"), [
    ("http://web.shop:8080/a%2Fb?x=1", "ignored", Target("web.shop", 8080, "web.shop:8080", "/a%2Fb", "x=1")),
    ("http://web", "", Target("web", 80, "web", "/", "")),
    ("/a?b", "web.shop:81", Target("web.shop", 81, "web.shop:81", "/a", "b")),
    (f"{SVC_PROXY}/x/y?z=1", "127.0.0.1:3128", Target("web.shop", 80, "web.shop:80", "/x/y", "z=1")),
    (SVC_PROXY, "localhost:3128", Target("web.shop", 80, "web.shop:80", "/", "")),
], ids=["absolute form", "absolute form, no path", "origin form by Host", "service-proxy path",
        "service-proxy path, no slash"])
def test_request_target(target: str, host_field: str, expected: Target) -> None:
    assert request_target(target, host_field, proxy_port=3128) == expected


@pytest.mark.parametrize(("target", "host_field", "message"), [
    ("https://web.shop/", "", "https:// targets cannot go through a plain HTTP proxy"),
    ("/", "127.0.0.1:3128", "this is the lab's kube-proxy"),
    ("/api/v1/namespaces/shop/services/web/proxy/", "127.0.0.1:3128", "this is the lab's kube-proxy"),
    ("ftp://web.shop/", "", "expected http://host[:port]/path"),
], ids=["https", "the proxy's own root", "service-proxy path without a port", "other scheme"])
def test_request_target_refuses(target: str, host_field: str, message: str) -> None:
    with pytest.raises(Unroutable) as err:
        request_target(target, host_field, proxy_port=3128)
    assert err.value.status == 400 and message in err.value.message


def test_service_url_is_read_back_as_its_service() -> None:
    url = service_url(3128, "web", 80, namespace="shop", path="/x")
    assert url == f"http://127.0.0.1:3128{SVC_PROXY}/x"
    target = request_target(url.removeprefix("http://127.0.0.1:3128"), "127.0.0.1:3128", proxy_port=3128)
    assert (target.host, target.port, target.path) == ("web.shop", 80, "/x")


def test_round_robin_takes_turns_per_route() -> None:
    rr = RoundRobin()
    a, b = Route("ns/a:80", SHOP_WEB), Route("ns/b:80", (Backend("127.9.0.1", 1),))
    picks = [rr.pick(a), rr.pick(b), rr.pick(a), rr.pick(a)]
    assert picks == [SHOP_WEB[0], Backend("127.9.0.1", 1), SHOP_WEB[1], SHOP_WEB[0]]


@pytest.mark.parametrize(("fields", "kept"), [
    ([("Accept", "*/*"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")], ["Accept"]),
    ([("Connection", "close, X-Trace"), ("X-Trace", "1"), ("X-Other", "2")], ["X-Other"]),
    ([("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Trailer", "x")], []),
    ([("Proxy-Authorization", "Basic eDp5"), ("Proxy-Connection", "keep-alive"), ("Authorization", "t")],
     ["Authorization"]),
    ([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], ["Set-Cookie", "Set-Cookie"]),
], ids=["standard hop-by-hop", "named in Connection", "framing and upgrade", "proxy credentials only",
        "repeated fields kept"])
def test_end_to_end_drops_hop_by_hop_fields(fields: list[tuple[str, str]], kept: list[str]) -> None:
    assert [k for k, _ in end_to_end(fields)] == kept


def _pod(ns: str, ip: str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": "p"}, "status": {"podIP": ip, "phase": phase}}


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:pod".encode()).decode()


@pytest.mark.parametrize(("source", "auth", "pods", "expected"), [
    ("127.5.0.1", None, [_pod("shop", "127.5.0.1")], "shop"),
    ("127.5.0.1", None, [_pod("shop", "127.5.0.1", "Succeeded"), _pod("new", "127.5.0.1")], "new"),
    ("127.0.0.1", _basic("shop"), [_pod("other", "127.5.0.1")], "shop"),
    ("127.0.0.1", "Basic !!notbase64", [], "default"),
    ("127.0.0.1", _basic("Not_A_Namespace"), [], "default"),
    ("127.0.0.1", None, [_pod("shop", "127.5.0.1")], "default"),
], ids=["pod by source IP", "finished pod's IP reused", "proxy credentials name the namespace",
        "garbled credentials", "credentials not a namespace", "unknown caller"])
def test_caller_namespace(source: str, auth: str | None, pods: list[dict[str, Any]], expected: str) -> None:
    assert caller_namespace(source, auth, pods) == expected


# -- the proxy between real processes -----------------------------------------------------------------------

# This module's pods: 127.N.x.y, far above the networks lab kubelets claim first (127.10, 127.11, ...).
NET = f"127.{200 + os.urandom(1)[0] % 54}"


class Pods:
    """aiohttp servers standing for pods, started inside the lab's event loop as one supervisor part."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.release = asyncio.Event()
        self.raw: asyncio.Server | None = None

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        sock = request.transport.get_extra_info("sockname") if request.transport else ("?", 0)
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        if request.path == "/stream":
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"first\n")
            await asyncio.wait_for(self.release.wait(), 10)
            await resp.write(b"second\n")
            await resp.write_eof()
            return resp
        if request.path == "/release":
            self.release.set()
            return web.Response(text="released")
        if request.path == "/gzip":
            return web.Response(body=gzip.compress(b"squeezed" * 100), headers={"Content-Encoding": "gzip"})
        return web.json_response({
            "pod": f"{sock[0]}:{sock[1]}", "peer_port": peer[1], "method": request.method,
            "target": str(request.rel_url), "headers": [[k, v] for k, v in request.headers.items()],
            "body_sha256": hashlib.sha256(body).hexdigest(), "body_length": len(body),
        }, headers={"Connection": "X-Internal", "X-Internal": "secret", "Set-Cookie": "a=1"})

    async def _truncate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    def start(self) -> None:
        asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        for host, port in [(f"{NET}.0.1", 8080), (f"{NET}.0.2", 8080), (f"{NET}.0.3", 8080), (f"{NET}.0.1", 9090)]:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            self.runners.append(runner)
        self.raw = await asyncio.start_server(self._truncate, f"{NET}.0.4", 8080)

    async def stop(self) -> None:
        self.release.set()
        for runner in self.runners:
            await runner.cleanup()
        if self.raw is not None:
            self.raw.close()


@pytest.fixture(scope="module")
def proxy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabDir, str]]:
    lab = LabDir.named("kube-proxy", tmp_path_factory.mktemp("kube-proxy-home"))
    urls: list[str] = []

    def configure(server: ApiServer, port: int) -> list[Any]:
        proxy = KubeProxy(server.rest)
        urls.append(proxy.url)
        # The apiserver alone plus this kube-proxy: no kubelet to run (and re-address) the pods written here.
        return [Pods(), proxy]

    with lab_in_thread(lab, configure, timeout=15):
        yield from _populated(lab, urls)


def _populated(lab: LabDir, urls: list[str]) -> Iterator[tuple[LabDir, str]]:
    c = kube.clients(lab.kubeconfig)
    ready = [{"ip": f"{NET}.0.1"}, {"ip": f"{NET}.0.2"}, {"ip": f"{NET}.0.3"}]
    objects: list[tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]] = [
        # namespace, service, service ports, endpoints subsets
        ("kp", "echo", [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "admin", "port": 9091}],
         [{"addresses": ready, "notReadyAddresses": [{"ip": f"{NET}.0.9"}], "ports": [{"name": "http", "port": 8080}]},
          {"addresses": [{"ip": f"{NET}.0.1"}], "ports": [{"name": "admin", "port": 9090}]}]),
        ("kp", "solo", [{"port": 80, "targetPort": 8080}],
         [{"addresses": [{"ip": f"{NET}.0.2"}], "ports": [{"port": 8080}]}]),
        ("kp", "idle", [{"port": 80}], [{"notReadyAddresses": ready, "ports": [{"port": 8080}]}]),
        ("kp", "gone", [{"port": 80}], [{"addresses": [{"ip": f"{NET}.0.5"}], "ports": [{"port": 8080}]}]),
        ("kp", "broken", [{"port": 80}], [{"addresses": [{"ip": f"{NET}.0.4"}], "ports": [{"port": 8080}]}]),
        ("other", "echo", [{"port": 80, "targetPort": 8080}],
         [{"addresses": [{"ip": f"{NET}.0.3"}], "ports": [{"port": 8080}]}]),
    ]
    for ns in ("kp", "other"):
        c.core.create_namespace({"metadata": {"name": ns}})
    for ns, name, ports, subsets in objects:
        c.core.create_namespaced_service(ns, {"metadata": {"name": name}, "spec": {"ports": ports}})
        c.core.create_namespaced_endpoints(ns, {"metadata": {"name": name}, "subsets": subsets})
    # A pod of namespace "other" whose requests come from its own address.
    c.core.create_namespaced_pod("other", {"metadata": {"name": "caller"}, "spec": {
        "nodeName": "lab-node", "containers": [{"name": "main", "image": "meshlab/echo:1"}]}})
    c.core.patch_namespaced_pod_status("caller", "other", {"status": {"phase": "Running", "podIP": f"{NET}.0.7"}})
    c.close()
    yield lab, urls[0]


@pytest.fixture()
def session(proxy_lab: tuple[LabDir, str]) -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": proxy_lab[1]}
    yield s
    s.close()


def _answer(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


@pytest.mark.parametrize("host", ["echo.kp", "echo.kp.svc", "echo.kp.svc.cluster.local", "cluster-ip"])
def test_names_reach_the_service(session: requests.Session, proxy_lab: tuple[LabDir, str], host: str) -> None:
    if host == "cluster-ip":
        c = kube.clients(proxy_lab[0].kubeconfig)
        host = c.core.read_namespaced_service("echo", "kp").spec.cluster_ip
        c.close()
    answer = _answer(session.get(f"http://{host}/hello?x=1%2F2"))
    assert answer["pod"].startswith(f"{NET}.0.") and answer["pod"].endswith(":8080")
    assert answer["target"] == "/hello?x=1%2F2"
    assert dict(answer["headers"])["Host"] == host


def test_requests_take_turns_over_ready_endpoints_only(session: requests.Session) -> None:
    pods = [_answer(session.get("http://echo.kp/"))["pod"] for _ in range(6)]
    assert sorted(pods) == sorted([f"{NET}.0.{i}:8080" for i in (1, 2, 3)] * 2)
    assert pods[:3] == pods[3:]


def test_service_port_maps_to_the_named_endpoint_port(session: requests.Session) -> None:
    assert _answer(session.get("http://echo.kp:9091/"))["pod"] == f"{NET}.0.1:9090"


@pytest.mark.parametrize(("url", "status", "text"), [
    ("http://nope.kp/", 502, 'no such service "nope" in namespace "kp"\n'),
    ("http://idle.kp/", 503, 'service "idle" has no ready endpoints (namespace "kp", port 80)\n'),
    ("http://gone.kp/", 502, f"connection refused to {NET}.0.5:8080\n"),
    ("http://echo.kp:8080/", 502, 'service "echo" in namespace "kp" has no port 8080 (its ports: 80, 9091)\n'),
    ("http://example.com/", 502, 'no such service "example" in namespace "com"\n'),
], ids=["unknown service", "no ready endpoints", "refused", "wrong port", "outside name"])
def test_unroutable_requests_get_a_proxy_answer(session: requests.Session, url: str, status: int, text: str) -> None:
    resp = session.get(url)
    assert (resp.status_code, resp.text) == (status, text)
    assert resp.headers["Content-Type"].startswith("text/plain")


def test_the_host_reaches_a_service_by_a_plain_url(proxy_lab: tuple[LabDir, str]) -> None:
    url = service_url(int(proxy_lab[1].rsplit(":", 1)[1]), "solo", 80, namespace="kp", path="/status?x=1")
    answer = _answer(requests.get(url, proxies={"http": ""}, timeout=10))  # no proxy: a plain URL
    assert (answer["pod"], answer["target"]) == (f"{NET}.0.2:8080", "/status?x=1")
    assert dict(answer["headers"])["Host"] == "solo.kp:80"


def _raw(proxy_url: str, request: bytes, *, source: str | None = None) -> bytes:
    port = int(proxy_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(request)  # with "Connection: close": the proxy closes after answering
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_connect_is_refused_with_405_and_allow(proxy_lab: tuple[LabDir, str]) -> None:
    answer = _raw(proxy_lab[1], b"CONNECT echo.kp:443 HTTP/1.1\r\nHost: echo.kp:443\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, " in head
    assert b"CONNECT is not supported" in body


@pytest.mark.parametrize(("source", "auth", "expected_pod"), [
    (f"{NET}.0.7", None, f"{NET}.0.3:8080"),
    ("127.0.0.1", "other:caller", f"{NET}.0.3:8080"),
    ("127.0.0.1", None, "kp-only"),
], ids=["pod found by source address", "namespace from proxy credentials", "default namespace otherwise"])
def test_short_names_are_relative_to_the_callers_namespace(
        proxy_lab: tuple[LabDir, str], source: str, auth: str | None, expected_pod: str) -> None:
    auth_line = f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n" if auth else ""
    answer = _raw(proxy_lab[1], f"GET http://echo/ HTTP/1.1\r\nHost: echo\r\n{auth_line}Connection: close\r\n\r\n"
                  .encode(), source=source)
    head, _, body = answer.partition(b"\r\n\r\n")
    if expected_pod == "kp-only":  # there is no "echo" in namespace default
        assert head.startswith(b"HTTP/1.1 502"), head
        assert b'namespace "default"' in body
    else:
        assert json.loads(body)["pod"] == expected_pod


def test_hop_by_hop_fields_stay_on_their_hop(proxy_lab: tuple[LabDir, str]) -> None:
    answer = _raw(proxy_lab[1], (
        b"GET http://solo.kp/ HTTP/1.1\r\nHost: ignored\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic a3A6eA==\r\nX-End: 2\r\n\r\n"))
    head, _, body = answer.partition(b"\r\n\r\n")
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-end"] == "2" and seen["host"] == "solo.kp"
    assert not {"connection", "x-hop", "keep-alive", "te", "proxy-authorization"} & set(seen)
    # ...and on the way back: the pod's Connection-named X-Internal does not reach the client.
    assert b"X-Internal" not in head and b"Set-Cookie: a=1" in head


def test_streamed_request_body_arrives_whole(session: requests.Session) -> None:
    blob = os.urandom(1 << 20)
    parts = (blob[i:i + 65536] for i in range(0, len(blob), 65536))  # a generator: sent chunked
    answer = _answer(session.post("http://solo.kp/upload", data=parts))
    assert (answer["body_length"], answer["body_sha256"]) == (len(blob), hashlib.sha256(blob).hexdigest())
    assert answer["method"] == "POST"


def test_response_streams_before_the_pod_finishes(session: requests.Session, proxy_lab: tuple[LabDir, str]) -> None:
    with session.get("http://solo.kp/stream", stream=True, timeout=10) as resp:
        lines = resp.iter_lines()
        assert next(lines) == b"first"  # would time out if the proxy waited for the whole body
        other = requests.Session()
        other.trust_env = False
        assert other.get("http://solo.kp/release", proxies={"http": proxy_lab[1]}).text == "released"
        other.close()
        assert next(lines) == b"second"


def test_connections_are_kept_alive_on_both_sides(proxy_lab: tuple[LabDir, str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy_lab[1].rsplit(":", 1)[1]), timeout=10)
    answers, sockets = [], []
    try:
        for path in ("/a", "/b", "/c"):
            conn.request("GET", f"http://echo.kp:9091{path}")  # one pod behind this port: one pooled connection
            answers.append(json.loads(conn.getresponse().read()))
            sockets.append(conn.sock)
    finally:
        conn.close()
    assert sockets[0] is sockets[1] is sockets[2]  # the client's connection to the proxy stayed open
    assert len({a["peer_port"] for a in answers}) == 1  # and the proxy reused its connection to the pod


def test_encoded_bodies_pass_untouched(session: requests.Session) -> None:
    resp = session.get("http://solo.kp/gzip", stream=True)
    raw = resp.raw.read(decode_content=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert int(resp.headers["Content-Length"]) == len(raw)
    assert gzip.decompress(raw) == b"squeezed" * 100


def test_head_keeps_the_length_without_a_body(session: requests.Session) -> None:
    resp = session.head("http://solo.kp/")
    assert resp.status_code == 200 and int(resp.headers["Content-Length"]) > 0 and resp.content == b""


def test_a_pod_cut_off_mid_answer_cuts_the_client_off_too(session: requests.Session) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get("http://broken.kp/")
