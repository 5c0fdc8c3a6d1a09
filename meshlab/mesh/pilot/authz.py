"""AuthorizationPolicy → Envoy's ``envoy.filters.http.rbac`` filters, as istiod's authz builder writes them.

Istio (``pilot/pkg/security/authz/builder``, https://istio.io/latest/docs/reference/config/security/
authorization-policy/) gives a workload's inbound HTTP chain up to two RBAC filters, evaluated in order:
one with ``action: DENY`` holding every DENY policy that applies, then one with ``action: ALLOW`` holding
every ALLOW policy. A policy applies to a workload when it lives in the root namespace (``istio-system``)
or the workload's namespace, and its ``selector`` (none = all) matches the workload's labels. Each rule
becomes one Envoy ``Policy`` named ``ns[<ns>]-policy[<name>]-rule[<i>]``: a permission (what: methods as
the ``:method`` header, paths as ``url_path`` — ``/x*`` prefix, ``*x`` suffix, ``*`` any — destination
ports, and ``when`` on ``request.headers[...]``) and a principal (who: ``principals`` as
``authenticated.principal_name`` ``spiffe://<principal>``, ``namespaces`` as a regex on it, ``when`` on
``source.principal`` / ``source.namespace``). Lists inside a field are ORed, fields are ANDed, ``not*``
fields become ``not_rule`` / ``not_id``. An ALLOW filter whose policies are all empty (``spec: {}``)
matches nothing, so it denies everything; a DENY policy without rules matches nothing and is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from meshlab.errors import XdsError
from meshlab.mesh.pilot.model import AuthorizationPolicy, MeshState
from meshlab.mesh.xds.resources import pack

RBAC_FILTER = "envoy.filters.http.rbac"
_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")

Spec = Mapping[str, Any]


def applicable(state: MeshState, namespace: str, labels: Mapping[str, str]) -> list[AuthorizationPolicy]:
    """The policies that apply to a workload of ``namespace`` with ``labels``, in a stable order."""
    out = []
    for policy in state.authorization_policies:
        if policy.namespace not in (namespace, state.root_namespace):
            continue
        selector = (policy.spec.get("selector") or {}).get("matchLabels") or {}
        if all(labels.get(k) == v for k, v in selector.items()):
            out.append(policy)
    return out


def rbac_filters(state: MeshState, namespace: str, labels: Mapping[str, str]) -> list[hcm_pb2.HttpFilter]:
    """The DENY then ALLOW ``envoy.filters.http.rbac`` filters for one workload (none when no policy applies)."""
    policies = applicable(state, namespace, labels)
    filters = []
    for action, envoy_action in (("DENY", rbac.RBAC.DENY), ("ALLOW", rbac.RBAC.ALLOW)):
        chosen = [p for p in policies if str(p.spec.get("action") or "ALLOW") == action]
        if not chosen:
            continue
        rules = rbac.RBAC(action=envoy_action)
        for policy in chosen:
            for index, rule in enumerate(policy.spec.get("rules") or ()):
                name = f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{index}]"
                rules.policies[name].CopyFrom(rule_policy(rule or {}, state.trust_domain, f"{policy.namespace}/"
                                                                                          f"{policy.name}"))
        if action == "DENY" and not rules.policies:
            continue  # DENY policies without rules deny nothing
        filters.append(hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(rbac_filter.RBAC(rules=rules))))
    return filters


def deny_all() -> list[hcm_pb2.HttpFilter]:
    """An ALLOW filter without policies: what a workload gets when its policies cannot be translated."""
    return [hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(rbac_filter.RBAC(
        rules=rbac.RBAC(action=rbac.RBAC.ALLOW))))]


def rule_policy(rule: Spec, trust_domain: str, where: str = "") -> rbac.Policy:
    """One Istio rule as an Envoy ``Policy``: its permission (to + when on the request) and principal."""
    permissions: list[rbac.Permission] = []
    principals: list[rbac.Principal] = []
    operations = [_operation((entry or {}).get("operation") or {}) for entry in rule.get("to") or ()]
    if operations:
        permissions.append(_or_permissions(operations))
    sources = [_source((entry or {}).get("source") or {}, trust_domain) for entry in rule.get("from") or ()]
    if sources:
        principals.append(_or_principals(sources))
    for condition in rule.get("when") or ():
        key = str(condition.get("key") or "")
        values, not_values = list(condition.get("values") or ()), list(condition.get("notValues") or ())
        header = _HEADER_KEY.match(key)
        if header is not None:
            name = header.group(1).lower()
            permissions += _negatable_permissions([_header(name, v) for v in values],
                                                  [_header(name, v) for v in not_values])
        elif key == "source.principal":
            principals += _negatable_principals([_principal_name(v, trust_domain) for v in values],
                                                [_principal_name(v, trust_domain) for v in not_values])
        elif key == "source.namespace":
            principals += _negatable_principals([_namespace(v) for v in values], [_namespace(v) for v in not_values])
        else:
            raise XdsError(f"AuthorizationPolicy {where}: when key {key!r} is not supported "
                           "(request.headers[...], source.principal, source.namespace)")
    return rbac.Policy(permissions=[_and_permissions(permissions)], principals=[_and_principals(principals)])


# -- what the request does ------------------------------------------------------------------------------------


def _operation(op: Spec) -> rbac.Permission:
    parts: list[rbac.Permission] = []
    for field, build in (("methods", lambda v: _header(":method", v)), ("paths", _path), ("ports", _port)):
        parts += _negatable_permissions([build(str(v)) for v in op.get(field) or ()],
                                        [build(str(v)) for v in op.get("not" + field[0].upper() + field[1:]) or ()])
    return _and_permissions(parts)


def _negatable_permissions(values: list[rbac.Permission], not_values: list[rbac.Permission]
                           ) -> list[rbac.Permission]:
    out = [_or_permissions(values)] if values else []
    if not_values:
        out.append(rbac.Permission(not_rule=_or_permissions(not_values)))
    return out


def _string(pattern: str) -> string_pb2.StringMatcher:
    """Istio's value forms: ``*`` any, ``x*`` prefix, ``*x`` suffix, else exact."""
    if pattern == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    if pattern.endswith("*"):
        return string_pb2.StringMatcher(prefix=pattern[:-1])
    if pattern.startswith("*"):
        return string_pb2.StringMatcher(suffix=pattern[1:])
    return string_pb2.StringMatcher(exact=pattern)


def _header(name: str, value: str) -> rbac.Permission:
    return rbac.Permission(header=rc.HeaderMatcher(name=name, string_match=_string(value)))


def _path(value: str) -> rbac.Permission:
    return rbac.Permission(url_path=path_pb2.PathMatcher(path=_string(value)))


def _port(value: str) -> rbac.Permission:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise XdsError(f"AuthorizationPolicy: port {value!r} is not a port number")
    return rbac.Permission(destination_port=int(value))


def _or_permissions(rules: Iterable[rbac.Permission]) -> rbac.Permission:
    rules = list(rules)
    return rules[0] if len(rules) == 1 else rbac.Permission(or_rules=rbac.Permission.Set(rules=rules))


def _and_permissions(rules: Iterable[rbac.Permission]) -> rbac.Permission:
    rules = list(rules)
    if not rules:
        return rbac.Permission(any=True)
    return rules[0] if len(rules) == 1 else rbac.Permission(and_rules=rbac.Permission.Set(rules=rules))


# -- who sends it ----------------------------------------------------------------------------------------------


def _source(source: Spec, trust_domain: str) -> rbac.Principal:
    parts: list[rbac.Principal] = []
    parts += _negatable_principals([_principal_name(str(v), trust_domain) for v in source.get("principals") or ()],
                                   [_principal_name(str(v), trust_domain) for v in source.get("notPrincipals") or ()])
    parts += _negatable_principals([_namespace(str(v)) for v in source.get("namespaces") or ()],
                                   [_namespace(str(v)) for v in source.get("notNamespaces") or ()])
    return _and_principals(parts)


def _principal_name(principal: str, trust_domain: str) -> rbac.Principal:
    """``cluster.local/ns/x/sa/y`` → the peer certificate's URI SAN ``spiffe://cluster.local/ns/x/sa/y``."""
    if principal == "*":
        matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    elif principal.startswith("*"):
        matcher = string_pb2.StringMatcher(suffix=principal[1:])
    elif principal.endswith("*"):
        matcher = string_pb2.StringMatcher(prefix="spiffe://" + principal[:-1])
    else:
        matcher = string_pb2.StringMatcher(exact="spiffe://" + principal)
    return rbac.Principal(authenticated=rbac.Principal.Authenticated(principal_name=matcher))


def _namespace(namespace: str) -> rbac.Principal:
    """A namespace as a regex on the peer's SPIFFE ID (``.*/ns/<ns>/.*``), as Istio writes it."""
    if namespace == "*":
        body = "[^/]+"
    elif namespace.endswith("*"):
        body = re.escape(namespace[:-1]) + "[^/]*"
    elif namespace.startswith("*"):
        body = "[^/]*" + re.escape(namespace[1:])
    else:
        body = re.escape(namespace)
    matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=f".*/ns/{body}/.*"))
    return rbac.Principal(authenticated=rbac.Principal.Authenticated(principal_name=matcher))


def _negatable_principals(values: list[rbac.Principal], not_values: list[rbac.Principal]) -> list[rbac.Principal]:
    out = [_or_principals(values)] if values else []
    if not_values:
        out.append(rbac.Principal(not_id=_or_principals(not_values)))
    return out


def _or_principals(ids: Iterable[rbac.Principal]) -> rbac.Principal:
    ids = list(ids)
    return ids[0] if len(ids) == 1 else rbac.Principal(or_ids=rbac.Principal.Set(ids=ids))


def _and_principals(ids: Iterable[rbac.Principal]) -> rbac.Principal:
    ids = list(ids)
    if not ids:
        return rbac.Principal(any=True)
    return ids[0] if len(ids) == 1 else rbac.Principal(and_ids=rbac.Principal.Set(ids=ids))
