"""Route selection: which virtual host, which route, which upstream cluster, for one request head.

Follows Envoy's HTTP routing (envoyproxy.io/docs/envoy/latest/intro/arch_overview/http/http_routing and
``route_components.proto``). The virtual host is chosen on the lower-cased ``:authority`` (``Host``): an exact
domain first, then suffix wildcards (``*.example.com``, longest first; ``*`` must stand for at least one
character), then prefix wildcards (``example.*``), then ``*``. A port in the authority is part of the name unless
the route configuration says ``ignore_port_in_host_matching``, which is why Istio lists both ``reviews`` and
``reviews:9080``. Within the virtual host the first route whose path, headers (``:method`` included) and query
parameters all match wins. A weighted route then draws an integer in ``[0, total_weight)`` and walks the
cumulative weights, so tests inject the draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from meshlab.mesh.proxy.config import (
    HeaderMatch,
    PathKind,
    QueryMatch,
    Route,
    RouteMatch,
    RouteTable,
    VirtualHost,
)

#: ``draw(n)`` returns an integer in ``[0, n)``: ``random.randrange`` in production, a constant in tests.
Draw = Callable[[int], int]


@dataclass(frozen=True)
class RequestHead:
    """What routing may look at. ``headers`` keep their order and repeats; names compare case-insensitively."""

    method: str
    path: str  # the request target as sent: path and query string
    authority: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """All values of ``name`` joined with ``,`` (Envoy's rule for matching repeated headers), or None."""
        name = name.lower()
        if name == ":method":
            return self.method
        if name == ":path":
            return self.path
        if name in (":authority", "host"):
            return self.authority
        values = [value for key, value in self.headers if key.lower() == name]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class RouteDecision:
    virtual_host: VirtualHost
    route: Route
    cluster: str


def select_virtual_host(table: RouteTable, authority: str) -> VirtualHost | None:
    host = authority.lower()
    if table.ignore_port_in_host_matching:
        host = _strip_port(host)
    exact: dict[str, VirtualHost] = {}
    suffixes: list[tuple[str, VirtualHost]] = []
    prefixes: list[tuple[str, VirtualHost]] = []
    default: VirtualHost | None = None
    for vhost in table.virtual_hosts:
        for domain in (d.lower() for d in vhost.domains):
            if domain == "*":
                default = default or vhost
            elif domain.startswith("*"):
                suffixes.append((domain[1:], vhost))
            elif domain.endswith("*"):
                prefixes.append((domain[:-1], vhost))
            else:
                exact.setdefault(domain, vhost)
    if host in exact:
        return exact[host]
    # Longest wildcard wins; the wildcard itself must cover at least one character.
    for suffix, vhost in sorted(suffixes, key=lambda item: -len(item[0])):
        if host.endswith(suffix) and len(host) > len(suffix):
            return vhost
    for prefix, vhost in sorted(prefixes, key=lambda item: -len(item[0])):
        if host.startswith(prefix) and len(host) > len(prefix):
            return vhost
    return default


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def header_matches(matcher: HeaderMatch, request: RequestHead) -> bool:
    value = request.header(matcher.name)
    if value is None:
        if not matcher.treat_missing_as_empty:
            # An absent header fails every matcher except "present: false" (or, inverted, "present: true").
            return matcher.string is None and matcher.present == matcher.invert
        value = ""
    matched = matcher.string.matches(value) if matcher.string is not None else matcher.present
    return matched != matcher.invert


def query_matches(matcher: QueryMatch, params: Sequence[tuple[str, str]]) -> bool:
    for name, value in params:
        if name == matcher.name:  # Envoy looks at the first occurrence only
            return matcher.string is None or matcher.string.matches(value)
    return False


def path_matches(match: RouteMatch, target: str) -> bool:
    path = target.split("?", 1)[0].split("#", 1)[0]
    if match.path_kind is PathKind.REGEX:
        assert match.pattern is not None
        return match.pattern.fullmatch(path) is not None
    expected = match.path
    if not match.case_sensitive:
        path, expected = path.lower(), expected.lower()
    if match.path_kind is PathKind.EXACT:
        return path == expected
    return path.startswith(expected)


def route_matches(match: RouteMatch, request: RequestHead) -> bool:
    if not path_matches(match, request.path):
        return False
    if not all(header_matches(h, request) for h in match.headers):
        return False
    if match.query:
        params = parse_qsl(request.path.partition("?")[2], keep_blank_values=True)
        return all(query_matches(q, params) for q in match.query)
    return True


def select_route(vhost: VirtualHost, request: RequestHead) -> Route | None:
    return next((route for route in vhost.routes if route_matches(route.match, request)), None)


def pick_cluster(route: Route, draw: Draw) -> str:
    if len(route.clusters) == 1:
        return route.clusters[0].name
    point = draw(route.total_weight)
    cumulative = 0
    for target in route.clusters:
        cumulative += target.weight
        if point < cumulative:
            return target.name
    return route.clusters[-1].name  # unreachable when draw honours its contract


def route_request(table: RouteTable, request: RequestHead, *, draw: Draw) -> RouteDecision | None:
    """The whole decision; None means no virtual host or no route matched (404, response flag NR)."""
    vhost = select_virtual_host(table, request.authority)
    if vhost is None:
        return None
    route = select_route(vhost, request)
    if route is None:
        return None
    return RouteDecision(vhost, route, pick_cluster(route, draw))
