"""Envoy's RBAC HTTP filter, sans I/O: does a request pass a workload's authorization policies?

Envoy's ``envoy.filters.http.rbac`` (envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/
rbac_filter, ``config/rbac/v3/rbac.proto``) holds an action and named policies; a policy matches when *any*
of its permissions matches the request *and any* of its principals matches the peer. Permissions and
principals are trees: ``and`` / ``or`` / ``not`` / ``any``, and leaves — a header (``:method`` included), the
``url_path`` (the path without its query), the ``destination_port``; for principals ``authenticated``
(the peer certificate's URI SAN, which only an mTLS connection has) or a header. An ``ALLOW`` filter lets a
request through only if some policy matches; a ``DENY`` filter stops it if some policy matches. Istio
puts its DENY filter before its ALLOW filter, so DENY wins; a denied request gets 403 with the body
``RBAC: access denied``, as Envoy answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from meshlab.mesh.proxy.config import HeaderMatch, StringMatch
from meshlab.mesh.proxy.routing import RequestHead, header_matches

DENIED_BODY = "RBAC: access denied"
DENIED_DETAILS = "rbac_access_denied_matched_policy"


@dataclass(frozen=True)
class Request:
    """What RBAC may look at: the request head, the port it arrived on and the peer's identity."""

    head: RequestHead
    destination_port: int
    principal: str = ""  # the peer certificate's URI SAN (spiffe://...); empty without mTLS

    @property
    def url_path(self) -> str:
        return self.head.path.split("?", 1)[0]


@dataclass(frozen=True)
class Matcher:
    """One node of a permission or principal tree. ``kind`` says which fields count:

    ``any``; ``and`` / ``or`` over ``children``; ``not`` of ``children[0]``; ``header``; ``url_path``
    (``string``); ``destination_port`` (``port``); ``authenticated`` (``string`` on the principal name, None =
    any authenticated peer)."""

    kind: Literal["any", "and", "or", "not", "header", "url_path", "destination_port", "authenticated"]
    children: tuple[Matcher, ...] = ()
    header: HeaderMatch | None = None
    string: StringMatch | None = None
    port: int = 0

    def matches(self, request: Request) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "and":
            return all(child.matches(request) for child in self.children)
        if kind == "or":
            return any(child.matches(request) for child in self.children)
        if kind == "not":
            return not self.children[0].matches(request)
        if kind == "header":
            assert self.header is not None
            return header_matches(self.header, request.head)
        if kind == "url_path":
            assert self.string is not None
            return self.string.matches(request.url_path)
        if kind == "destination_port":
            return request.destination_port == self.port
        # authenticated: only an mTLS peer has a principal
        if not request.principal:
            return False
        return self.string is None or self.string.matches(request.principal)


@dataclass(frozen=True)
class Policy:
    permissions: tuple[Matcher, ...]
    principals: tuple[Matcher, ...]

    def matches(self, request: Request) -> bool:
        return (any(p.matches(request) for p in self.permissions)
                and any(p.matches(request) for p in self.principals))


@dataclass(frozen=True)
class RbacFilter:
    action: Literal["ALLOW", "DENY"]
    policies: tuple[tuple[str, Policy], ...]  # (name, policy), in name order as Envoy's map

    def first_match(self, request: Request) -> str | None:
        return next((name for name, policy in self.policies if policy.matches(request)), None)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: The policy that decided (a DENY policy that matched, or the ALLOW policy that let it through).
    policy: str | None = None

    @property
    def reason(self) -> str:
        if self.allowed:
            return f"allowed by {self.policy}" if self.policy else "allowed (no policy applies)"
        return f"denied by {self.policy}" if self.policy else "denied: no ALLOW policy matched"


def evaluate(filters: Sequence[RbacFilter], request: Request) -> Decision:
    """Run the RBAC filters in chain order; the first one that refuses decides."""
    allowed_by: str | None = None
    for rbac_filter in filters:
        matched = rbac_filter.first_match(request)
        if rbac_filter.action == "DENY" and matched is not None:
            return Decision(False, matched)
        if rbac_filter.action == "ALLOW":
            if matched is None:
                return Decision(False)
            allowed_by = matched
    return Decision(True, allowed_by)
