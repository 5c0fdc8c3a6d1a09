"""Load balancing over a cluster's endpoints: ROUND_ROBIN, LEAST_REQUEST (power of two choices), RANDOM.

Follows Envoy's load balancers (envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing).
Only healthy hosts take traffic: an endpoint EDS marked unhealthy, or one outlier detection ejected, is left out.
When the healthy share falls below the cluster's panic threshold (Envoy's default 50 %; Istio sends 0 to turn
panic off) Envoy assumes the health data is wrong and balances over *all* hosts; with no healthy host and no
panic the pick is None and the proxy answers 503 ``no healthy upstream`` (``UH``). LEAST_REQUEST with equal
weights samples two hosts at random (with replacement) and keeps the one with fewer active requests, the first
on a tie. Randomness comes from an injected ``draw(n) -> [0, n)``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from meshlab.mesh.proxy.config import Endpoint, LbPolicy
from meshlab.mesh.proxy.routing import Draw


def candidates(
    endpoints: Sequence[Endpoint], *, ejected: Collection[str] = (), panic_threshold: float = 50.0
) -> tuple[Endpoint, ...]:
    """The hosts a pick may choose from: the healthy ones, or all of them in panic mode."""
    healthy = tuple(e for e in endpoints if e.healthy and e.host not in ejected)
    if endpoints and 100 * len(healthy) / len(endpoints) < panic_threshold:
        return tuple(endpoints)
    return healthy


class Balancer:
    """One cluster's load balancer. Stateful only for round robin (its position)."""

    def __init__(self, policy: LbPolicy, *, choice_count: int = 2) -> None:
        self.policy = policy
        self.choice_count = choice_count
        self._next = 0

    def pick(
        self,
        endpoints: Sequence[Endpoint],
        *,
        draw: Draw,
        ejected: Collection[str] = (),
        active_requests: Mapping[str, int] | None = None,
        panic_threshold: float = 50.0,
    ) -> Endpoint | None:
        hosts = candidates(endpoints, ejected=ejected, panic_threshold=panic_threshold)
        if not hosts:
            return None
        if self.policy is LbPolicy.ROUND_ROBIN:
            chosen = hosts[self._next % len(hosts)]
            self._next += 1
            return chosen
        if self.policy is LbPolicy.RANDOM:
            return hosts[draw(len(hosts))]
        active = active_requests or {}
        best: Endpoint | None = None
        for _ in range(self.choice_count):
            sampled = hosts[draw(len(hosts))]
            if best is None or active.get(sampled.host, 0) < active.get(best.host, 0):
                best = sampled
        return best
