"""Per-request decisions around the upstream call: faults, mirrors, timeouts, and the replies the proxy makes itself.

Semantics follow Envoy's router and fault filters (envoyproxy.io/docs/envoy/latest/configuration/http/
http_filters/fault_filter and .../router_filter). The fault filter first decides, by its own percentage, whether
to delay; after the delay it decides, by a second draw, whether to abort with ``http_status`` (flags ``DI`` and
``FI``). Each mirror policy sends a fire-and-forget copy of a share of requests to its cluster, with ``-shadow``
appended to the host. The route timeout covers the whole exchange, retries included (0 disables it, Istio's
default); when it fires the proxy answers 504 ``upstream request timeout`` (``UT``). Every local reply carries
Envoy's body text and response flags, which the access log prints (``NR``, ``UH``, ``UO``...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from meshlab.mesh.proxy.config import PER_MILLION, FaultPolicy, Route
from meshlab.mesh.proxy.routing import Draw


class ResponseFlag(Enum):
    """Envoy's short response flags, declared in the order Envoy prints them (comma-joined)."""

    UH = "no healthy upstream"
    UT = "upstream request timeout"
    UR = "upstream remote reset"
    UF = "upstream connection failure"
    UC = "upstream connection termination"
    UO = "upstream overflow (circuit breaking)"
    NR = "no route configured"
    DI = "delayed by fault injection"
    FI = "aborted by fault injection"
    DC = "downstream connection termination"
    URX = "upstream retry limit exceeded"
    NC = "upstream cluster not found"


def format_flags(flags: Iterable[ResponseFlag]) -> str:
    """``%RESPONSE_FLAGS%``: ``-`` when there are none."""
    present = set(flags)
    return ",".join(flag.name for flag in ResponseFlag if flag in present) or "-"


def chance(per_million: int, draw: Draw) -> bool:
    """True for ``per_million`` out of a million draws."""
    return per_million > 0 and (per_million >= PER_MILLION or draw(PER_MILLION) < per_million)


@dataclass(frozen=True)
class FaultDecision:
    delay: float | None = None  # seconds to wait before anything else
    abort_status: int | None = None  # then answer this instead of calling upstream

    @property
    def flags(self) -> frozenset[ResponseFlag]:
        flags = set()
        if self.delay is not None:
            flags.add(ResponseFlag.DI)
        if self.abort_status is not None:
            flags.add(ResponseFlag.FI)
        return frozenset(flags)


def decide_fault(fault: FaultPolicy | None, draw: Draw) -> FaultDecision:
    if fault is None:
        return FaultDecision()
    delay = fault.delay if fault.delay is not None and chance(fault.delay_per_million, draw) else None
    abort = fault.abort_status if fault.abort_status is not None and chance(fault.abort_per_million, draw) else None
    return FaultDecision(delay, abort)


def decide_mirrors(route: Route, draw: Draw) -> tuple[str, ...]:
    """The clusters that get a shadow copy of this request."""
    return tuple(m.cluster for m in route.mirrors if chance(m.per_million, draw))


def shadow_authority(authority: str) -> str:
    """Envoy appends ``-shadow`` to the host part, so the mirror target can tell copies apart."""
    if not authority.startswith("["):
        host, sep, port = authority.rpartition(":")
        if sep and port.isdigit():
            return f"{host}-shadow:{port}"
    elif "]:" in authority:
        host, _, port = authority.rpartition(":")
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


def attempt_timeout(route: Route, elapsed: float) -> float | None:
    """How long the next upstream attempt may take: the per-try timeout, capped by what the route timeout leaves.

    None means no limit. A value <= 0 means the route timeout has already expired: answer :func:`timeout_reply`.
    """
    per_try = route.retry.per_try_timeout if route.retry is not None else None
    remaining = route.timeout - elapsed if route.timeout is not None else None
    if per_try is None:
        return remaining
    return per_try if remaining is None else min(per_try, remaining)


@dataclass(frozen=True)
class LocalReply:
    """A response the proxy makes itself: status, body, extra headers, and the flags for the access log."""

    status: int
    body: str
    flags: frozenset[ResponseFlag]
    headers: tuple[tuple[str, str], ...] = ()
    details: str = ""  # %RESPONSE_CODE_DETAILS%


_RESET_BODY = "upstream connect error or disconnect/reset before headers. reset reason: "


def no_route_reply() -> LocalReply:
    return LocalReply(404, "", frozenset({ResponseFlag.NR}), details="route_not_found")


def cluster_not_found_reply() -> LocalReply:
    return LocalReply(503, "", frozenset({ResponseFlag.NC}), details="cluster_not_found")


def no_healthy_upstream_reply() -> LocalReply:
    return LocalReply(503, "no healthy upstream", frozenset({ResponseFlag.UH}), details="no_healthy_upstream")


def overflow_reply() -> LocalReply:
    return LocalReply(
        503,
        _RESET_BODY + "overflow",
        frozenset({ResponseFlag.UO}),
        (("x-envoy-overloaded", "true"),),
        "upstream_reset_before_response_started{overflow}",
    )


def connect_failure_reply() -> LocalReply:
    return LocalReply(
        503,
        _RESET_BODY + "connection failure",
        frozenset({ResponseFlag.UF}),
        details="upstream_reset_before_response_started{connection_failure}",
    )


def reset_reply() -> LocalReply:
    return LocalReply(
        503,
        _RESET_BODY + "connection termination",
        frozenset({ResponseFlag.UC}),
        details="upstream_reset_before_response_started{connection_termination}",
    )


def timeout_reply() -> LocalReply:
    flags = frozenset({ResponseFlag.UT})
    return LocalReply(504, "upstream request timeout", flags, details="upstream_response_timeout")


def fault_abort_reply(status: int) -> LocalReply:
    return LocalReply(status, "fault filter abort", frozenset({ResponseFlag.FI}), details="fault_filter_abort")


def upstream_service_time_header(seconds: float) -> tuple[str, str]:
    """``x-envoy-upstream-service-time``: whole milliseconds spent upstream, retries included."""
    return ("x-envoy-upstream-service-time", str(round(seconds * 1000)))
