"""meshlab load: send HTTP requests at a fixed rate or a fixed concurrency and report the latencies.

Two load models, as in fortio and wrk2. **Open** (``rate``): request *i* starts at ``start + i/rate`` whether
or not earlier ones have answered, the way independent users arrive; its latency is counted from that
scheduled time, so a stall shows up in every request that waited behind it instead of vanishing because the
generator waited too ("coordinated omission", Gil Tene's term; HdrHistogram's documentation). **Closed**
(``concurrency``): N workers each send the next request when the previous one answered, the way a pool of
threads behaves; throughput then follows the server's speed. Latencies go into a histogram in the spirit of
HdrHistogram: exact below 256 µs, above that 128 buckets per power of two, so every reported percentile is
within 1/128 (< 0.8 %) of the true value whatever the range, in constant memory. Percentiles use the nearest
rank. :class:`Histogram`, :class:`Tally`, :func:`plan` and :class:`LoadResult` are pure; :func:`load` is the
asyncio runner (aiohttp, honouring ``HTTP_PROXY`` unless told not to) and :func:`run_load` its synchronous
face for notebooks and benchmarks. Bounded by design: at most 10 minutes and 20,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from meshlab.errors import MeshlabError

MAX_DURATION = 600.0
MAX_RATE = 20_000.0
MAX_CONCURRENCY = 10_000
DEFAULT_DURATION = 10.0
DEFAULT_TIMEOUT = 30.0
_EXACT = 256  # values below this many microseconds have a bucket each
_SUB = 128  # buckets per power of two above it


class LoadRefused(MeshlabError):
    """A load that meshlab will not generate (too long, too fast, or contradictory options)."""


# -- the histogram ---------------------------------------------------------------------------------------------


def bucket_of(micros: int) -> int:
    if micros < _EXACT:
        return max(0, micros)
    shift = micros.bit_length() - 8  # micros >> shift falls in [128, 256)
    return _EXACT + (shift - 1) * _SUB + (micros >> shift) - _SUB


def bucket_top(index: int) -> int:
    """The highest value that lands in bucket ``index`` (what a percentile in it reports)."""
    if index < _EXACT:
        return index
    shift, offset = divmod(index - _EXACT, _SUB)
    return ((offset + _SUB + 1) << (shift + 1)) - 1


class Histogram:
    """Latencies in microseconds: counts per bucket, plus the exact count, sum, minimum and maximum."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, micros: int) -> None:
        micros = max(0, int(micros))
        self.counts[bucket_of(micros)] += 1
        self.min = micros if self.count == 0 else min(self.min, micros)
        self.max = max(self.max, micros)
        self.count += 1
        self.total += micros

    def percentile(self, q: float) -> int:
        """The nearest-rank ``q``-th percentile (0 < q <= 100); 0 when empty."""
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_top(index), self.max)
        return self.max

    def buckets(self) -> list[tuple[int, int]]:
        """(highest value, count) of every non-empty bucket, in order: for plots."""
        return [(min(bucket_top(i), self.max), self.counts[i]) for i in sorted(self.counts)]


@dataclass
class Tally:
    """What a run has seen so far (mutable: the runner records into it)."""

    histogram: Histogram = field(default_factory=Histogram)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    def record_response(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.histogram.record(round(seconds * 1e6))

    def record_error(self, kind: str) -> None:
        self.errors[kind] += 1

    @property
    def finished(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())


# -- what to run -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rate: float | None  # open model
    concurrency: int | None  # closed model
    duration: float | None
    requests: int | None

    @property
    def model(self) -> str:
        return f"rate {self.rate:g}/s (open model)" if self.rate else f"concurrency {self.concurrency} (closed model)"


def plan(*, rate: float | None = None, concurrency: int | None = None, duration: float | None = None,
         requests: int | None = None) -> Plan:
    """Check the options and fill in defaults (concurrency 1, 10 s), or raise :class:`LoadRefused`."""
    if rate is not None and concurrency is not None:
        raise LoadRefused("give either a rate (open model) or a concurrency (closed model), not both")
    if rate is not None and not 0 < rate <= MAX_RATE:
        raise LoadRefused(f"the rate must be above 0 and at most {MAX_RATE:,.0f} requests/s (got {rate:g}): "
                          "meshlab load is bounded by design")
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadRefused(f"the concurrency must be from 1 to {MAX_CONCURRENCY:,} (got {concurrency})")
    if duration is not None and not 0 < duration <= MAX_DURATION:
        raise LoadRefused(f"the duration must be above 0 and at most {MAX_DURATION:.0f} s, ten minutes "
                          f"(got {duration:g}): meshlab load is bounded by design")
    if requests is not None and requests < 1:
        raise LoadRefused(f"the number of requests must be at least 1 (got {requests})")
    if rate is not None and requests is not None and duration is None and requests / rate > MAX_DURATION:
        raise LoadRefused(f"{requests} requests at {rate:g}/s would take {requests / rate:.0f} s, more than "
                          f"the {MAX_DURATION:.0f} s meshlab load allows")
    if duration is None and requests is None:
        duration = DEFAULT_DURATION
    if rate is None and concurrency is None:
        concurrency = 1
    return Plan(rate, concurrency, duration, requests)


# -- the result ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, h: Histogram) -> Latency:
        mean = h.total / h.count if h.count else 0.0
        return cls(h.min / 1e3, mean / 1e3, h.percentile(50) / 1e3, h.percentile(90) / 1e3,
                   h.percentile(99) / 1e3, h.max / 1e3)


@dataclass(frozen=True)
class LoadResult:
    """What one run measured; ``str()`` is the summary table, :meth:`to_dict` the ``--json`` document."""

    url: str
    plan: Plan
    elapsed: float  # seconds from the first request's start to the last answer
    sent: int
    statuses: Mapping[int, int]
    errors: Mapping[str, int]
    latency: Latency
    histogram: tuple[tuple[float, int], ...]  # (highest ms, count) per non-empty bucket

    @classmethod
    def of(cls, url: str, p: Plan, tally: Tally, elapsed: float) -> LoadResult:
        return cls(url, p, elapsed, tally.sent, dict(sorted(tally.statuses.items())),
                   dict(sorted(tally.errors.items())), Latency.of(tally.histogram),
                   tuple((top / 1e3, n) for top, n in tally.histogram.buckets()))

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def throughput(self) -> float:
        """Answers per second."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def success_rate(self) -> float:
        """The share of sent requests answered with a 2xx status."""
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return ok / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, Any]:
        lat = self.latency
        return {
            "url": self.url, "rate": self.plan.rate, "concurrency": self.plan.concurrency,
            "elapsedSeconds": round(self.elapsed, 6), "sent": self.sent, "answered": self.answered,
            "throughput": round(self.throughput, 3), "successRate": round(self.success_rate, 6),
            "statuses": {str(k): v for k, v in self.statuses.items()}, "errors": dict(self.errors),
            "latencyMs": {"min": lat.min, "mean": round(lat.mean, 3), "p50": lat.p50, "p90": lat.p90,
                          "p99": lat.p99, "max": lat.max},
            "histogramMs": [list(b) for b in self.histogram],
        }

    def __str__(self) -> str:
        lat = self.latency
        statuses = "  ".join(f"{s}: {n} ({100 * n / self.sent:.1f} %)" for s, n in self.statuses.items()) or "none"
        errors = "  ".join(f"{kind}: {n}" for kind, n in self.errors.items()) or "none"
        rows = [
            ("target", f"{self.url}  —  {self.plan.model}"),
            ("requests", f"{self.sent} sent, {self.answered} answered in {self.elapsed:.2f} s "
                         f"({self.throughput:.1f}/s), {100 * self.success_rate:.1f} % 2xx"),
            ("latency", f"min {lat.min:.2f}  p50 {lat.p50:.2f}  p90 {lat.p90:.2f}  p99 {lat.p99:.2f}  "
                        f"max {lat.max:.2f} ms"),
            ("status", statuses),
            ("errors", errors),
        ]
        return "\n".join(f"{name:<10}{value}" for name, value in rows)


def progress_line(tally: Tally, elapsed: float, p: Plan) -> str:
    """One line for a terminal while the run goes on."""
    goal = f"/{p.duration:g}s" if p.duration is not None else ""
    count = f"/{p.requests}" if p.requests is not None else ""
    ok = sum(n for s, n in tally.statuses.items() if 200 <= s < 300)
    return (f"{elapsed:5.1f}s{goal}  sent {tally.sent}{count}  2xx {ok}  other {tally.finished - ok}  "
            f"p50 {tally.histogram.percentile(50) / 1e3:.2f} ms  p99 {tally.histogram.percentile(99) / 1e3:.2f} ms")


# -- the runner ------------------------------------------------------------------------------------------------

Progress = Callable[[Tally, float], None]


async def load(url: str, *, rate: float | None = None, concurrency: int | None = None,
               duration: float | None = None, requests: int | None = None,
               headers: Mapping[str, str] | None = None, method: str = "GET", timeout: float = DEFAULT_TIMEOUT,
               use_proxy: bool = True, progress: Progress | None = None,
               progress_interval: float = 0.5) -> LoadResult:
    """Run one load against ``url`` (see the module docs for the two models) and return what it measured."""
    p = plan(rate=rate, concurrency=concurrency, duration=duration, requests=requests)
    tally = Tally()
    loop = asyncio.get_running_loop()
    # Open model: one connection per request in flight (the schedule decides, not the pool).
    connector = aiohttp.TCPConnector(limit=0 if p.rate else (p.concurrency or 1))
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async with aiohttp.ClientSession(connector=connector, trust_env=use_proxy, timeout=client_timeout,
                                     headers=dict(headers or {})) as session:
        async def one(started: float) -> None:
            try:
                async with session.request(method, url) as resp:
                    await resp.read()
                tally.record_response(resp.status, loop.time() - started)
            except TimeoutError:
                tally.record_error("timeout")
            except aiohttp.ClientConnectionError as err:
                tally.record_error("connection" if not isinstance(err, aiohttp.ServerDisconnectedError)
                                   else "disconnected")
            except aiohttp.ClientError as err:
                tally.record_error(type(err).__name__)

        start = loop.time()
        ticker = asyncio.create_task(_tick(tally, start, p, progress, progress_interval)) if progress else None
        try:
            if p.rate:
                await _open_model(one, tally, p, p.rate, start)
            else:
                await _closed_model(one, tally, p, p.concurrency or 1, start)
        finally:
            if ticker is not None:
                ticker.cancel()
        elapsed = loop.time() - start
    if progress:
        progress(tally, elapsed)
    return LoadResult.of(url, p, tally, elapsed)


async def _open_model(one: Callable[[float], Any], tally: Tally, p: Plan, rate: float, start: float) -> None:
    loop = asyncio.get_running_loop()
    end = start + (p.duration if p.duration is not None else MAX_DURATION)
    in_flight: set[asyncio.Task[None]] = set()
    i = 0
    while p.requests is None or i < p.requests:
        due = start + i / rate
        if due >= end:
            break
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one(due))  # latency counted from the schedule, not from when it ran
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        tally.sent += 1
        i += 1
    if in_flight:
        await asyncio.gather(*in_flight)


async def _closed_model(one: Callable[[float], Any], tally: Tally, p: Plan, workers: int, start: float) -> None:
    loop = asyncio.get_running_loop()
    end = start + (p.duration if p.duration is not None else MAX_DURATION)

    async def worker() -> None:
        while (p.requests is None or tally.sent < p.requests) and loop.time() < end:
            tally.sent += 1
            await one(loop.time())

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _tick(tally: Tally, start: float, p: Plan, progress: Progress, interval: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        progress(tally, loop.time() - start)


def run_load(url: str, *, rate: float | None = None, concurrency: int | None = None, duration: float | None = None,
             requests: int | None = None, headers: Mapping[str, str] | None = None, **options: Any) -> LoadResult:
    """:func:`load`, synchronously: from a script, or from a notebook whose kernel already runs a loop."""
    coroutine = load(url, rate=rate, concurrency=concurrency, duration=duration, requests=requests,
                     headers=headers, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Jupyter's kernel runs an event loop in this thread: run ours in another one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# -- the command line ------------------------------------------------------------------------------------------


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise LoadRefused(f"a header is NAME:VALUE, not {text!r}")
    return name.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the URL to load (a Service name works in a pod, through HTTP_PROXY)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--rate", type=float, default=None,
                       help=f"requests per second, started on schedule (open model; at most {MAX_RATE:,.0f})")
    model.add_argument("--concurrency", "-c", type=int, default=None,
                       help="requests in flight, each sent when the previous answered (closed model; default 1)")
    parser.add_argument("--duration", "-d", type=float, default=None,
                        help=f"seconds to run (default {DEFAULT_DURATION:g} unless --requests; "
                             f"at most {MAX_DURATION:.0f})")
    parser.add_argument("--requests", "-n", type=int, default=None, help="stop after this many requests")
    parser.add_argument("--header", "-H", action="append", default=[], metavar="NAME:VALUE",
                        help="a header field for every request (repeatable)")
    parser.add_argument("--method", default="GET", help="HTTP method (default GET)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds before a request counts as a timeout (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--no-proxy", action="store_true", help="connect directly, ignoring HTTP_PROXY")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    headers = dict(parse_header(h) for h in args.header)
    p = plan(rate=args.rate, concurrency=args.concurrency, duration=args.duration, requests=args.requests)
    live = sys.stderr.isatty()  # a progress line only where someone watches it

    def show(tally: Tally, elapsed: float) -> None:
        sys.stderr.write("\r\x1b[2K" + progress_line(tally, elapsed, p))
        sys.stderr.flush()

    result = asyncio.run(load(args.url, rate=args.rate, concurrency=args.concurrency, duration=args.duration,
                              requests=args.requests, headers=headers, method=args.method.upper(),
                              timeout=args.timeout, use_proxy=not args.no_proxy, progress=show if live else None))
    if live:
        sys.stderr.write("\n")
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0
