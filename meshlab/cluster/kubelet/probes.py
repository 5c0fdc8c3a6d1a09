"""Probe timing and thresholds, as the kubelet's prober workers apply them (``pkg/kubelet/prober/worker.go``).

Each probe of a running container is tried first ``initialDelaySeconds`` after the container started and
then every ``periodSeconds``, each try bounded by ``timeoutSeconds``. A result only changes what the kubelet
reports after ``successThreshold`` consecutive successes or ``failureThreshold`` consecutive failures.
Until then readiness counts as failed (not ready), liveness as succeeded, startup as unknown. While a
startup probe has not succeeded, the other two do not run; once it has, it stops. A liveness or startup
failure gets the container killed (and restarted per ``restartPolicy``); probing then holds until a new
instance starts. Every failed try is reported (the ``Unhealthy`` event), thresholds or not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

Obj = dict[str, Any]

KINDS = ("startup", "readiness", "liveness")
_FIELD = {"startup": "startupProbe", "readiness": "readinessProbe", "liveness": "livenessProbe"}
_TITLE = {"startup": "Startup", "readiness": "Readiness", "liveness": "Liveness"}


@dataclass(frozen=True)
class ProbeSpec:
    kind: str  # startup / readiness / liveness
    handler: Obj  # the probe object: httpGet / tcpSocket / exec / grpc
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None  # probe-level terminationGracePeriodSeconds

    @property
    def title(self) -> str:
        return _TITLE[self.kind]

    @classmethod
    def of(cls, container: Obj, kind: str) -> ProbeSpec | None:
        probe = container.get(_FIELD[kind])
        if not isinstance(probe, dict):
            return None
        grace = probe.get("terminationGracePeriodSeconds")
        return cls(
            kind=kind, handler=probe,
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            # liveness and startup probes must use 1; the apiserver validates that
            success_threshold=int(probe.get("successThreshold") or 1) if kind == "readiness" else 1,
            failure_threshold=int(probe.get("failureThreshold") or 3),
            termination_grace=float(grace) if grace is not None else None,
        )


def probes_of(container: Obj) -> dict[str, ProbeSpec]:
    found = {kind: ProbeSpec.of(container, kind) for kind in KINDS}
    return {kind: spec for kind, spec in found.items() if spec is not None}


@dataclass(frozen=True)
class Tracker:
    """The reported result of one probe and the run of identical results behind it."""

    result: bool | None  # what the kubelet reports: True success, False failure, None unknown
    last: bool | None = None  # the latest try
    run: int = 0  # how many tries in a row gave ``last``
    on_hold: bool = False  # a liveness/startup failure was acted on: wait for a new instance

    @classmethod
    def initial(cls, kind: str) -> Tracker:
        return cls(result={"readiness": False, "liveness": True, "startup": None}[kind])

    def observe(self, ok: bool, spec: ProbeSpec) -> Tracker:
        run = self.run + 1 if self.last == ok else 1
        threshold = spec.success_threshold if ok else spec.failure_threshold
        if run < threshold:
            return replace(self, last=ok, run=run)
        if not ok and spec.kind in ("liveness", "startup"):
            return Tracker(result=False, last=ok, run=0, on_hold=True)
        return Tracker(result=ok, last=ok, run=run)


def first_try_at(spec: ProbeSpec, started_at: float) -> float:
    return started_at + spec.initial_delay


def kill_message(container: str, kind: str) -> str:
    """The ``Killing`` event's message when a probe failure restarts a container."""
    return f"Container {container} failed {kind} probe, will be restarted"
