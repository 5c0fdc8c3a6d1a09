"""ratings: how many stars each reviewer gave a book (``GET /ratings/<id>``), the leaf of the call graph.

It calls nobody, so it is where a fault (a delay, an abort) is injected to watch the callers cope:
reviews v2/v3 wait for it up to 10 s, productpage waits for reviews only 3 s (twice). ``/health`` answers
probes.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from meshlab.mesh.apps.bookstore import serving

# The stars each reviewer gave; reviews shows them next to the text it holds for the same reviewer.
STARS = {"Reviewer1": 5, "Reviewer2": 4}


def ratings_for(product_id: int) -> dict[str, Any]:
    """Every book is rated the same: this is a shop window for traffic, not a database."""
    return {"id": product_id, "ratings": dict(STARS)}


def make_app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "Ratings is healthy"})

    async def ratings(request: web.Request) -> web.Response:
        try:
            product_id = int(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "please provide a numeric product ID"}, status=400)
        return web.json_response(ratings_for(product_id))

    app = web.Application(middlewares=[serving.access_log])
    app.router.add_get("/health", health)
    app.router.add_get("/ratings/{id}", ratings)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serving.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return serving.serve(make_app(), "ratings", args)
