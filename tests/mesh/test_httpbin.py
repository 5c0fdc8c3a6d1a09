"""httpbin: its decisions (status lists and weights, delays, injected failures), then the real process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from meshlab.mesh.apps.httpbin import (
    BadSpec,
    choose_status,
    echo_document,
    injected_failure,
    parse_delay,
    parse_statuses,
)
from tests.mesh.harness import DIRECT, App, clean_env, start_app, wait_healthy


@pytest.mark.parametrize(("spec", "expected"), [
    ("418", ((418, 1.0),)),
    ("200,500", ((200, 1.0), (500, 1.0))),
    ("200:3, 503:1", ((200, 3.0), (503, 1.0))),
    ("200:0,503", ((200, 0.0), (503, 1.0))),
], ids=["one code", "a list", "weights", "a zero weight"])
def test_parse_statuses(spec: str, expected: tuple[tuple[int, float], ...]) -> None:
    assert parse_statuses(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("abc", "invalid status code or weight: 'abc'"),
    ("99", "status code out of range 100-599: 99"),
    ("200:-1", "weight must not be negative: '200:-1'"),
    ("200:0", "no status code with a positive weight"),
    ("200:x", "invalid status code or weight: '200:x'"),
], ids=["[Error] not a number", "[Error] out of range", "[Error] negative weight", "[Error] all weights zero",
        "[Error] bad weight"])
def test_parse_statuses_refuses(spec: str, message: str) -> None:
    with pytest.raises(BadSpec) as err:
        parse_statuses(spec)
    assert str(err.value) == message


@pytest.mark.parametrize(("choices", "draw", "status"), [
    (((200, 1.0),), 0.99, 200),
    (((200, 1.0), (500, 1.0)), 0.49, 200),
    (((200, 1.0), (500, 1.0)), 0.5, 500),
    (((200, 3.0), (503, 1.0)), 0.74, 200),
    (((200, 3.0), (503, 1.0)), 0.75, 503),
    (((200, 0.0), (503, 1.0)), 0.0, 503),
], ids=["single", "first half", "second half", "weighted 3:1 below", "weighted 3:1 above", "zero weight skipped"])
def test_choose_status(choices: tuple[tuple[int, float], ...], draw: float, status: int) -> None:
    assert choose_status(choices, draw) == status


@pytest.mark.parametrize(("text", "seconds"), [("0.5", 0.5), ("3", 3.0), ("60", 10.0)],
                         ids=["fraction", "whole", "capped at 10 s"])
def test_parse_delay(text: str, seconds: float) -> None:
    assert parse_delay(text) == seconds


@pytest.mark.parametrize("text", ["-1", "nan", "soon"], ids=["[Error] negative", "[Error] NaN", "[Error] text"])
def test_parse_delay_refuses(text: str) -> None:
    with pytest.raises(BadSpec):
        parse_delay(text)


@pytest.mark.parametrize(("rate", "draw", "fails"), [(0.3, 0.29, True), (0.3, 0.3, False), (0.0, 0.0, False),
                                                     (1.0, 0.999, True)],
                         ids=["below the rate", "at the rate", "never", "always"])
def test_injected_failure(rate: float, draw: float, fails: bool) -> None:
    assert injected_failure(rate, draw) is fails


def test_echo_document() -> None:
    doc = echo_document(method="POST", url="http://h/anything?a=1", args=[("a", "1")],
                        headers=[("X-A", "1"), ("X-A", "2")], origin="127.0.0.1", body=b'{"k": 2}', full=True)
    assert doc == {"args": {"a": "1"}, "headers": {"X-A": "1, 2"}, "origin": "127.0.0.1", "url": "http://h/anything?a=1",
                   "method": "POST", "data": '{"k": 2}', "json": {"k": 2}}
    assert "method" not in echo_document(method="GET", url="u", args=[], headers=[], origin="", body=b"", full=False)


# -- the process -----------------------------------------------------------------------------------------------


def fetch(url: str, *, method: str = "GET", data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with DIRECT.open(request, timeout=15) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def httpbins() -> Iterator[tuple[App, App]]:
    steady = start_app("httpbin", env=clean_env())
    flaky = start_app("httpbin", env=clean_env(FAIL_RATE="0.3"))
    try:
        wait_healthy([steady, flaky], health="/healthz")
        yield steady, flaky
    finally:
        steady.proc.terminate()
        flaky.proc.terminate()
        steady.stop()
        flaky.stop()


@pytest.mark.parametrize(("path", "status", "check"), [
    ("/status/418", 418, lambda body: body == ""),
    ("/status/abc", 400, lambda body: "invalid status code" in body),
    ("/headers", 200, lambda body: json.loads(body)["headers"]["X-Lesson"] == "retries"),
    ("/get?x=1", 200, lambda body: json.loads(body)["args"] == {"x": "1"}),
    ("/ip", 200, lambda body: json.loads(body) == {"origin": "127.0.0.1"}),
    ("/healthz", 200, lambda body: body == "ok\n"),
], ids=["a status", "a bad status", "headers", "get with args", "ip", "healthz"])
def test_endpoints(httpbins: tuple[App, App], path: str, status: int, check: Callable[[str], bool]) -> None:
    got_status, body = fetch(f"{httpbins[0].url}{path}", headers={"X-Lesson": "retries"})
    assert got_status == status
    assert check(body), body


def test_anything_echoes_the_body(httpbins: tuple[App, App]) -> None:
    status, body = fetch(f"{httpbins[0].url}/anything/x", method="PUT", data=b'{"n": 1}')
    assert status == 200 and json.loads(body)["json"] == {"n": 1} and json.loads(body)["method"] == "PUT"


def test_a_status_list_answers_each_code(httpbins: tuple[App, App]) -> None:
    codes = Counter(fetch(f"{httpbins[0].url}/status/200,503")[0] for _ in range(60))
    assert set(codes) == {200, 503} and min(codes.values()) >= 10


def test_delay(httpbins: tuple[App, App]) -> None:
    started = time.monotonic()
    status, _ = fetch(f"{httpbins[0].url}/delay/0.4")
    assert status == 200 and 0.4 <= time.monotonic() - started < 1.5


def test_fail_rate_fails_about_that_share_but_never_the_probe(httpbins: tuple[App, App]) -> None:
    flaky = httpbins[1]
    codes = Counter(fetch(f"{flaky.url}/get")[0] for _ in range(400))
    assert set(codes) == {200, 503}
    assert 0.23 <= codes[503] / 400 <= 0.37  # 0.3 within about three standard deviations
    assert {fetch(f"{flaky.url}/healthz")[0] for _ in range(30)} == {200}


def test_a_bad_fail_rate_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "meshlab.cli", "app", "httpbin", "--fail-rate", "2"],
                          env=clean_env(), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stdout == "httpbin: the fail rate must be a number from 0 to 1, not '2.0'\n"
