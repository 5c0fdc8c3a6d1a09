"""Decoding the security parts of xDS: TLS transport sockets, filter-chain matches and RBAC filters.

The same rule as :mod:`decoding`: what the proxy cannot honour is refused with a message naming the
resource and field, never ignored. Accepted: the ``tls_inspector`` listener filter; filter-chain matches on
``destination_port`` and ``transport_protocol`` (``tls`` / ``raw_buffer``); transport sockets
``envoy.transport_sockets.tls`` (``DownstreamTlsContext`` / ``UpstreamTlsContext`` whose certificate and
roots are the SDS secrets ``default`` and ``ROOTCA``, as Istio names them — the proxy fills them from its own
certificate provider — with URI SAN matchers) and ``envoy.transport_sockets.raw_buffer``; cluster
``transport_socket_matches``; ``envoy.filters.http.rbac`` with ALLOW / DENY rules built from and / or / not /
any, headers, ``url_path``, ``destination_port`` and ``authenticated`` principals
(``envoy/extensions/transport_sockets/tls/v3/tls.proto``, ``envoy/config/rbac/v3/rbac.proto``).
"""

from __future__ import annotations

from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf.json_format import MessageToDict

from meshlab.mesh.proxy import config as c
from meshlab.mesh.proxy import rbac
from meshlab.mesh.proxy.decoding import ResourceError, _header_match, _string_match

TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_SOCKET = "envoy.transport_sockets.raw_buffer"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/" + rbac_filter.RBAC.DESCRIPTOR.full_name
SOCKET_MATCH_KEY = "envoy.transport_socket_match"
SDS_CERT = "default"
SDS_ROOT = "ROOTCA"
_TRANSPORT_PROTOCOLS = ("", "tls", "raw_buffer")
_MATCH_FIELDS = {"destination_port", "transport_protocol"}
_INSPECTOR_TYPE = "type.googleapis.com/" + tls_inspector_pb2.TlsInspector.DESCRIPTOR.full_name


class SecurityError(ResourceError):
    """A security setting the proxy cannot honour (becomes part of the NACK)."""


def _set_fields(message: Any) -> set[str]:
    return {descriptor.name for descriptor, _ in message.ListFields()}


def listener_filters(listener: Any, where: str) -> bool:
    """Whether the listener has ``tls_inspector`` (the only listener filter this proxy implements)."""
    inspector = False
    for listener_filter in listener.listener_filters:
        if listener_filter.name != TLS_INSPECTOR or (listener_filter.HasField("typed_config")
                                                    and listener_filter.typed_config.type_url != _INSPECTOR_TYPE):
            raise SecurityError(f'{where}: unsupported listener filter "{listener_filter.name}"; only '
                                f"{TLS_INSPECTOR} is supported")
        inspector = True
    return inspector


def chain_match(chain: Any, where: str) -> tuple[int | None, str]:
    """(destination port or None, transport protocol or "") of a filter chain's match."""
    match = chain.filter_chain_match
    unsupported = sorted(_set_fields(match) - _MATCH_FIELDS)
    if unsupported:
        raise SecurityError(f"{where}: filter_chain_match field(s) {', '.join(unsupported)} not supported")
    if match.transport_protocol not in _TRANSPORT_PROTOCOLS:
        raise SecurityError(f'{where}: transport_protocol "{match.transport_protocol}" is not supported '
                            '(tls, raw_buffer)')
    port = match.destination_port.value if match.HasField("destination_port") else None
    return port, match.transport_protocol


def _string_matcher(matcher: Any, where: str) -> c.StringMatch:
    return _string_match(matcher, where)


def _validation(common: tls_pb2.CommonTlsContext, where: str) -> tuple[c.StringMatch, ...]:
    """The URI SAN matchers of ``combined_validation_context``; its roots must be the SDS secret ROOTCA."""
    kind = common.WhichOneof("validation_context_type")
    if kind != "combined_validation_context":
        raise SecurityError(f"{where}: validation must be a combined_validation_context with the SDS secret "
                            f"{SDS_ROOT}, not {kind or '(none)'}")
    combined = common.combined_validation_context
    if combined.validation_context_sds_secret_config.name != SDS_ROOT:
        raise SecurityError(f'{where}: validation SDS secret "{combined.validation_context_sds_secret_config.name}" '
                            f"is not {SDS_ROOT}")
    default = combined.default_validation_context
    unsupported = sorted(_set_fields(default) - {"match_typed_subject_alt_names"})
    if unsupported:
        raise SecurityError(f"{where}: validation context field(s) {', '.join(unsupported)} not supported")
    sans = []
    for san in default.match_typed_subject_alt_names:
        if san.san_type != common_pb2.SubjectAltNameMatcher.URI:
            raise SecurityError(f"{where}: only URI subject alt name matchers are supported")
        sans.append(_string_matcher(san.matcher, where))
    return tuple(sans)


def _common(common: tls_pb2.CommonTlsContext, where: str) -> tuple[tuple[c.StringMatch, ...], tuple[str, ...]]:
    unsupported = sorted(_set_fields(common) - {"tls_certificate_sds_secret_configs", "combined_validation_context",
                                                "alpn_protocols"})
    if unsupported:
        raise SecurityError(f"{where}: common_tls_context field(s) {', '.join(unsupported)} not supported")
    names = [s.name for s in common.tls_certificate_sds_secret_configs]
    if names != [SDS_CERT]:
        raise SecurityError(f"{where}: the certificate must be the one SDS secret {SDS_CERT!r}, not {names}")
    return _validation(common, where), tuple(common.alpn_protocols)


def downstream_tls(socket: Any, where: str) -> c.TlsSettings | None:
    """A filter chain's ``transport_socket``: None for plaintext (unset or raw_buffer)."""
    if not socket.name or socket.name == RAW_SOCKET:
        return None
    if socket.name != TLS_SOCKET:
        raise SecurityError(f'{where}: unsupported transport socket "{socket.name}"')
    context = tls_pb2.DownstreamTlsContext()
    if not socket.typed_config.Unpack(context):
        raise SecurityError(f"{where}: {TLS_SOCKET} config is not a DownstreamTlsContext")
    unsupported = sorted(_set_fields(context) - {"common_tls_context", "require_client_certificate"})
    if unsupported:
        raise SecurityError(f"{where}: DownstreamTlsContext field(s) {', '.join(unsupported)} not supported")
    sans, alpn = _common(context.common_tls_context, where)
    return c.TlsSettings(sans, context.require_client_certificate.value, "", alpn)


def upstream_tls(socket: Any, where: str) -> c.TlsSettings | None:
    if not socket.name or socket.name == RAW_SOCKET:
        return None
    if socket.name != TLS_SOCKET:
        raise SecurityError(f'{where}: unsupported transport socket "{socket.name}"')
    context = tls_pb2.UpstreamTlsContext()
    if not socket.typed_config.Unpack(context):
        raise SecurityError(f"{where}: {TLS_SOCKET} config is not an UpstreamTlsContext")
    unsupported = sorted(_set_fields(context) - {"common_tls_context", "sni"})
    if unsupported:
        raise SecurityError(f"{where}: UpstreamTlsContext field(s) {', '.join(unsupported)} not supported")
    sans, alpn = _common(context.common_tls_context, where)
    return c.TlsSettings(sans, True, context.sni, alpn)


def socket_matches(cluster: Any, where: str) -> tuple[c.SocketMatch, ...]:
    if cluster.HasField("transport_socket") and upstream_tls(cluster.transport_socket, where) is not None:
        raise SecurityError(f"{where}: a cluster-wide TLS transport_socket is not supported "
                            "(use transport_socket_matches)")
    out = []
    for match in cluster.transport_socket_matches:
        criteria = {str(k): str(v) for k, v in MessageToDict(match.match).items()}
        out.append(c.SocketMatch(match.name, c.MappingProxyType(criteria),
                                 upstream_tls(match.transport_socket, f'{where} socket match "{match.name}"')))
    return tuple(out)


def endpoint_socket_match(lb: Any) -> dict[str, str]:
    if SOCKET_MATCH_KEY not in lb.metadata.filter_metadata:
        return {}
    return {str(k): str(v) for k, v in MessageToDict(lb.metadata.filter_metadata[SOCKET_MATCH_KEY]).items()}


# -- RBAC ------------------------------------------------------------------------------------------------------


def rbac_http_filter(typed_config: Any, where: str) -> rbac.RbacFilter:
    config = rbac_filter.RBAC()
    if typed_config.type_url != RBAC_TYPE or not typed_config.Unpack(config):
        raise SecurityError(f"{where}: {RBAC_FILTER} config must be an RBAC, got {typed_config.type_url}")
    unsupported = sorted(_set_fields(config) - {"rules"})
    if unsupported:
        raise SecurityError(f"{where}: RBAC field(s) {', '.join(unsupported)} not supported")
    rules = config.rules
    action = rbac_config.RBAC.Action.Name(rules.action)
    if action not in ("ALLOW", "DENY"):
        raise SecurityError(f"{where}: RBAC action {action} is not supported (ALLOW, DENY)")
    policies = []
    for name in sorted(rules.policies):
        policy = rules.policies[name]
        pwhere = f'{where} policy "{name}"'
        if policy.HasField("condition") or policy.HasField("checked_condition"):
            raise SecurityError(f"{pwhere}: CEL conditions are not supported")
        policies.append((name, rbac.Policy(tuple(_permission(p, pwhere) for p in policy.permissions),
                                           tuple(_principal(p, pwhere) for p in policy.principals))))
    return rbac.RbacFilter("ALLOW" if action == "ALLOW" else "DENY", tuple(policies))


def _header(matcher: Any, where: str) -> c.HeaderMatch:
    return _header_match(matcher, where)


def _permission(rule: rbac_config.Permission, where: str) -> rbac.Matcher:
    kind = rule.WhichOneof("rule")
    if kind == "any":
        return rbac.Matcher("any")
    if kind in ("and_rules", "or_rules"):
        children = tuple(_permission(r, where) for r in getattr(rule, kind).rules)
        return rbac.Matcher("and" if kind == "and_rules" else "or", children)
    if kind == "not_rule":
        return rbac.Matcher("not", (_permission(rule.not_rule, where),))
    if kind == "header":
        return rbac.Matcher("header", header=_header(rule.header, where))
    if kind == "url_path":
        if rule.url_path.WhichOneof("rule") != "path":
            raise SecurityError(f"{where}: url_path must be a string matcher")
        return rbac.Matcher("url_path", string=_string_matcher(rule.url_path.path, where))
    if kind == "destination_port":
        return rbac.Matcher("destination_port", port=rule.destination_port)
    raise SecurityError(f"{where}: permission rule {kind or '(none)'} is not supported")


def _principal(principal: rbac_config.Principal, where: str) -> rbac.Matcher:
    kind = principal.WhichOneof("identifier")
    if kind == "any":
        return rbac.Matcher("any")
    if kind in ("and_ids", "or_ids"):
        children = tuple(_principal(p, where) for p in getattr(principal, kind).ids)
        return rbac.Matcher("and" if kind == "and_ids" else "or", children)
    if kind == "not_id":
        return rbac.Matcher("not", (_principal(principal.not_id, where),))
    if kind == "header":
        return rbac.Matcher("header", header=_header(principal.header, where))
    if kind == "authenticated":
        name = principal.authenticated
        return rbac.Matcher("authenticated", string=_string_matcher(name.principal_name, where)
                            if name.HasField("principal_name") else None)
    raise SecurityError(f"{where}: principal {kind or '(none)'} is not supported")
