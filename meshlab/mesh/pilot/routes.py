"""VirtualService HTTP rules → Envoy ``Route`` s, with Istio's defaults and validation.

Each ``http[]`` rule becomes one Envoy route per ``match[]`` entry (entries are ORed, conditions inside one
are ANDed), in the order written, because Envoy takes the first route that matches. ``uri`` becomes
``path`` / ``prefix`` / ``safe_regex``; ``headers`` and ``method`` (the ``:method`` pseudo-header) become
header matchers (``{}`` = present); ``queryParams`` become query-parameter matchers. The action is one
``cluster`` or ``weighted_clusters`` named ``outbound|port|subset|host``. As Istio does
(``pilot/pkg/networking/core/route``): the timeout is 0 (disabled) unless the rule sets one; without
``retries`` the route gets Istio's default policy (2 retries on connect-failure, refused-stream, unavailable,
cancelled and 503), ``attempts: 0`` disables retries, and numbers in ``retryOn`` are status codes; faults
go in ``typed_per_filter_config["envoy.filters.http.fault"]``; percentages become ``FractionalPercent``
per MILLION. A rule Istio would reject (a subset no DestinationRule defines, weights not summing to 100,
an unknown service) is left out and reported as an ``XdsError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from meshlab.errors import XdsError
from meshlab.mesh.pilot.model import MeshState, Service, VirtualService, parse_duration, resolve_host
from meshlab.mesh.xds.resources import outbound_cluster, pack

FAULT_FILTER = "envoy.filters.http.fault"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIES = 2
DEFAULT_RETRIABLE_STATUS_CODES = (503,)

Spec = Mapping[str, Any]


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def fraction(percent: float | None) -> percent_pb2.FractionalPercent:
    """Istio's percentage (0-100, fractions allowed; absent = 100) as parts per million."""
    value = 100.0 if percent is None else float(percent)
    return percent_pb2.FractionalPercent(numerator=round(value * 10_000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def retry_policy(retries: Spec | None) -> rc.RetryPolicy | None:
    """Istio's ``ConvertPolicy``: the default policy when ``retries`` is absent, none when ``attempts`` is 0."""
    policy = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON, retriable_status_codes=DEFAULT_RETRIABLE_STATUS_CODES,
        host_selection_retry_max_attempts=5,
        retry_host_predicate=[rc.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()))])
    policy.num_retries.value = DEFAULT_RETRIES
    if retries is None:
        return policy
    attempts = int(retries.get("attempts") or 0)
    if attempts <= 0:
        return None
    policy.num_retries.value = attempts
    if retries.get("retryOn"):
        conditions = [p.strip() for p in str(retries["retryOn"]).split(",") if p.strip()]
        codes = [int(p) for p in conditions if p.isdigit()]
        names = [p for p in conditions if not p.isdigit()]
        if codes and "retriable-status-codes" not in names:
            names.append("retriable-status-codes")
        policy.retry_on = ",".join(names)
        del policy.retriable_status_codes[:]
        policy.retriable_status_codes.extend(codes)
    if retries.get("perTryTimeout"):
        policy.per_try_timeout.CopyFrom(duration(parse_duration(str(retries["perTryTimeout"]))))
    return policy


def string_match(match: Spec) -> string_pb2.StringMatcher:
    if "exact" in match:
        return string_pb2.StringMatcher(exact=str(match["exact"]))
    if "prefix" in match:
        return string_pb2.StringMatcher(prefix=str(match["prefix"]))
    if "regex" in match:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=str(match["regex"])))
    raise XdsError(f"a string match needs exact, prefix or regex, not {dict(match)!r}")


def route_match(match: Spec) -> rc.RouteMatch:
    """One ``HTTPMatchRequest`` as an Envoy ``RouteMatch``."""
    out = rc.RouteMatch()
    uri = match.get("uri")
    if not uri:
        out.prefix = "/"
    elif "exact" in uri:
        out.path = str(uri["exact"])
    elif "prefix" in uri:
        out.prefix = str(uri["prefix"])
    else:
        out.safe_regex.regex = str(uri["regex"])
    for name, value in sorted((match.get("headers") or {}).items()):
        header = rc.HeaderMatcher(name=name.lower())
        if value:
            header.string_match.CopyFrom(string_match(value))
        else:
            header.present_match = True
        out.headers.append(header)
    if match.get("method"):
        out.headers.append(rc.HeaderMatcher(name=":method", string_match=string_match(match["method"])))
    for name, value in sorted((match.get("queryParams") or {}).items()):
        out.query_parameters.append(rc.QueryParameterMatcher(name=name, string_match=string_match(value)))
    return out


def http_fault(fault: Spec) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    delay = fault.get("delay")
    if delay:
        out.delay.fixed_delay.CopyFrom(duration(parse_duration(str(delay["fixedDelay"]))))
        out.delay.percentage.CopyFrom(fraction((delay.get("percentage") or {}).get("value")))
    abort = fault.get("abort")
    if abort:
        out.abort.http_status = int(abort["httpStatus"])
        out.abort.percentage.CopyFrom(fraction((abort.get("percentage") or {}).get("value")))
    return out


def destination_cluster(state: MeshState, vs: VirtualService, destination: Spec, vhost: Service, port: int,
                        proxy_namespace: str) -> str:
    """The cluster a ``Destination`` names, or an ``XdsError`` saying why there is none."""
    host = resolve_host(str(destination.get("host") or ""), vs.namespace)
    service = state.service(host)
    where = f"VirtualService {vs.namespace}/{vs.name}"
    if service is None:
        raise XdsError(f"{where}: destination host {destination.get('host')!r} ({host}) is not a known Service")
    numbers = [p.port for p in service.ports]
    wanted = (destination.get("port") or {}).get("number")
    if wanted is not None:
        if int(wanted) not in numbers:
            raise XdsError(f"{where}: Service {host} has no port {wanted} (it has {numbers})")
        dest_port = int(wanted)
    elif service == vhost:
        dest_port = port
    elif len(numbers) == 1:
        dest_port = numbers[0]
    else:
        raise XdsError(f"{where}: Service {host} has ports {numbers}: say which with destination.port.number")
    subset = str(destination.get("subset") or "")
    if subset:
        dr = state.destination_rule_for(host, proxy_namespace)
        defined = [str(s.get("name")) for s in (dr.spec.get("subsets") or ())] if dr else []
        if subset not in defined:
            rule = f"DestinationRule {dr.namespace}/{dr.name} defines {defined}" if dr else "no DestinationRule"
            raise XdsError(f"{where}: route to subset {subset!r} of {host}, but {rule}")
    return outbound_cluster(dest_port, subset, host)


def http_routes(state: MeshState, vs: VirtualService, vhost: Service, port: int, proxy_namespace: str
                ) -> tuple[list[rc.Route], list[XdsError]]:
    """The Envoy routes of ``vs`` for the virtual host ``vhost:port``, and the rules left out."""
    routes: list[rc.Route] = []
    problems: list[XdsError] = []
    for index, rule in enumerate(vs.spec.get("http") or ()):
        try:
            action = _route_action(state, vs, rule, vhost, port, proxy_namespace)
            fault = http_fault(rule["fault"]) if rule.get("fault") else None
            matches = [route_match(m) for m in rule.get("match") or ()] or [rc.RouteMatch(prefix="/")]
        except XdsError as err:
            problems.append(XdsError(f"{err} (http[{index}] left out)"))
            continue
        for match in matches:
            route = rc.Route(name=str(rule.get("name") or ""), match=match, route=action)
            if fault is not None:
                route.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
            routes.append(route)
    return routes, problems


def _route_action(state: MeshState, vs: VirtualService, rule: Spec, vhost: Service, port: int,
                  proxy_namespace: str) -> rc.RouteAction:
    destinations = list(rule.get("route") or ())
    if not destinations:
        raise XdsError(f"VirtualService {vs.namespace}/{vs.name}: an http rule needs a route")
    action = rc.RouteAction()
    if len(destinations) == 1:
        action.cluster = destination_cluster(state, vs, destinations[0]["destination"], vhost, port,
                                             proxy_namespace)
    else:
        weights = [int(d.get("weight") or 0) for d in destinations]
        if sum(weights) != 100:
            raise XdsError(f"VirtualService {vs.namespace}/{vs.name}: route weights {weights} sum to "
                           f"{sum(weights)}, not 100")
        for dest, weight in zip(destinations, weights, strict=True):
            name = destination_cluster(state, vs, dest["destination"], vhost, port, proxy_namespace)
            if weight:  # Istio leaves zero-weight destinations out
                action.weighted_clusters.clusters.add(name=name).weight.value = weight
    action.timeout.CopyFrom(duration(parse_duration(str(rule["timeout"])) if rule.get("timeout") else 0))
    policy = retry_policy(rule.get("retries"))
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    if rule.get("mirror"):
        mirror = action.request_mirror_policies.add(
            cluster=destination_cluster(state, vs, rule["mirror"], vhost, port, proxy_namespace))
        mirror.runtime_fraction.default_value.CopyFrom(fraction((rule.get("mirrorPercentage") or {}).get("value")))
    return action


def default_route(cluster: str) -> rc.Route:
    """Istio's route for a service no VirtualService routes: everything to the whole service."""
    action = rc.RouteAction(cluster=cluster, timeout=duration(0), retry_policy=retry_policy(None))
    return rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)
