"""Prometheus samples, windows between two scrapes, and ``histogram_quantile`` — the arithmetic of a dashboard.

A proxy (or Mixer) exposes *cumulative* counters: ``istio_requests_total`` only grows, and the latency histogram
``istio_request_duration_milliseconds`` is a set of cumulative ``_bucket`` counters, one per upper bound ``le``
(Istio's bounds are 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
1800000, 3600000 ms, then ``+Inf``). What a dashboard shows is the *increase* over a window, as Prometheus'
``increase()``/``rate()`` compute it: a value that went down means the process restarted and its counter began
again from zero, so the increase is the new value itself (prometheus.io/docs/prometheus/latest/querying/functions,
"Breaks in monotonicity ... are automatically adjusted for"). A series that appears only in the second scrape was
created by its first request during the window (proxies create series lazily), so it counts from zero.
:func:`histogram_quantile` follows Prometheus' ``bucketQuantile`` (promql/quantile.go): find the bucket holding
rank ``q * count`` and interpolate linearly inside it, the lowest bucket starting at 0 and the ``+Inf`` bucket
answering the highest finite bound. Everything here is pure; parsing uses ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable and printed in a stable order
SeriesKey = tuple[str, Labels]  # (sample name, labels)


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True)
class Scrape:
    """One target's exposition at one moment; ``error`` says why there are no samples (unreachable...)."""

    target: str
    at: float  # seconds (time.monotonic() of the scrape)
    samples: Mapping[SeriesKey, float]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_text(text: str) -> dict[SeriesKey, float]:
    """Prometheus text exposition → {(sample name, labels): value}; ``ValueError`` if it does not parse."""
    samples: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, labels_of(sample.labels))] = float(sample.value)
    return samples


def increase(before: Mapping[SeriesKey, float], after: Mapping[SeriesKey, float]) -> dict[SeriesKey, float]:
    """Per-series increase between two scrapes of one target, reset-aware (see the module docstring)."""
    out: dict[SeriesKey, float] = {}
    for key, value in after.items():
        old = before.get(key, 0.0)
        out[key] = value - old if value >= old else value
    return out


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q``-quantile (0..1) of cumulative ``(upper bound, count)`` buckets, as PromQL computes it; None
    when there is nothing to interpolate (no observations, or no ``+Inf`` bucket / fewer than two buckets)."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    if q <= 0:
        return -math.inf if q < 0 else 0.0
    if q >= 1:
        return math.inf if q > 1 else ordered[-2][0]
    rank = q * total
    index = next(i for i, (_, count) in enumerate(ordered) if count >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]  # in the +Inf bucket: the highest finite bound is all PromQL can say
    upper, count = ordered[index]
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = ordered[index - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket
