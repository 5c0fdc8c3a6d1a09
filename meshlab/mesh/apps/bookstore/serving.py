"""The server shell every bookstore service shares: where to listen, one access-log line per request.

Each service is an aiohttp application whose handlers call pure functions; this module adds the command-line
options they have in common (``--host``, ``--port``) and prints one line per request to stdout (what
``kubectl logs`` shows), leaving out the health checks that probes send every few seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from aiohttp import web

from meshlab.mesh.apps.bookstore.calling import PORT
from meshlab.podnet import listen_address

HEALTH_PATHS = frozenset({"/health", "/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: the pod's address, see meshlab.podnet)")
    parser.add_argument("--port", type=int, default=PORT, help=f"port (default: {PORT})")


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500  # what aiohttp answers when a handler raises something else
    try:
        response = await handler(request)
    except web.HTTPException as err:
        status = err.status
        raise
    else:
        status = response.status
        return response
    finally:
        if request.path not in HEALTH_PATHS:
            # the request id ties this line to the same request's lines in other services' logs
            request_id = request.headers.get("x-request-id", "-")
            print(f'{request.remote} "{request.method} {request.path_qs}" {status} {request_id}', flush=True)


def serve(app: web.Application, name: str, args: argparse.Namespace, detail: str = "") -> int:
    """Serve ``app`` until SIGTERM or SIGINT (aiohttp's ``run_app`` stops gracefully on both)."""
    host = args.host or listen_address()
    print(f"{name} listening on http://{host}:{args.port}{detail}", flush=True)
    web.run_app(app, host=host, port=args.port, print=None, access_log=None)
    return 0
