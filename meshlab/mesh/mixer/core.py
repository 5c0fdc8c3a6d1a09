"""Mixer's sans-I/O core: attribute bags in, policy decisions and metrics out.

In Istio 0.2-1.4 every sidecar asked Mixer (``istio-policy``) ``Check`` before forwarding a request and sent it
batched ``Report``s after (``istio-telemetry``), each request described as an *attribute bag*: named, typed
values from Istio's attribute vocabulary (https://istio.io/v1.4/docs/reference/config/policy-and-telemetry/
attribute-vocabulary/) such as ``source.workload.name``, ``destination.service.host``, ``request.path``,
``response.code``, ``connection.mtls``, ``context.reporter.kind`` (``inbound`` at the server's sidecar,
``outbound`` at the client's). Adapters then turned attributes into decisions and metrics. meshlab's Mixer has
the two adapters the lesson needs, configured by one YAML document (``policy.yaml`` of the ConfigMap
``istio-system/istio-mixer-policy``)::

    deny:                       # Istio's "denier" adapter: PERMISSION_DENIED for matching pairs
    - source: {workload: productpage, namespace: bookstore}      # omitted keys match anything
      destination: {workload: reviews-v3}
    quotas:                     # Istio's "memquota": at most maxAmount requests per validDuration
    - destination: ratings.bookstore.svc.cluster.local             # destination.service.host
      maxAmount: 10
      validDuration: 1s

A denied Check answers gRPC ``PERMISSION_DENIED`` (the sidecar turns it into HTTP 403), an exhausted quota
``RESOURCE_EXHAUSTED`` (HTTP 429), as Istio's Mixer client mapped them. Quotas use fixed windows of
``validDuration`` (memquota's default non-rolling window). Reports feed :class:`meshlab.mesh.mixer.metrics.Metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshlab.errors import MeshlabError
from meshlab.mesh.mixer import mixer_pb2
from meshlab.mesh.mixer.metrics import Metrics

# google.rpc.Code values (https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto)
OK, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE = 0, 7, 8, 14
#: The quota name Istio's sample ``requestcount`` memquota used; the proxy asks 1 of it per request.
REQUEST_COUNT = "requestcount"

Bag = Mapping[str, Any]  # attribute name -> str | int | float | bool (durations in seconds as float)


class PolicyError(MeshlabError):
    """The policy document is malformed (Mixer keeps its previous policy)."""


@dataclass(frozen=True)
class Match:
    """Which workloads a rule side selects: every given field must equal the attribute; none given: any."""

    workload: str = ""
    namespace: str = ""
    principal: str = ""
    service: str = ""  # destination.service.host (destination side only)

    def matches(self, bag: Bag, side: str) -> bool:
        wanted = {f"{side}.workload.name": self.workload, f"{side}.workload.namespace": self.namespace,
                  f"{side}.principal": self.principal, f"{side}.service.host": self.service}
        return all(not value or str(bag.get(name, "")) == value for name, value in wanted.items())


@dataclass(frozen=True)
class DenyRule:
    source: Match
    destination: Match

    def matches(self, bag: Bag) -> bool:
        return self.source.matches(bag, "source") and self.destination.matches(bag, "destination")


@dataclass(frozen=True)
class Quota:
    """At most ``max_amount`` per ``valid_duration`` seconds for requests to ``destination`` (a service host)."""

    destination: str
    max_amount: int
    valid_duration: float = 1.0


@dataclass(frozen=True)
class Policy:
    deny: tuple[DenyRule, ...] = ()
    quotas: tuple[Quota, ...] = ()


def _duration(text: Any) -> float:
    value = str(text or "1s").strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(value[: -len(suffix)]) * scale
    raise PolicyError(f"validDuration {value!r} is not a duration like 500ms, 1s or 1m")


def _match(raw: Any, where: str) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, dict) or set(raw) - {"workload", "namespace", "principal", "service"}:
        raise PolicyError(f"{where} must be a map of workload/namespace/principal/service, not {raw!r}")
    return Match(**{k: str(v) for k, v in raw.items()})


def parse_policy(text: str | None) -> Policy:
    """The policy in ``text`` (YAML; empty means no rules); ``PolicyError`` when malformed."""
    try:
        doc = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as err:
        raise PolicyError(f"policy is not YAML: {err}") from err
    if not isinstance(doc, dict) or set(doc) - {"deny", "quotas"}:
        raise PolicyError("policy must be a map with 'deny' and/or 'quotas'")
    rules = tuple(DenyRule(_match(r.get("source"), f"deny[{i}].source"),
                           _match(r.get("destination"), f"deny[{i}].destination"))
                  for i, r in enumerate(doc.get("deny") or ()) if isinstance(r, dict))
    quotas = []
    for i, q in enumerate(doc.get("quotas") or ()):
        if not isinstance(q, dict) or not q.get("destination") or int(q.get("maxAmount") or 0) < 0:
            raise PolicyError(f"quotas[{i}] needs a destination and a maxAmount >= 0")
        quotas.append(Quota(str(q["destination"]), int(q.get("maxAmount") or 0), _duration(q.get("validDuration"))))
    return Policy(rules, tuple(quotas))


@dataclass(frozen=True)
class CheckResult:
    code: int = OK
    message: str = ""
    granted: Mapping[str, int] = field(default_factory=dict)


class Mixer:
    """One Mixer: the current policy, the quota windows, and the metrics of every report received."""

    def __init__(self, policy: Policy | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or Policy()
        self.metrics = Metrics()
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # quota destination -> (window start, amount used)
        self.checks = 0
        self.reports = 0

    def check(self, bag: Bag, quotas: Mapping[str, int] | None = None) -> CheckResult:
        """The precondition for one request: denied by a rule, or out of quota, or OK."""
        self.checks += 1
        for rule in self.policy.deny:
            if rule.matches(bag):
                source, destination = bag.get("source.workload.name"), bag.get("destination.workload.name")
                return CheckResult(PERMISSION_DENIED,
                                   f"denier.istio-system:{source or 'unknown'} may not call {destination or 'unknown'}")
        granted: dict[str, int] = {}
        for name, amount in (quotas or {}).items():
            granted[name] = self._allocate(str(bag.get("destination.service.host", "")), amount)
            if granted[name] < amount:
                return CheckResult(RESOURCE_EXHAUSTED, f"Quota is exhausted for: {name}", granted)
        return CheckResult(OK, "", granted)

    def _allocate(self, destination: str, amount: int) -> int:
        quota = next((q for q in self.policy.quotas if q.destination == destination), None)
        if quota is None:
            return amount
        now = self._clock()
        start, used = self._windows.get(destination, (now, 0))
        if now - start >= quota.valid_duration:
            start, used = now, 0
        if used + amount > quota.max_amount:
            self._windows[destination] = (start, used)
            return 0
        self._windows[destination] = (start, used + amount)
        return amount

    def report(self, bags: Iterable[Bag]) -> None:
        for bag in bags:
            self.reports += 1
            self.metrics.record(bag)


# -- attribute bags <-> the simplified proto ---------------------------------------------------------------------


def to_proto(bag: Bag) -> mixer_pb2.Attributes:
    out = mixer_pb2.Attributes()
    for name, value in bag.items():
        if isinstance(value, bool):
            out.bools[name] = value
        elif isinstance(value, int):
            out.int64s[name] = value
        elif isinstance(value, float) and name.endswith(".duration"):
            out.durations[name].FromNanoseconds(int(value * 1e9))
        elif isinstance(value, float):
            out.doubles[name] = value
        else:
            out.strings[name] = str(value)
    return out


def from_proto(attributes: mixer_pb2.Attributes) -> dict[str, Any]:
    bag: dict[str, Any] = {**attributes.strings, **attributes.int64s, **attributes.doubles, **attributes.bools}
    for name, value in attributes.durations.items():
        bag[name] = value.ToNanoseconds() / 1e9
    return bag
