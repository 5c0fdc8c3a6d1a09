"""Upstream choice and protection: load balancing, circuit breaking, outlier detection."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from types import MappingProxyType

import pytest

from meshlab.mesh.proxy.balancing import Balancer, candidates
from meshlab.mesh.proxy.circuit import Admission, CircuitBreaker
from meshlab.mesh.proxy.config import ClusterPolicy, Endpoint, LbPolicy, OutlierPolicy, Thresholds
from meshlab.mesh.proxy.outlier import EjectionReason, OutlierDetector
from meshlab.mesh.proxy.upstream import ClusterState, Connection

A, B, C, D = (Endpoint(f"127.0.1.{i}", 9080) for i in range(1, 5))
DOWN = Endpoint("127.0.1.9", 9080, healthy=False)


def test_round_robin_cycles_over_healthy_hosts() -> None:
    balancer = Balancer(LbPolicy.ROUND_ROBIN)
    picks = [balancer.pick([A, B, DOWN, C], draw=lambda n: 0) for _ in range(6)]
    assert picks == [A, B, C, A, B, C]


def test_round_robin_skips_ejected_hosts() -> None:
    balancer = Balancer(LbPolicy.ROUND_ROBIN)
    picks = {balancer.pick([A, B, C], draw=lambda n: 0, ejected={B.host}, panic_threshold=0) for _ in range(4)}
    assert picks == {A, C}


def test_random_uses_the_draw_over_healthy_hosts() -> None:
    balancer = Balancer(LbPolicy.RANDOM)
    assert balancer.pick([A, DOWN, B], draw=lambda n: n - 1) == B


@pytest.mark.parametrize(
    ("draws", "active", "expected"),
    [
        pytest.param([0, 1], {A.host: 5, B.host: 1}, B, id="fewer active requests wins"),
        pytest.param([1, 0], {A.host: 0, B.host: 3}, A, id="either order"),
        pytest.param([0, 1], {A.host: 2, B.host: 2}, A, id="tie keeps the first sample"),
        pytest.param([2, 2], {C.host: 9}, C, id="both samples the same host (with replacement)"),
    ],
)
def test_least_request_power_of_two_choices(draws: list[int], active: dict[str, int], expected: Endpoint) -> None:
    it = iter(draws)
    picked = Balancer(LbPolicy.LEAST_REQUEST).pick([A, B, C], draw=lambda n: next(it), active_requests=active)
    assert picked == expected


def test_least_request_spreads_load_away_from_a_busy_host() -> None:
    import random

    rng = random.Random(7)
    busy = {A.host: 50}
    balancer = Balancer(LbPolicy.LEAST_REQUEST)
    counts = Counter(balancer.pick([A, B, C], draw=rng.randrange, active_requests=busy) for _ in range(900))
    assert counts[A] < 150  # uniform random would give it ~300; it only wins when sampled twice


@pytest.mark.parametrize(
    ("ejected", "threshold", "expected"),
    [
        pytest.param(set(), 50.0, (A, B, C, D), id="all healthy"),
        pytest.param({A.host, B.host}, 50.0, (C, D), id="half healthy: not yet panic"),
        pytest.param({A.host, B.host, C.host}, 50.0, (A, B, C, D), id="25 % healthy: panic, use all"),
        pytest.param({A.host, B.host, C.host, D.host}, 0.0, (), id="panic off (Istio): nobody, 503 UH"),
    ],
)
def test_panic_threshold(ejected: set[str], threshold: float, expected: tuple[Endpoint, ...]) -> None:
    assert candidates([A, B, C, D], ejected=ejected, panic_threshold=threshold) == expected


def test_no_endpoints_no_pick() -> None:
    assert Balancer(LbPolicy.ROUND_ROBIN).pick([], draw=lambda n: 0) is None


# --- circuit breaking --------------------------------------------------------------------------------------------

def test_istio_circuit_breaking_task_one_connection_one_pending() -> None:
    breaker = CircuitBreaker(Thresholds(max_connections=1, max_pending_requests=1))
    outcomes = [breaker.admit(idle_connection=False) for _ in range(3)]
    assert outcomes == [Admission.NEW_CONNECTION, Admission.QUEUE, Admission.OVERFLOW]
    assert breaker.overflows["upstream_rq_pending_overflow"] == 1
    breaker.finish_request()  # the first request is done; its connection serves the queued one
    breaker.dequeue()
    assert (breaker.requests, breaker.pending, breaker.connections) == (1, 0, 1)
    assert breaker.admit(idle_connection=False) is Admission.QUEUE  # room in the queue again


def test_an_idle_keep_alive_connection_is_reused_without_a_new_connection() -> None:
    breaker = CircuitBreaker(Thresholds(max_connections=1))
    assert breaker.admit(idle_connection=False) is Admission.NEW_CONNECTION
    breaker.finish_request()
    assert breaker.admit(idle_connection=True) is Admission.USE_IDLE
    assert breaker.connections == 1


def test_max_requests_caps_active_requests() -> None:
    breaker = CircuitBreaker(Thresholds(max_requests=2))
    assert [breaker.admit(idle_connection=True) for _ in range(3)][-1] is Admission.OVERFLOW
    breaker.finish_request()
    assert breaker.admit(idle_connection=True) is Admission.USE_IDLE


def test_retry_budget_is_a_counter_too() -> None:
    breaker = CircuitBreaker(Thresholds(max_retries=1))
    assert breaker.try_acquire_retry() and not breaker.try_acquire_retry()
    breaker.release_retry()
    assert breaker.try_acquire_retry()
    assert breaker.overflows["upstream_rq_retry_overflow"] == 1


# --- outlier detection -------------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(hosts: list[str], **policy: int | float) -> tuple[OutlierDetector, Clock]:
    clock = Clock()
    fields = {"consecutive_5xx": 3, "interval": 10.0, "base_ejection_time": 30.0, "max_ejection_percent": 100,
              **policy}
    return OutlierDetector(OutlierPolicy(**fields), hosts, clock=clock, draw=lambda n: 0), clock  # type: ignore[arg-type]


def test_consecutive_5xx_eject_and_the_sweep_returns_the_host_after_the_ejection_time() -> None:
    od, clock = detector([A.host, B.host])
    assert [od.record(A.host, 500) for _ in range(2)] == [None, None]
    ejection = od.record(A.host, 500)
    assert ejection is not None and ejection.reason is EjectionReason.CONSECUTIVE_5XX and ejection.until == 1030.0
    assert od.ejected == {A.host}
    clock.now = 1020.0
    assert od.sweep() == [] and od.ejected == {A.host}
    clock.now = 1030.0
    assert od.sweep() == [A.host] and od.ejected == frozenset()


def test_a_success_resets_the_count() -> None:
    od, _ = detector([A.host, B.host])
    for status in (500, 503, 200, 500, 502):
        assert od.record(A.host, status) is None
    assert od.ejected == frozenset()


def test_each_ejection_lasts_longer_and_healthy_intervals_shorten_it_again() -> None:
    od, clock = detector([A.host, B.host])
    for _ in range(3):
        od.record(A.host, 500)
    clock.now += 30
    od.sweep()
    second = [od.record(A.host, 500) for _ in range(3)][-1]
    assert second is not None and (second.times, second.until - clock.now) == (2, 60.0)
    clock.now += 60
    od.sweep()  # back
    clock.now += 10
    od.sweep()  # one healthy interval: the multiplier drops to 1
    third = [od.record(A.host, 500) for _ in range(3)][-1]
    assert third is not None and (third.times, third.until - clock.now) == (2, 60.0)


def test_ejection_time_is_capped_by_max_ejection_time() -> None:
    od, clock = detector([A.host, B.host], base_ejection_time=200.0, max_ejection_time=300.0)
    for _ in range(3):
        od.record(A.host, 500)
    clock.now += 200
    od.sweep()
    again = [od.record(A.host, 500) for _ in range(3)][-1]
    assert again is not None and again.until - clock.now == 300.0


def test_gateway_errors_eject_only_when_enforced() -> None:
    off, _ = detector([A.host, B.host], consecutive_5xx=100, consecutive_gateway_failure=2)
    assert [off.record(A.host, 502) for _ in range(2)] == [None, None]  # Envoy enforces 0 % by default
    on, _ = detector([A.host, B.host], consecutive_5xx=100, consecutive_gateway_failure=2,
                     enforcing_consecutive_gateway_failure=100)
    ejection = [on.record(A.host, 502) for _ in range(2)][-1]
    assert ejection is not None and ejection.reason is EjectionReason.CONSECUTIVE_GATEWAY_FAILURE


def test_500_breaks_a_run_of_gateway_errors() -> None:
    od, _ = detector([A.host, B.host], consecutive_5xx=100, consecutive_gateway_failure=2,
                     enforcing_consecutive_gateway_failure=100)
    assert [od.record(A.host, s) for s in (502, 500, 503)] == [None, None, None]


@pytest.mark.parametrize(
    ("max_percent", "ejected"),
    [
        pytest.param(10, 1, id="10 % of 4: the first ejection is always allowed, then no more"),
        pytest.param(50, 2, id="50 % of 4: two"),
        pytest.param(100, 4, id="100 %: everyone"),
    ],
)
def test_max_ejection_percent(max_percent: int, ejected: int) -> None:
    hosts = [A.host, B.host, C.host, D.host]
    od, _ = detector(hosts, max_ejection_percent=max_percent)
    for host in hosts:
        for _ in range(3):
            od.record(host, 503)
    assert len(od.ejected) == ejected


def test_hosts_that_leave_eds_are_forgotten() -> None:
    od, _ = detector([A.host, B.host])
    for _ in range(3):
        od.record(A.host, 500)
    od.set_hosts([B.host, C.host])
    assert od.ejected == frozenset()
    assert od.record(A.host, 500) is None


class _Writer:
    """The two things an idle connection's writer is asked: is it closing, and close."""

    closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("before", "after", "kept"), [
    pytest.param({}, {}, True, id="same transport: the keep-alive connection is reused"),
    pytest.param({}, {"tlsMode": "istio"}, False, id="the host got a sidecar: mTLS needs a new connection"),
    pytest.param({"tlsMode": "istio"}, {}, False, id="mTLS turned off: plaintext needs a new connection"),
])
def test_an_idle_connection_follows_its_hosts_transport(before: dict[str, str], after: dict[str, str],
                                                        kept: bool) -> None:
    async def scenario() -> bool:
        host = Endpoint("127.0.1.1", 9080, socket_match=MappingProxyType(before))
        state = ClusterState(ClusterPolicy("outbound|9080||reviews"), (host,), draw=lambda n: 0)
        writer = _Writer()
        state.idle[host.host] = deque([Connection(host.host, asyncio.StreamReader(), writer)])  # type: ignore[arg-type]
        state.set_endpoints((Endpoint("127.0.1.1", 9080, socket_match=MappingProxyType(after)),))
        return bool(state.idle.get(host.host)) and not writer.closed

    assert asyncio.run(scenario()) is kept
