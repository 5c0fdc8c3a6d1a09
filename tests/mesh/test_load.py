"""meshlab load: the histogram's accuracy, the plan's bounds, the two load models against a real backend, the
proxy, and the command line (summary, --json, a progress line only on a terminal)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pty
import random
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from meshlab.mesh.load import (
    Histogram,
    LoadRefused,
    Plan,
    Tally,
    bucket_of,
    bucket_top,
    parse_header,
    plan,
    progress_line,
    run_load,
)
from tests.mesh.harness import App, ForwardProxy, Route, clean_env, free_port, start_app, wait_healthy

# -- the histogram ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "high"), [(0, 2_000), (250, 70_000), (1_000_000, 1_100_000),
                                           (2**33 - 50_000, 2**33 + 50_000)],
                         ids=["exact range and first octaves", "milliseconds", "around a second", "hours"])
def test_buckets_are_ordered_and_within_1_in_128(low: int, high: int) -> None:
    previous = bucket_of(low)
    for value in range(low, high):
        index = bucket_of(value)
        assert index in (previous, previous + 1)  # no gaps, no overlaps
        assert value <= bucket_top(index) <= value + max(0, value) / 128
        previous = index


def exact_percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


DISTRIBUTIONS: dict[str, Callable[[random.Random], int]] = {
    "uniform 0.1-50 ms": lambda r: r.randint(100, 50_000),
    "log-normal around 2 ms": lambda r: int(r.lognormvariate(math.log(2_000), 1.0)),
    "bimodal 1 ms / 3 s": lambda r: int(r.gauss(1_000, 100)) if r.random() < 0.9 else int(r.gauss(3e6, 1e5)),
    "sub-256 µs": lambda r: r.randint(0, 255),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_percentiles_match_the_exact_values_within_1_in_128(name: str) -> None:
    rng = random.Random(7)
    values = [max(0, DISTRIBUTIONS[name](rng)) for _ in range(20_000)]
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    for q in (50, 90, 99, 99.9, 100):
        exact = exact_percentile(values, q)
        assert exact <= histogram.percentile(q) <= exact + exact / 128, q
    assert (histogram.min, histogram.max, histogram.count) == (min(values), max(values), len(values))
    assert sum(n for _, n in histogram.buckets()) == len(values)


def test_an_empty_histogram_reports_zero() -> None:
    assert Histogram().percentile(99) == 0


# -- the plan and the summary ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "expected"), [
    ({}, Plan(None, 1, 10.0, None)),
    ({"rate": 100}, Plan(100, None, 10.0, None)),
    ({"concurrency": 8, "requests": 50}, Plan(None, 8, None, 50)),
    ({"rate": 20_000, "duration": 600}, Plan(20_000, None, 600, None)),
], ids=["defaults: one at a time for 10 s", "a rate", "a concurrency and a count", "the largest load allowed"])
def test_plan(options: dict[str, float], expected: Plan) -> None:
    assert plan(**options) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "message"), [
    ({"duration": 601}, "the duration must be above 0 and at most 600 s, ten minutes (got 601)"),
    ({"rate": 20_001}, "the rate must be above 0 and at most 20,000 requests/s (got 20001)"),
    ({"rate": 10, "concurrency": 2}, "give either a rate (open model) or a concurrency (closed model), not both"),
    ({"requests": 0}, "the number of requests must be at least 1 (got 0)"),
    ({"rate": 1, "requests": 1000}, "1000 requests at 1/s would take 1000 s, more than the 600 s"),
    ({"concurrency": 0}, "the concurrency must be from 1 to 10,000 (got 0)"),
], ids=["[Error] over ten minutes", "[Error] over 20,000/s", "[Error] both models", "[Error] no requests",
        "[Error] a count that takes too long", "[Error] no concurrency"])
def test_plan_refuses(options: dict[str, float], message: str) -> None:
    with pytest.raises(LoadRefused) as err:
        plan(**options)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("text", "expected"), [("end-user: jason", ("end-user", "jason")),
                                                ("x-a:b:c", ("x-a", "b:c"))], ids=["spaces trimmed", "colons kept"])
def test_parse_header(text: str, expected: tuple[str, str]) -> None:
    assert parse_header(text) == expected


def test_parse_header_refuses() -> None:
    with pytest.raises(LoadRefused, match="a header is NAME:VALUE"):
        parse_header("no-colon")


def test_summary_and_json_of_a_result() -> None:
    from meshlab.mesh.load import LoadResult

    tally = Tally()
    for ms in range(1, 101):
        tally.sent += 1
        tally.record_response(200 if ms <= 90 else 503, ms / 1000)
    tally.sent += 1
    tally.record_error("timeout")
    result = LoadResult.of("http://httpbin:8000/get", Plan(50, None, 2.0, None), tally, 2.0)
    doc = result.to_dict()
    assert (doc["sent"], doc["answered"], doc["statuses"], doc["errors"]) == (101, 100, {"200": 90, "503": 10},
                                                                              {"timeout": 1})
    # percentiles report their bucket's highest value: within 1/128 above the exact one
    assert doc["latencyMs"] == {"min": 1.0, "mean": 50.5, "p50": pytest.approx(50.0, rel=1 / 128),
                                "p90": pytest.approx(90.0, rel=1 / 128), "p99": pytest.approx(99.0, rel=1 / 128),
                                "max": 100.0}
    assert round(result.success_rate, 3) == 0.891 and result.throughput == 50.0
    lines = str(result).splitlines()
    assert lines[0] == "target    http://httpbin:8000/get  —  rate 50/s (open model)"
    assert lines[1] == "requests  101 sent, 100 answered in 2.00 s (50.0/s), 89.1 % 2xx"
    assert lines[3] == "status    200: 90 (89.1 %)  503: 10 (9.9 %)"
    assert lines[4] == "errors    timeout: 1"
    assert progress_line(tally, 1.0, Plan(50, None, 2.0, None)).startswith("  1.0s/2s  sent 101  2xx 90  other 11")


# -- against a real backend ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def httpbin() -> Iterator[App]:
    app = start_app("httpbin", env=clean_env())
    try:
        wait_healthy([app], health="/healthz")
        yield app
    finally:
        app.stop()


def test_a_fixed_rate_is_kept(httpbin: App) -> None:
    result = run_load(f"{httpbin.url}/get", rate=200, duration=2, use_proxy=False)
    assert result.sent == 400 and result.statuses == {200: 400}
    assert abs(result.throughput - 200) / 200 <= 0.05
    assert abs(result.elapsed - 2.0) / 2.0 <= 0.05


def test_the_open_model_does_not_wait_for_slow_answers(httpbin: App) -> None:
    result = run_load(f"{httpbin.url}/delay/0.5", rate=10, duration=1, use_proxy=False)
    assert result.sent == 10 and result.statuses == {200: 10}
    assert result.elapsed < 1.8  # ten requests overlapped: a closed model with one worker would take 5 s
    assert 500 <= result.latency.p50 < 900


def test_the_closed_model_waits_for_each_answer(httpbin: App) -> None:
    result = run_load(f"{httpbin.url}/delay/0.25", concurrency=2, duration=1, use_proxy=False)
    assert 8 <= result.sent <= 10 and result.statuses == {200: result.sent}


def test_status_counts_and_errors(httpbin: App) -> None:
    mixed = run_load(f"{httpbin.url}/status/200,503", concurrency=4, requests=60, use_proxy=False)
    assert mixed.sent == 60 and set(mixed.statuses) == {200, 503} and sum(mixed.statuses.values()) == 60
    refused = run_load(f"http://127.0.0.1:{free_port('127.0.0.1')}/", requests=5, use_proxy=False)
    assert (refused.sent, dict(refused.statuses), dict(refused.errors)) == (5, {}, {"connection": 5})


def test_http_proxy_is_honoured_unless_told_not_to(httpbin: App, monkeypatch: pytest.MonkeyPatch) -> None:
    with ForwardProxy() as proxy:
        proxy.routes["httpbin"] = Route([(httpbin.host, httpbin.port)])
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        through = run_load("http://httpbin:8000/headers", requests=5, headers={"end-user": "jason"})
        assert through.statuses == {200: 5}
        assert [f.headers.get("end-user") for f in proxy.requests_to("httpbin")] == ["jason"] * 5
        direct = run_load("http://httpbin:8000/headers", requests=2, use_proxy=False)
        assert direct.statuses == {} and direct.errors == {"connection": 2}  # no DNS for Service names here
        assert len(proxy.seen) == 5


def test_run_load_works_inside_a_running_event_loop(httpbin: App) -> None:
    async def notebook_cell() -> int:
        return run_load(f"{httpbin.url}/get", requests=3, use_proxy=False).sent

    assert asyncio.run(notebook_cell()) == 3


# -- the command line ------------------------------------------------------------------------------------------


def test_cli_json_and_no_progress_when_not_a_terminal(httpbin: App) -> None:
    proc = subprocess.run([sys.executable, "-m", "meshlab.cli", "load", f"{httpbin.url}/get", "-n", "5", "-c", "2",
                           "--json", "-H", "x-a: 1"], env=clean_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert (doc["sent"], doc["statuses"], doc["concurrency"]) == (5, {"200": 5}, 2)


def test_cli_progress_line_on_a_terminal(httpbin: App) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "meshlab.cli", "load", f"{httpbin.url}/get", "--rate", "20",
                               "-d", "1.2"], env=clean_env(), stdout=subprocess.PIPE, stderr=follower, text=True,
                              timeout=30)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    assert b"\r" in shown and b"sent 24/" not in shown and b"/1.2s  sent " in shown
    assert proc.stdout.splitlines()[1].startswith("requests  24 sent, 24 answered")


def test_cli_refuses_a_load_past_its_bounds() -> None:
    proc = subprocess.run([sys.executable, "-m", "meshlab.cli", "load", "http://x/", "--duration", "601"],
                          env=clean_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("meshlab: the duration must be above 0 and at most 600 s, ten minutes")
