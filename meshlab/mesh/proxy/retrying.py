"""Retries: which upstream outcomes are retriable under each ``retry_on`` token, and how long to back off.

Follows Envoy's router (envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/router_filter,
"x-envoy-retry-on", and ``retry_state_impl.cc``). ``5xx`` retries any 5xx response and any attempt that got no
response (connect failure, reset, per-try timeout); ``gateway-error`` retries 502/503/504, resets and per-try
timeouts; ``reset`` and ``connect-failure`` cover only their own failures; ``retriable-4xx`` is 409 alone;
``refused-stream`` is an HTTP/2 REFUSED_STREAM; ``retriable-status-codes`` uses the policy's list; the gRPC
tokens (``cancelled``, ``unavailable``... in Istio's default) match the response's ``grpc-status``. A circuit
breaker overflow is never retried. Between attempts Envoy waits a fully jittered exponential back-off: retry
*n* waits ``draw((2**n - 1) * base)`` ms, capped at ``max_interval`` (ten times the 25 ms base). Each retry also
needs a slot in the cluster's ``max_retries`` circuit breaker; without one the request ends with ``UO``; with
retries left over but none allowed by ``num_retries``, a retriable failure ends with ``URX``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from meshlab.mesh.proxy.config import RetryPolicy
from meshlab.mesh.proxy.policies import ResponseFlag
from meshlab.mesh.proxy.routing import Draw


class Outcome(Enum):
    """How one upstream attempt ended."""

    RESPONSE = "response"  # headers arrived: look at the status
    CONNECT_FAILURE = "connect-failure"  # refused or connect timeout
    RESET = "reset"  # connection closed or reset before the response headers
    REFUSED_STREAM = "refused-stream"
    PER_TRY_TIMEOUT = "per-try-timeout"
    OVERFLOW = "overflow"  # the connection pool refused the attempt (circuit breaker)


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    status: int | None = None
    grpc_status: int | None = None  # the response's ``grpc-status`` header, if any

    @classmethod
    def response(cls, status: int, *, grpc_status: int | None = None) -> Attempt:
        return cls(Outcome.RESPONSE, status, grpc_status)


_GRPC_RETRY_ON = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13, "unavailable": 14}


def is_retriable(policy: RetryPolicy, attempt: Attempt) -> bool:
    on = policy.retry_on
    outcome = attempt.outcome
    if outcome is Outcome.OVERFLOW:
        return False
    if outcome is Outcome.RESPONSE:
        status = attempt.status or 0
        return (
            ("5xx" in on and 500 <= status <= 599)
            or ("gateway-error" in on and status in (502, 503, 504))
            or ("retriable-4xx" in on and status == 409)
            or ("retriable-status-codes" in on and status in policy.retriable_status_codes)
            or any(_GRPC_RETRY_ON.get(token) == attempt.grpc_status for token in on if attempt.grpc_status)
        )
    if outcome is Outcome.PER_TRY_TIMEOUT:
        return bool(on & {"5xx", "gateway-error"})
    # No response at all: Envoy counts an upstream reset as a 5xx/gateway error.
    if on & {"5xx", "gateway-error", "reset"}:
        return True
    return (outcome is Outcome.CONNECT_FAILURE and "connect-failure" in on) or (
        outcome is Outcome.REFUSED_STREAM and "refused-stream" in on
    )


def backoff(policy: RetryPolicy, retry_number: int, draw: Draw) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry): full jitter, capped."""
    base_ms = max(1, round(policy.base_interval * 1000))
    cap_ms = round(policy.backoff_cap * 1000)
    window = ((1 << retry_number) - 1) * base_ms
    return min(draw(window), cap_ms) / 1000


@dataclass(frozen=True)
class RetryStep:
    """What to do after an attempt: retry after ``wait`` seconds, or stop (adding ``flag`` to the log)."""

    retry: bool
    wait: float = 0.0
    flag: ResponseFlag | None = None


class RetryState:
    """The retry bookkeeping of one request (mutable, owned by that request)."""

    def __init__(self, policy: RetryPolicy | None, *, draw: Draw) -> None:
        self.policy = policy
        self.retries = 0
        self._draw = draw

    def after(self, attempt: Attempt, *, acquire_retry: Callable[[], bool]) -> RetryStep:
        """Decide after ``attempt``; ``acquire_retry`` takes a ``max_retries`` slot (the shell releases it)."""
        if self.policy is None or not is_retriable(self.policy, attempt):
            return RetryStep(False)
        if self.retries >= self.policy.num_retries:
            return RetryStep(False, flag=ResponseFlag.URX)
        if not acquire_retry():
            return RetryStep(False, flag=ResponseFlag.UO)
        self.retries += 1
        return RetryStep(True, backoff(self.policy, self.retries, self._draw))
