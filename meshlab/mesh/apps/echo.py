"""echo: an HTTP server that answers every request with what it saw and where it runs.

The lessons' first workload, and the plainest way to watch a Service at work. Each answer names the pod
that served it — from the environment the manifest fills in through the downward API (``POD_NAME``,
``POD_NAMESPACE``, ``POD_IP``, ``NODE_NAME`` as ``fieldRef`` to ``metadata.name``, ``metadata.namespace``,
``status.podIP``, ``spec.nodeName``; kubernetes.io/docs/concepts/workloads/pods/downward-api) — so calls
through a Service show the load spread over its endpoints, and the request's header fields show what every
proxy on the way added or removed. ``/healthz`` answers 200 for probes. Each request (probes aside) is one
line on stdout, like an access log: that is what ``kubectl logs`` shows. Building the answer is
:func:`answer`, a pure function; the aiohttp server around it only moves bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from meshlab.podnet import listen_address

DEFAULT_PORT = 8080
# What each field of the answer's "pod" is read from: env variables a manifest sets with the downward API.
DOWNWARD_API = {"name": "POD_NAME", "namespace": "POD_NAMESPACE", "ip": "POD_IP", "node": "NODE_NAME"}


@dataclass(frozen=True)
class Seen:
    """What the server saw of one request."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    client: str  # the peer address: a proxy in between shows here
    body_bytes: int


@dataclass(frozen=True)
class Identity:
    """Who answers: the pod (from the downward API), the host name, and the message it was given."""

    pod: dict[str, str]
    hostname: str
    message: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], hostname: str, message: str = "") -> Identity:
        return cls({field: env[var] for field, var in DOWNWARD_API.items() if env.get(var)}, hostname, message)


def answer(seen: Seen, who: Identity) -> dict[str, Any]:
    """The JSON document echo sends back."""
    document: dict[str, Any] = {}
    if who.message:
        document["message"] = who.message
    document["pod"] = who.pod
    document["hostname"] = who.hostname
    document["request"] = {
        "method": seen.method,
        "path": seen.path,
        "query": seen.query,
        "headers": _merged(seen.headers),
        "client": seen.client,
        "bodyBytes": seen.body_bytes,
    }
    return document


def _merged(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header fields as one object; a repeated field's values joined with ", " (RFC 9110 §5.3)."""
    merged: dict[str, str] = {}
    for name, value in fields:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def log_line(seen: Seen, status: int) -> str:
    return f'{seen.client} "{seen.method} {seen.path}{"?" + seen.query if seen.query else ""}" {status}'


# -- the server --------------------------------------------------------------------------------------------


def make_app(who: Identity) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        # Not logged: probes every few seconds would bury the requests a learner is looking for.
        return web.Response(text="ok\n")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen = Seen(request.method, request.path, request.query_string, tuple(request.headers.items()),
                    request.remote or "", len(body))
        print(log_line(seen, 200), flush=True)
        return web.json_response(answer(seen, who), dumps=_pretty)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{path:.*}", echo)
    return app


def _pretty(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: the pod's address, see meshlab.podnet)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--message", default=None, help="a message to include in every answer "
                                                        "(default: $ECHO_MESSAGE)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT (aiohttp's ``run_app`` stops gracefully on both)."""
    host = args.host or listen_address()
    # A container's hostname is its pod's name; the lab's processes share the node's, but get HOSTNAME.
    hostname = os.environ.get("HOSTNAME") or socket.gethostname()
    who = Identity.from_env(os.environ, hostname, args.message or os.environ.get("ECHO_MESSAGE", ""))
    pod = f"{who.pod.get('namespace', '?')}/{who.pod.get('name', '?')}"
    print(f"echo listening on http://{host}:{args.port} as pod {pod}", flush=True)
    web.run_app(make_app(who), host=host, port=args.port, print=None, access_log=None)
    return 0
