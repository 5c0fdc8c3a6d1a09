"""Outlier detection: passive health checking that ejects hosts after consecutive errors and lets them back.

Follows Envoy's outlier detector (envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier and
``outlier_detection.proto``), which Istio's DestinationRule ``outlierDetection`` configures. Every upstream
result is recorded against its host; connect failures count as 503 and timeouts as 504 (Envoy maps
locally-originated errors to codes unless ``split_external_local_origin_errors``). ``consecutive_5xx`` 5xx in a
row, or ``consecutive_gateway_failure`` 502/503/504 in a row, eject the host at once, if the enforcement draw
allows it (``enforcing_*`` percent; Envoy enforces gateway failures 0 % by default, Istio sets 100 %) and if
fewer than ``max_ejection_percent`` of the hosts are already out (the first ejection is always allowed). An
ejection lasts ``base_ejection_time`` times the host's ejection count, capped by ``max_ejection_time``; the sweep
every ``interval`` returns hosts whose time is up and lowers the count of hosts that stayed healthy. Time comes
from an injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from meshlab.mesh.proxy.config import OutlierPolicy
from meshlab.mesh.proxy.routing import Draw

#: Status codes to record for attempts that got no response (Envoy's local-origin error mapping).
CONNECT_FAILURE_STATUS = 503
TIMEOUT_STATUS = 504
RESET_STATUS = 503


class EjectionReason(Enum):
    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"


@dataclass(frozen=True)
class Ejection:
    host: str
    reason: EjectionReason
    until: float  # clock time after which the next sweep returns the host
    times: int  # how many times this host has been ejected in a row


@dataclass
class _Monitor:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejections: int = 0  # the multiplier
    ejected_until: float | None = None


class OutlierDetector:
    """The outlier state of one cluster's hosts (``address:port`` strings)."""

    def __init__(
        self, policy: OutlierPolicy, hosts: Iterable[str], *, clock: Callable[[], float], draw: Draw
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._draw = draw
        self._monitors = {host: _Monitor() for host in hosts}
        self.next_sweep = clock() + policy.interval

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """EDS changed: keep the state of hosts that stay, forget hosts that left."""
        self._monitors = {host: self._monitors.get(host) or _Monitor() for host in hosts}

    @property
    def ejected(self) -> frozenset[str]:
        return frozenset(h for h, m in self._monitors.items() if m.ejected_until is not None)

    def record(self, host: str, status: int) -> Ejection | None:
        """Record one upstream result for ``host``; returns the ejection it caused, if any."""
        monitor = self._monitors.get(host)
        if monitor is None:
            return None
        if not 500 <= status <= 599:
            monitor.consecutive_5xx = monitor.consecutive_gateway = 0
            return None
        ejection = None
        if status in (502, 503, 504):
            monitor.consecutive_gateway += 1
            if monitor.consecutive_gateway == self.policy.consecutive_gateway_failure:
                # Reset so that a fresh run of errors is needed for the next detection.
                monitor.consecutive_gateway = 0
                ejection = self._consider(host, monitor, EjectionReason.CONSECUTIVE_GATEWAY_FAILURE,
                                          self.policy.enforcing_consecutive_gateway_failure)
        else:
            monitor.consecutive_gateway = 0
        monitor.consecutive_5xx += 1
        if monitor.consecutive_5xx == self.policy.consecutive_5xx:
            monitor.consecutive_5xx = 0
            ejection = ejection or self._consider(
                host, monitor, EjectionReason.CONSECUTIVE_5XX, self.policy.enforcing_consecutive_5xx
            )
        return ejection

    def _consider(self, host: str, monitor: _Monitor, reason: EjectionReason, enforcing: int) -> Ejection | None:
        if monitor.ejected_until is not None:
            return None
        if enforcing <= 0 or (enforcing < 100 and self._draw(100) >= enforcing):
            return None
        ejected = len(self.ejected)
        if ejected and 100 * ejected / len(self._monitors) >= self.policy.max_ejection_percent:
            return None
        monitor.ejections += 1
        base = self.policy.base_ejection_time
        duration = min(base * monitor.ejections, max(base, self.policy.max_ejection_time))
        monitor.ejected_until = self._clock() + duration
        return Ejection(host, reason, monitor.ejected_until, monitor.ejections)

    def sweep(self) -> list[str]:
        """The periodic pass (every ``interval``): return hosts whose ejection is over; they are back."""
        now = self._clock()
        self.next_sweep = now + self.policy.interval
        returned = []
        for host, monitor in self._monitors.items():
            if monitor.ejected_until is not None:
                if now >= monitor.ejected_until:
                    monitor.ejected_until = None
                    monitor.consecutive_5xx = monitor.consecutive_gateway = 0
                    returned.append(host)
            elif monitor.ejections > 0:
                monitor.ejections -= 1  # a healthy interval shortens the next ejection
        return returned
