"""details: the facts about a book (``GET /details/<id>``) as JSON, for productpage to show.

A leaf service like ratings; ``/health`` answers probes.
"""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from meshlab.mesh.apps.bookstore import serving

BOOK: dict[str, Any] = {
    "author": "William Shakespeare",
    "year": 1611,
    "type": "paperback",
    "pages": 128,
    "publisher": "Meshlab Classics",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}


def details_for(product_id: int) -> dict[str, Any]:
    return {"id": product_id, **BOOK}


def make_app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "Details is healthy"})

    async def details(request: web.Request) -> web.Response:
        try:
            product_id = int(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "please provide a numeric product ID"}, status=400)
        return web.json_response(details_for(product_id))

    app = web.Application(middlewares=[serving.access_log])
    app.router.add_get("/health", health)
    app.router.add_get("/details/{id}", details)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serving.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return serving.serve(make_app(), "details", args)
