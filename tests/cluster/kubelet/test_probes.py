"""Probe thresholds: when a result changes what the kubelet reports."""

from __future__ import annotations

import pytest

from meshlab.cluster.kubelet.probes import ProbeSpec, Tracker, probes_of


def results(kind: str, tries: str, *, success: int = 1, failure: int = 3) -> str:
    """Feed tries ('+' success, '-' failure); return the reported result after each ('R', 'F', '?')."""
    spec = ProbeSpec(kind=kind, handler={}, success_threshold=success, failure_threshold=failure)
    tracker = Tracker.initial(kind)
    out = ""
    for ch in tries:
        tracker = tracker.observe(ch == "+", spec)
        out += {True: "R", False: "F", None: "?"}[tracker.result]
    return out


@pytest.mark.parametrize(("kind", "tries", "success", "failure", "reported"), [
    ("readiness", "+", 1, 3, "R"),
    ("readiness", "-+", 1, 3, "FR"),
    ("readiness", "++-", 2, 3, "FRR"),
    ("readiness", "+--+---", 1, 3, "RRRRRRF"),
    ("readiness", "+-+", 2, 1, "FFF"),
    ("liveness", "--+--", 1, 3, "RRRRR"),
    ("liveness", "---", 1, 3, "RRF"),
    ("liveness", "-", 1, 1, "F"),
    ("startup", "--+", 1, 3, "??R"),
    ("startup", "---", 1, 3, "??F"),
], ids=["ready-at-once", "unready-then-ready", "success-threshold", "failure-threshold", "flapping",
        "liveness-tolerates", "liveness-fails", "liveness-threshold-1", "startup-ok", "startup-fails"])
def test_thresholds(kind: str, tries: str, success: int, failure: int, reported: str) -> None:
    assert results(kind, tries, success=success, failure=failure) == reported


def test_a_liveness_failure_puts_probing_on_hold_until_a_new_instance() -> None:
    spec = ProbeSpec(kind="liveness", handler={}, failure_threshold=1)
    assert Tracker.initial("liveness").observe(False, spec).on_hold


def test_probe_defaults_and_fields() -> None:
    found = probes_of({"name": "a", "readinessProbe": {"httpGet": {"port": 80}, "initialDelaySeconds": 2},
                       "livenessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 5}})
    assert set(found) == {"readiness", "liveness"}
    assert (found["readiness"].initial_delay, found["readiness"].period, found["readiness"].timeout) == (2, 10, 1)
    assert found["liveness"].success_threshold == 1  # only readiness may use another value
