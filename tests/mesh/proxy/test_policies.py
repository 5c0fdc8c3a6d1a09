"""Per-request decisions: fault injection, mirroring, timeouts, local replies, retries."""

from __future__ import annotations

import pytest

from meshlab.mesh.proxy.config import FaultPolicy, MirrorPolicy, RetryPolicy, Route, RouteMatch, WeightedCluster
from meshlab.mesh.proxy.policies import (
    FaultDecision,
    ResponseFlag,
    attempt_timeout,
    decide_fault,
    decide_mirrors,
    format_flags,
    no_route_reply,
    overflow_reply,
    shadow_authority,
    timeout_reply,
)
from meshlab.mesh.proxy.retrying import Attempt, Outcome, RetryState, backoff, is_retriable


def constant(value: int):  # type: ignore[no-untyped-def]
    return lambda n: value


HALF = 500_000


@pytest.mark.parametrize(
    ("fault", "draw", "expected"),
    [
        pytest.param(None, 0, FaultDecision(), id="no fault filter config"),
        pytest.param(FaultPolicy(delay=7.0, delay_per_million=1_000_000), 999_999, FaultDecision(delay=7.0),
                     id="100 % delay always"),
        pytest.param(FaultPolicy(delay=7.0, delay_per_million=HALF), 499_999, FaultDecision(delay=7.0),
                     id="50 % delay, draw inside"),
        pytest.param(FaultPolicy(delay=7.0, delay_per_million=HALF), 500_000, FaultDecision(), id="50 %, draw outside"),
        pytest.param(FaultPolicy(abort_status=500, abort_per_million=HALF), 10, FaultDecision(abort_status=500),
                     id="abort"),
        pytest.param(FaultPolicy(abort_status=500, abort_per_million=0), 0, FaultDecision(), id="0 % never aborts"),
        pytest.param(FaultPolicy(delay=1.0, delay_per_million=HALF, abort_status=503, abort_per_million=HALF), 0,
                     FaultDecision(delay=1.0, abort_status=503), id="delay then abort"),
    ],
)
def test_fault_injection(fault: FaultPolicy | None, draw: int, expected: FaultDecision) -> None:
    assert decide_fault(fault, constant(draw)) == expected


def test_delay_and_abort_are_drawn_separately() -> None:
    draws = iter([0, 999_999])  # delayed, then not aborted
    fault = FaultPolicy(delay=1.0, delay_per_million=HALF, abort_status=500, abort_per_million=HALF)
    decision = decide_fault(fault, lambda n: next(draws))
    assert decision == FaultDecision(delay=1.0)
    assert format_flags(decision.flags) == "DI"
    assert format_flags(FaultDecision(1.0, 500).flags) == "DI,FI"


def a_route(**fields: object) -> Route:
    return Route("r", RouteMatch(), (WeightedCluster("c", 1),), **fields)  # type: ignore[arg-type]


def test_mirrors_are_chosen_by_their_own_fraction() -> None:
    route = a_route(mirrors=(MirrorPolicy("all"), MirrorPolicy("tenth", 100_000)))
    assert decide_mirrors(route, constant(99_999)) == ("all", "tenth")
    assert decide_mirrors(route, constant(100_000)) == ("all",)


@pytest.mark.parametrize(
    ("authority", "shadow"),
    [("httpbin", "httpbin-shadow"), ("httpbin:8000", "httpbin-shadow:8000"), ("[::1]:80", "[::1]-shadow:80")],
)
def test_mirrored_requests_carry_a_shadow_host(authority: str, shadow: str) -> None:
    assert shadow_authority(authority) == shadow


@pytest.mark.parametrize(
    ("timeout", "per_try", "elapsed", "expected"),
    [
        pytest.param(None, None, 5.0, None, id="Istio default: no limit at all"),
        pytest.param(3.0, None, 1.0, 2.0, id="route timeout covers the whole exchange"),
        pytest.param(None, 2.0, 9.0, 2.0, id="per-try timeout alone"),
        pytest.param(3.0, 2.0, 0.0, 2.0, id="first try: per-try"),
        pytest.param(3.0, 2.0, 2.5, 0.5, id="later try: what the route timeout leaves"),
        pytest.param(3.0, 2.0, 3.5, -0.5, id="expired: answer 504"),
    ],
)
def test_attempt_timeouts(timeout: float | None, per_try: float | None, elapsed: float,
                          expected: float | None) -> None:
    retry = RetryPolicy(frozenset({"5xx"}), per_try_timeout=per_try)
    assert attempt_timeout(a_route(timeout=timeout, retry=retry), elapsed) == expected


def test_local_replies_say_what_envoy_says() -> None:
    assert (timeout_reply().status, timeout_reply().body, format_flags(timeout_reply().flags)) == (
        504, "upstream request timeout", "UT")
    overflow = overflow_reply()
    assert overflow.status == 503 and ("x-envoy-overloaded", "true") in overflow.headers
    assert format_flags(overflow.flags) == "UO"
    assert (no_route_reply().status, format_flags(no_route_reply().flags)) == (404, "NR")
    assert format_flags([ResponseFlag.URX, ResponseFlag.UF]) == "UF,URX"
    assert format_flags([]) == "-"


R = Attempt.response
CONNECT, RESET, TIMEOUT = Attempt(Outcome.CONNECT_FAILURE), Attempt(Outcome.RESET), Attempt(Outcome.PER_TRY_TIMEOUT)
REFUSED, OVERFLOW = Attempt(Outcome.REFUSED_STREAM), Attempt(Outcome.OVERFLOW)


@pytest.mark.parametrize(
    ("retry_on", "attempt", "retriable"),
    [
        ("5xx", R(500), True), ("5xx", R(503), True), ("5xx", R(404), False), ("5xx", R(200), False),
        ("5xx", CONNECT, True), ("5xx", RESET, True), ("5xx", TIMEOUT, True),
        ("gateway-error", R(502), True), ("gateway-error", R(504), True), ("gateway-error", R(500), False),
        ("gateway-error", RESET, True), ("gateway-error", TIMEOUT, True),
        ("connect-failure", CONNECT, True), ("connect-failure", RESET, False), ("connect-failure", R(503), False),
        ("reset", RESET, True), ("reset", CONNECT, True), ("reset", TIMEOUT, False), ("reset", R(503), False),
        ("retriable-4xx", R(409), True), ("retriable-4xx", R(429), False),
        ("refused-stream", REFUSED, True), ("refused-stream", RESET, False),
        ("unavailable", R(200, grpc_status=14), True), ("unavailable", R(200, grpc_status=1), False),
        ("cancelled", R(200, grpc_status=1), True), ("connect-failure,refused-stream,unavailable,cancelled", R(503),
                                                      False),
        ("5xx,gateway-error,connect-failure,retriable-4xx,reset", OVERFLOW, False),
    ],
    ids=lambda v: (v.outcome.value + (f" {v.status}" if v.status else "")
                   + (f" grpc-status {v.grpc_status}" if v.grpc_status is not None else ""))
    if isinstance(v, Attempt) else str(v),
)
def test_what_each_retry_on_token_retries(retry_on: str, attempt: Attempt, retriable: bool) -> None:
    assert is_retriable(RetryPolicy(frozenset(retry_on.split(","))), attempt) is retriable


def test_retriable_status_codes_use_the_policys_list() -> None:
    policy = RetryPolicy(frozenset({"retriable-status-codes"}), retriable_status_codes=frozenset({429}))
    assert is_retriable(policy, R(429)) and not is_retriable(policy, R(503))


@pytest.mark.parametrize(("retry", "window_ms"), [(1, 25), (2, 75), (3, 175), (4, 375)])
def test_backoff_is_full_jitter_over_a_doubling_window_capped_at_ten_times_base(retry: int, window_ms: int) -> None:
    policy = RetryPolicy(frozenset({"5xx"}))
    windows: list[int] = []

    def top(n: int) -> int:
        windows.append(n)
        return n - 1

    assert backoff(policy, retry, top) == min(window_ms - 1, 250) / 1000
    assert windows == [window_ms]
    assert backoff(policy, retry, constant(0)) == 0.0


def test_istio_default_two_retries_then_urx() -> None:
    state = RetryState(RetryPolicy(frozenset({"5xx"}), num_retries=2), draw=constant(10))
    steps = [state.after(R(503), acquire_retry=lambda: True) for _ in range(3)]
    assert [(s.retry, s.wait, s.flag) for s in steps] == [
        (True, 0.01, None), (True, 0.01, None), (False, 0.0, ResponseFlag.URX)]


def test_a_success_or_a_non_retriable_failure_ends_without_a_flag() -> None:
    state = RetryState(RetryPolicy(frozenset({"5xx"}), num_retries=2), draw=constant(0))
    assert state.after(R(200), acquire_retry=lambda: True).flag is None
    assert state.after(R(404), acquire_retry=lambda: True).retry is False
    assert RetryState(None, draw=constant(0)).after(R(503), acquire_retry=lambda: True).retry is False


def test_a_full_retry_budget_ends_with_uo() -> None:
    state = RetryState(RetryPolicy(frozenset({"5xx"}), num_retries=5), draw=constant(0))
    step = state.after(R(503), acquire_retry=lambda: False)
    assert (step.retry, step.flag) == (False, ResponseFlag.UO)
    assert state.retries == 0
