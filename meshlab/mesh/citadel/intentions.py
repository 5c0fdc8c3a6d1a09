"""Consul's *intentions* (source service → destination service: allow or deny), compiled to Istio
AuthorizationPolicies — the same access rules in the two meshes' vocabularies.

Consul (developer.hashicorp.com/consul/docs/connect/intentions) matches a connection against its intentions by
precedence: an exact source and destination first, then a wildcard source (``*``) for that destination, then
the exact source for any destination, then ``* → *``; with none matching, the ACL default policy decides.
Istio (istio.io/latest/docs/concepts/security/#authorization) evaluates DENY policies first, then ALLOW
policies — and once any ALLOW policy selects a workload, whatever no rule matches is denied. So each
destination compiles to one policy selected by its ``app`` label: when what is *not* listed is denied, an
ALLOW policy naming the sources its intentions let in (no rules at all = deny everything); when the
fallback is allow, a DENY policy naming the denied sources (none needed if nobody is denied). Sources become
principals ``<trust-domain>/ns/<ns>/sa/<service>``: Consul on Kubernetes requires a service's account to be
named after the service. L7 permissions (paths, methods) are not compiled here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.errors import CaError
from meshlab.mesh.citadel.identity import DEFAULT_TRUST_DOMAIN, istio_principal

WILDCARD = "*"


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class Intention:
    """``source`` → ``destination``: service names, ``*`` for any, ``<namespace>/<service>`` for a source in
    another namespace."""

    source: str
    destination: str
    action: Action

    def __str__(self) -> str:
        return f"{self.source} => {self.destination} ({self.action.value})"


def parse_intentions(text: str) -> list[Intention]:
    """A table written one intention a line — ``web -> api allow``, ``* -> db deny`` — ``#`` starts a comment."""
    intentions = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=>", "->").split()
        if len(parts) != 4 or parts[1] != "->" or parts[3].lower() not in ("allow", "deny"):
            raise CaError(f"line {number}: expected 'SOURCE -> DESTINATION allow|deny', got {raw.strip()!r}")
        intentions.append(Intention(parts[0], parts[2], Action(parts[3].lower())))
    return intentions


def decide(intentions: Sequence[Intention], source: str, destination: str, *,
           default: Action = Action.ALLOW) -> tuple[Action, Intention | None]:
    """The action Consul takes for ``source`` → ``destination`` and the intention that decided it (None: the
    default policy did)."""
    for src, dst in ((source, destination), (WILDCARD, destination), (source, WILDCARD), (WILDCARD, WILDCARD)):
        for intention in intentions:
            if intention.source == src and intention.destination == dst:
                return intention.action, intention
    return default, None


def _principal(source: str, namespace: str, trust_domain: str) -> str:
    ns, _, service = source.rpartition("/")
    return istio_principal(trust_domain, ns or namespace, service)


def compile_intentions(intentions: Iterable[Intention], *, namespace: str, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                       default: Action = Action.ALLOW, destinations: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``security.istio.io/v1`` AuthorizationPolicy objects (plain dicts) enforcing ``intentions`` for each named
    destination (those in the table, plus ``destinations``: services only a ``*`` intention covers)."""
    table = list(intentions)
    for intention in table:
        if "/" in intention.destination:
            raise CaError(f"{intention}: the destination must be a service of namespace {namespace}")
    names = sorted({i.destination for i in table if i.destination != WILDCARD} | set(destinations))
    sources = sorted({i.source for i in table if i.source != WILDCARD})
    policies = []
    for destination in names:
        fallback, _ = decide(table, "\0unlisted", destination, default=default)
        verdicts = {source: decide(table, source, destination, default=default)[0] for source in sources}
        if fallback is Action.DENY:
            allowed = [_principal(s, namespace, trust_domain) for s, a in verdicts.items() if a is Action.ALLOW]
            rules = [{"from": [{"source": {"principals": allowed}}]}] if allowed else []
            policies.append(_policy(destination, namespace, "ALLOW", rules))
        else:
            denied = [_principal(s, namespace, trust_domain) for s, a in verdicts.items() if a is Action.DENY]
            if denied:
                rules = [{"from": [{"source": {"principals": denied}}]}]
                policies.append(_policy(destination, namespace, "DENY", rules))
    return policies


def _policy(destination: str, namespace: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": destination}}, "action": action}
    if rules:
        spec["rules"] = rules
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": f"intentions-{destination}", "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "meshlab-intentions"}},
            "spec": spec}
