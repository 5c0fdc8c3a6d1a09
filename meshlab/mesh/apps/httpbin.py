"""httpbin: a test backend that answers the way a request asks, in the spirit of httpbin.org.

``/status/{code}`` answers with that code; a comma list picks one at random, optionally weighted
(``/status/200:3,503:1`` answers 503 a quarter of the time), as httpbin's ``/status`` does.
``/delay/{seconds}`` waits first (at most 10 s, httpbin's cap). ``/headers``, ``/get``, ``/anything``
and ``/ip`` echo what arrived — the headers a proxy added show there. ``--fail-rate`` (or ``FAIL_RATE``)
makes a fraction of requests fail with 503 whatever they ask, the flaky backend of the retries and outlier
detection lessons; ``/healthz`` is exempt so probes keep the pod ready. One stdout line per request (probes
aside). The decisions are pure functions taking the random draw; the aiohttp server only moves bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from meshlab.podnet import listen_address

DEFAULT_PORT = 8000
MAX_DELAY = 10.0
RANDOM = web.AppKey("random", random.Random)


class BadSpec(ValueError):
    """A path parameter httpbin cannot use (answered with 400)."""


def parse_statuses(spec: str) -> tuple[tuple[int, float], ...]:
    """``"200"``, ``"200,500"`` or ``"200:3,503:1"`` as (code, weight) pairs (weight 1 when not given)."""
    choices = []
    for item in spec.split(","):
        code_text, _, weight_text = item.strip().partition(":")
        try:
            code = int(code_text)
            weight = float(weight_text) if weight_text else 1.0
        except ValueError as err:
            raise BadSpec(f"invalid status code or weight: {item.strip()!r}") from err
        if not 100 <= code <= 599:
            raise BadSpec(f"status code out of range 100-599: {code}")
        if weight < 0 or weight != weight:
            raise BadSpec(f"weight must not be negative: {item.strip()!r}")
        choices.append((code, weight))
    if not choices or sum(w for _, w in choices) <= 0:
        raise BadSpec("no status code with a positive weight")
    return tuple(choices)


def choose_status(choices: Sequence[tuple[int, float]], draw: float) -> int:
    """The code for a uniform ``draw`` in [0, 1): each code gets its share of the total weight."""
    bounds, total = [], 0.0
    for _, weight in choices:
        total += weight
        bounds.append(total)
    index = bisect.bisect_right(bounds, draw * total)
    return choices[min(index, len(choices) - 1)][0]


def parse_delay(text: str) -> float:
    """Seconds to wait, capped at :data:`MAX_DELAY`."""
    try:
        seconds = float(text)
    except ValueError as err:
        raise BadSpec(f"invalid delay: {text!r}") from err
    if not seconds >= 0:  # also rejects NaN
        raise BadSpec(f"delay must not be negative: {text!r}")
    return min(seconds, MAX_DELAY)


def injected_failure(fail_rate: float, draw: float) -> bool:
    return draw < fail_rate


def echo_document(*, method: str, url: str, args: Iterable[tuple[str, str]], headers: Iterable[tuple[str, str]],
                  origin: str, body: bytes, full: bool) -> dict[str, Any]:
    """What ``/get`` (``full=False``) and ``/anything`` (``full=True``) answer."""
    document: dict[str, Any] = {"args": _merged(args), "headers": _merged(headers), "origin": origin, "url": url}
    if full:
        text = body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        document.update({"method": method, "data": text, "json": parsed})
    return document


def _merged(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in fields:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


# -- the server --------------------------------------------------------------------------------------------


def make_app(*, fail_rate: float = 0.0, rng: random.Random | None = None) -> web.Application:
    @web.middleware
    async def flaky_and_logged(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        status = 500
        try:
            if fail_rate and injected_failure(fail_rate, request.app[RANDOM].random()):
                status = 503
                return web.Response(status=503, text=f"injected failure (fail rate {fail_rate:g})\n")
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as err:
            status = err.status
            raise
        finally:
            print(f'{request.remote} "{request.method} {request.path_qs}" {status}', flush=True)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def status(request: web.Request) -> web.Response:
        try:
            code = choose_status(parse_statuses(request.match_info["codes"]), request.app[RANDOM].random())
        except BadSpec as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.Response(status=code)

    async def delay(request: web.Request) -> web.Response:
        try:
            seconds = parse_delay(request.match_info["seconds"])
        except BadSpec as err:
            return web.json_response({"error": str(err)}, status=400)
        await asyncio.sleep(seconds)
        return await _echo(request, full=False)

    async def headers(request: web.Request) -> web.Response:
        return web.json_response({"headers": _merged(request.headers.items())})

    async def ip(request: web.Request) -> web.Response:
        return web.json_response({"origin": request.remote or ""})

    async def get(request: web.Request) -> web.Response:
        return await _echo(request, full=False)

    async def anything(request: web.Request) -> web.Response:
        return await _echo(request, full=True)

    app = web.Application(middlewares=[flaky_and_logged])
    app[RANDOM] = rng or random.Random()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/status/{codes}", status)
    app.router.add_route("*", "/delay/{seconds}", delay)
    app.router.add_get("/headers", headers)
    app.router.add_get("/ip", ip)
    app.router.add_get("/get", get)
    app.router.add_route("*", "/anything", anything)
    app.router.add_route("*", "/anything/{rest:.*}", anything)
    return app


async def _echo(request: web.Request, *, full: bool) -> web.Response:
    body = await request.read()
    return web.json_response(echo_document(method=request.method, url=str(request.url),
                                           args=request.query.items(), headers=request.headers.items(),
                                           origin=request.remote or "", body=body, full=full),
                             dumps=lambda d: json.dumps(d, indent=2) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: the pod's address, see meshlab.podnet)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--fail-rate", type=float, default=None,
                        help="fraction of requests (0-1) answered 503 whatever they ask (default: $FAIL_RATE or 0)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    text = str(args.fail_rate if args.fail_rate is not None else os.environ.get("FAIL_RATE") or "0")
    try:
        fail_rate = float(text)
    except ValueError:
        fail_rate = -1.0
    if not 0.0 <= fail_rate <= 1.0:
        print(f"httpbin: the fail rate must be a number from 0 to 1, not {text!r}", flush=True)
        return 2
    host = args.host or listen_address()
    print(f"httpbin listening on http://{host}:{args.port} (fail rate {fail_rate:g})", flush=True)
    web.run_app(make_app(fail_rate=fail_rate), host=host, port=args.port, print=None, access_log=None)
    return 0
