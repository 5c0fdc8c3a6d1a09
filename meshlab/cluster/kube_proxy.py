"""kube-proxy for the embedded lab: a node-level HTTP forward proxy that turns Service names into pods.

On a real node, kube-proxy programs iptables/IPVS so that a connection to a Service's ClusterIP lands on one
of the Service's ready endpoints, and cluster DNS turns ``name``, ``name.ns``, ``name.ns.svc`` and
``name.ns.svc.cluster.local`` into that ClusterIP (short names through the pod's DNS search path, which starts
with its own namespace). The lab has neither, so pods without a sidecar reach Services through this proxy
(their ``HTTP_PROXY``): a request in absolute form (``GET http://reviews.default:9080/x HTTP/1.1``, RFC 9112
§3.2.2) is resolved — name or ClusterIP, then the Service port, then the port of the ``Endpoints`` object
whose name matches it (the resolved ``targetPort``) — to the ready addresses of the Service, one is picked
round-robin, and the request is forwarded there as HTTP/1.1 with connection-specific ("hop-by-hop") header
fields removed in both directions (RFC 9110 §7.6.1). What cannot be routed is answered the way a proxy
answers: 502 Bad Gateway when the name does not resolve or the backend refuses, 503 when the Service has no
ready endpoint, 504 when the backend does not accept in time, and 405 for ``CONNECT`` (there is no tunnelling
here: TLS between workloads is the mesh's job). For the host (a browser, a notebook) the proxy also serves
plain URLs shaped like the API server's service proxy, ``/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/``
(:func:`service_url`). :func:`request_target` and :func:`resolve` are the whole decision, without I/O;
:class:`KubeProxy` only moves bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from meshlab.cluster.rest import RestStorage
from meshlab.errors import MeshlabError

log = logging.getLogger("meshlab.kube-proxy")

CLUSTER_DOMAIN = "cluster.local"
CONNECT_TIMEOUT = 5.0
# A 405 must say what is allowed (RFC 9110 §15.5.6).
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"

# Hop-by-hop fields (RFC 9110 §7.6.1, plus RFC 7230's Proxy-Authorization/Proxy-Authenticate and the
# non-standard Proxy-Connection that old clients still send). Any field named in Connection joins them.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade",
})

_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1035 label
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1123 label

Key = tuple[str, str]  # (namespace, name)


class Unroutable(MeshlabError):
    """A request the proxy cannot deliver; ``status`` is the HTTP status a proxy answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Route:
    """Where a request may go: ``target`` names it (``ns/name:port`` or a pod address), for balancing."""

    target: str
    backends: tuple[Backend, ...]


# -- the decision, no I/O ----------------------------------------------------------------------------------


def service_key(host: str, caller_namespace: str) -> Key | None:
    """(namespace, name) for a cluster DNS name of a Service, or None when ``host`` is not one."""
    labels = host.rstrip(".").lower().split(".")
    if len(labels) == 1:
        name, namespace = labels[0], caller_namespace
    elif len(labels) == 2 or (len(labels) == 3 and labels[2] == "svc") or (
            len(labels) > 3 and labels[2] == "svc" and ".".join(labels[3:]) == CLUSTER_DOMAIN):
        name, namespace = labels[0], labels[1]
    else:
        return None
    if not _SERVICE_NAME.fullmatch(name) or not _NAMESPACE.fullmatch(namespace):
        return None
    return namespace, name


def resolve(host: str, port: int, caller_namespace: str, services: Mapping[Key, dict[str, Any]],
            endpoints: Mapping[Key, dict[str, Any]], *, pod_ips: Collection[str] = ()) -> Route:
    """The ready backends for ``host:port``, as seen from a pod in ``caller_namespace``.

    ``host`` is a Service name (see :func:`service_key`), a ClusterIP, or a pod IP (forwarded as is, like a
    routable pod network). ``services`` and ``endpoints`` map (namespace, name) to the API objects.
    Raises :class:`Unroutable` saying why nothing can answer.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        ip = str(address)
        for svc_key, candidate in services.items():
            if (candidate.get("spec") or {}).get("clusterIP") == ip:
                return _service_route(svc_key, candidate, port, endpoints.get(svc_key))
        if ip in pod_ips:
            return Route(f"pod {ip}", (Backend(ip, port),))
        raise Unroutable(502, f"{ip} is neither a Service's cluster IP nor a pod's IP in this lab")
    key = service_key(host, caller_namespace)
    if key is None:
        raise Unroutable(502, f"{host!r} is not a Service name: the lab's proxy reaches Services as name, "
                              f"name.namespace or name.namespace.svc.{CLUSTER_DOMAIN}, and nothing outside")
    svc = services.get(key)
    if svc is None:
        raise Unroutable(502, f'no such service "{key[1]}" in namespace "{key[0]}"')
    return _service_route(key, svc, port, endpoints.get(key))


def _service_route(key: Key, svc: dict[str, Any], port: int, endpoints: dict[str, Any] | None) -> Route:
    namespace, name = key
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        raise Unroutable(502, f'service "{name}" is an ExternalName for {spec.get("externalName")!r}, which '
                              "the lab's proxy does not follow")
    subsets = (endpoints or {}).get("subsets") or []
    target = f"{namespace}/{name}:{port}"
    if spec.get("clusterIP") == "None":
        # Headless: DNS hands out the pods' own addresses, so the client's port is the pod's port.
        backends = [Backend(a["ip"], port) for s in subsets for a in s.get("addresses") or [] if a.get("ip")]
    else:
        svc_ports = [p for p in spec.get("ports") or [] if (p.get("protocol") or "TCP") == "TCP"]
        matching = [p for p in svc_ports if p.get("port") == port]
        if not matching:
            served = ", ".join(str(p.get("port")) for p in svc_ports) or "none"
            raise Unroutable(502, f'service "{name}" in namespace "{namespace}" has no port {port} '
                                  f"(its ports: {served})")
        backends = _ready_backends(subsets, matching[0].get("name") or "")
    if not backends:
        raise Unroutable(503, f'service "{name}" has no ready endpoints (namespace "{namespace}", port {port})')
    return Route(target, tuple(sorted(set(backends), key=lambda b: (b.ip, b.port))))


def _ready_backends(subsets: Iterable[dict[str, Any]], port_name: str) -> list[Backend]:
    """Each ready address with the endpoint port named like the Service port (notReadyAddresses never serve)."""
    backends: list[Backend] = []
    for subset in subsets:
        numbers = [p.get("port") for p in subset.get("ports") or []
                   if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == "TCP"]
        for number in numbers:
            backends.extend(Backend(a["ip"], int(number)) for a in subset.get("addresses") or [] if a.get("ip"))
    return backends


class RoundRobin:
    """Picks each route's backends in turn; a changed backend list simply continues from the counter."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def pick(self, route: Route) -> Backend:
        turn = self._next.get(route.target, 0)
        self._next[route.target] = turn + 1
        return route.backends[turn % len(route.backends)]


def end_to_end(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header fields a proxy forwards: everything but hop-by-hop fields and those named in Connection."""
    fields = list(fields)
    named = {token.strip().lower() for k, v in fields if k.lower() == "connection" for token in v.split(",")}
    drop = HOP_BY_HOP | named
    return [(k, v) for k, v in fields if k.lower() not in drop]


@dataclass(frozen=True)
class Target:
    """Where a request is meant to go, and what to send upstream: ``authority`` becomes the Host field."""

    host: str
    port: int
    authority: str
    path: str  # as received, percent-encoding kept
    query: str


# The API server's service-proxy path (what `kubectl proxy` URLs look like), served here for the host's sake.
_SERVICE_PROXY = re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<name>[^/:]+):(?P<port>\d+)/proxy"
                            r"(?P<rest>/.*)?")


def pod_proxy_url(proxy_url: str, namespace: str, pod: str) -> str:
    """The proxy URL a pod gets as ``HTTP_PROXY``: it names the pod's namespace (as proxy credentials, which
    HTTP clients send as ``Proxy-Authorization``), so short Service names resolve relative to it even though
    the pod's connections come from the node's address (see :func:`caller_namespace`)."""
    scheme, _, rest = proxy_url.partition("://")
    return f"{scheme}://{namespace}:{pod}@{rest}"


def service_url(proxy_port: int, service: str, port: int, *, namespace: str = "default", path: str = "/") -> str:
    """A plain URL on the host that reaches ``service:port`` through the kube-proxy on ``proxy_port``."""
    return (f"http://127.0.0.1:{proxy_port}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/"
            f"{path.lstrip('/')}")


def request_target(target: str, host_field: str, *, proxy_port: int) -> Target:
    """Read a request's target the ways the proxy accepts it.

    * absolute form, ``http://echo.shop:8080/x`` — what clients send to a proxy (``HTTP_PROXY``);
    * origin form to the proxy itself with a service-proxy path,
      ``/api/v1/namespaces/shop/services/echo:8080/proxy/x`` — a plain URL the host can open (a browser, a
      notebook), shaped like the API server's service proxy;
    * any other origin form, routed by its Host field, as traffic captured on its way to a Service would be.
    """
    if target.lower().startswith("https://"):
        raise Unroutable(400, "https:// targets cannot go through a plain HTTP proxy; use http:// URLs")
    if not target.startswith("/"):
        url = URL(target, encoded=True)
        if url.scheme != "http" or not url.host:
            raise Unroutable(400, f"cannot route the request target {target!r}: expected http://host[:port]/path")
        return Target(url.host, url.port or 80, url.raw_authority, url.raw_path or "/", url.raw_query_string)
    path, _, query = target.partition("?")
    field = URL(f"http://{host_field}", encoded=True) if host_field else URL("http://")
    if (field.host or "") in ("", "127.0.0.1", "localhost") and (field.port or 80) == proxy_port:
        found = _SERVICE_PROXY.fullmatch(path)
        if found is None:
            raise Unroutable(400, "this is the lab's kube-proxy: send requests through it (HTTP_PROXY) to "
                                  "http://<service>.<namespace>:<port>/, or open "
                                  "/api/v1/namespaces/<namespace>/services/<service>:<port>/proxy/ on it")
        host, port = f"{found['name']}.{found['ns']}", int(found["port"])
        return Target(host, port, f"{host}:{port}", found["rest"] or "/", query)
    return Target(field.host or "", field.port or 80, field.raw_authority, path, query)


def caller_namespace(source_ip: str, proxy_authorization: str | None, pods: Iterable[dict[str, Any]]) -> str:
    """The namespace short names are relative to: the pod whose IP the request comes from; else the user
    name of ``Proxy-Authorization: Basic`` (what ``HTTP_PROXY=http://<namespace>:<pod>@host:port`` makes
    clients send, for pods that share the node's source address); else ``default``."""
    for pod in pods:
        status = pod.get("status") or {}
        ips = {status.get("podIP")} | {p.get("ip") for p in status.get("podIPs") or []}
        if source_ip in ips and status.get("phase") not in ("Succeeded", "Failed"):
            return str(pod["metadata"]["namespace"])
    scheme, _, credentials = (proxy_authorization or "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if _NAMESPACE.fullmatch(user):
            return user
    return "default"


# -- the server: moves bytes --------------------------------------------------------------------------------


class _StoreView(Mapping[Key, dict[str, Any]]):
    """(namespace, name) -> object of one kind, read from the store without copying the whole kind."""

    def __init__(self, rest: RestStorage, kind_key: str) -> None:
        self._store = rest.store
        self._kind = kind_key

    def __getitem__(self, key: Key) -> dict[str, Any]:
        found = self._store.get((self._kind, key[0], key[1]))
        if found is None:
            raise KeyError(key)
        return found[1]

    def __iter__(self) -> Iterator[Key]:
        for obj, _ in self._store.scan(self._kind):
            yield obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    def __len__(self) -> int:
        return self._store.count(self._kind)

    def items(self) -> Iterator[tuple[Key, dict[str, Any]]]:  # type: ignore[override]
        for obj, _ in self._store.scan(self._kind):
            yield (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]), obj


class KubeProxy:
    """The node's proxy, a supervisor part. Its socket is bound on construction, so ``url`` can be handed
    to the kubelet (which sets ``HTTP_PROXY`` in pods) before the lab starts its parts."""

    def __init__(self, rest: RestStorage, *, port: int = 0) -> None:
        self.rest = rest
        self._services = _StoreView(rest, "/services")
        self._endpoints = _StoreView(rest, "/endpoints")
        self._balancer = RoundRobin()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._starting: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def serving(self) -> bool:
        return self._runner is not None and self._starting is not None and self._starting.done()

    def url_for(self, namespace: str, pod: str) -> str:
        return pod_proxy_url(self.url, namespace, pod)

    def __repr__(self) -> str:
        return f"KubeProxy({self.url})"

    def start(self) -> None:
        self._starting = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(
            # Bodies pass through as they are (no decompression), connections to pods are kept alive and
            # reused, and nothing in the proxy's own environment (a proxy of its own) is consulted.
            auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT),
        )
        # No access log: the supervisor log is for the lab's events; a refused request says why in its answer.
        self._runner = web.ServerRunner(web.Server(self._handle, access_log=None), handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        log.info("kube-proxy serving on %s", self.url)

    async def stop(self) -> None:
        if self._starting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self._sock.close()

    # -- one request ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            if request.method == "CONNECT":
                raise Unroutable(405, "CONNECT is not supported: the lab's kube-proxy forwards plain HTTP "
                                      "requests only (TLS between workloads is the mesh's job); use http:// URLs")
            target = request_target(request.raw_path, request.headers.get("Host", ""), proxy_port=self.port)
            pods = [obj for obj, _ in self.rest.store.scan("/pods")]
            namespace = caller_namespace(request.remote or "", request.headers.get("Proxy-Authorization"), pods)
            pod_ips = {ip for pod in pods if (ip := (pod.get("status") or {}).get("podIP"))}
            route = resolve(target.host, target.port, namespace, self._services, self._endpoints, pod_ips=pod_ips)
            backend = self._balancer.pick(route)
            return await self._forward(request, target, backend)
        except Unroutable as refusal:
            headers = {"Allow": ALLOWED_METHODS} if refusal.status == 405 else {}
            return web.Response(status=refusal.status, text=refusal.message + "\n", headers=headers)

    async def _forward(self, request: web.BaseRequest, target: Target, backend: Backend) -> web.StreamResponse:
        assert self._session is not None, "start() the kube-proxy first"
        headers = [(k, v) for k, v in end_to_end(request.headers.items()) if k.lower() not in ("host", "expect")]
        # The target's authority replaces whatever Host the client sent (RFC 9112 §3.2.2).
        headers.append(("Host", target.authority))
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The route is known, so the body is wanted: let the client send it (RFC 9110 §10.1.1).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _stream(request) if request.body_exists else None
        url = URL.build(scheme="http", host=backend.ip, port=backend.port, encoded=True,
                        path=target.path, query_string=target.query)
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        except aiohttp.ClientConnectorError as err:
            if err.os_error.errno == errno.ECONNREFUSED:
                raise Unroutable(502, f"connection refused to {backend}") from err
            raise Unroutable(502, f"cannot connect to {backend}: {err.os_error.strerror or err}") from err
        except (TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise Unroutable(504, f"{backend} did not accept the connection within {CONNECT_TIMEOUT:.0f}s") from err
        except aiohttp.ServerDisconnectedError as err:
            raise Unroutable(502, f"{backend} closed the connection without answering") from err
        except aiohttp.ClientResponseError as err:
            raise Unroutable(502, f"{backend} sent an invalid HTTP response: {err.message}") from err
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in end_to_end((k.decode("latin-1"), v.decode("latin-1"))
                                          for k, v in upstream.raw_headers):
                response.headers.add(name, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as err:
                # The status line is gone already: all a proxy can do is cut the client off too, so that it
                # sees a truncated message rather than a short one that looks complete.
                log.info("%s broke off its answer to %s %s: %s", backend, request.method, request.rel_url, err)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            # Back to the pool when the body was read to the end; closed otherwise.
            upstream.release()


async def _stream(request: web.BaseRequest) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk
