"""reviews: two reviews of a book (``GET /reviews/<id>``), in three versions that differ only in the stars.

v1 shows no stars and calls nobody; v2 asks ratings and shows black stars; v3 asks ratings and shows red
stars. The version comes from ``--version`` or ``REVIEWS_VERSION`` (the manifests' three Deployments set it),
so one Service with three Deployments behind it is the canary setup the routing lessons steer. v2 and v3
wait up to 10 s for ratings (Bookinfo's hard-coded value, which its fault-injection task relies on: it is
longer than productpage's patience); when ratings fails, each review says "Ratings service is currently
unavailable" instead of stars. The answer names the pod that built it, so a learner sees who served a page.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from typing import Any

from aiohttp import web

from meshlab.mesh.apps.bookstore import serving
from meshlab.mesh.apps.bookstore.calling import (
    SESSION,
    CallPolicy,
    Reply,
    call_json,
    client_session,
    pod_name,
    propagated,
    service_url,
)

RATINGS_POLICY = CallPolicy(timeout=10.0, attempts=1)
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"

REVIEWS = (
    ("Reviewer1", "A storm, a wronged duke and an island of spirits: the last great play reads like a farewell, "
                  "and forgives everyone in it."),
    ("Reviewer2", "Prospero's magic is stagecraft in disguise. Read it aloud; the verse does half the work."),
)


class Version(enum.Enum):
    """Each version's star colour (None: no stars, and no call to ratings)."""

    V1 = "v1"
    V2 = "v2"
    V3 = "v3"

    @property
    def star_color(self) -> str | None:
        return {"v1": None, "v2": "black", "v3": "red"}[self.value]


def build_reviews(product_id: int, version: Version, ratings: Reply | None, pod: str) -> dict[str, Any]:
    """The JSON reviews answers with, given what ratings answered (None for v1, which does not ask)."""
    reviews = []
    for reviewer, text in REVIEWS:
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        color = version.star_color
        if color is not None:
            stars = (ratings.body or {}).get("ratings", {}).get(reviewer) if ratings and ratings.ok else None
            if isinstance(stars, int):
                review["rating"] = {"stars": stars, "color": color}
            else:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
        reviews.append(review)
    return {"id": product_id, "podname": pod, "version": version.value, "reviews": reviews}


def make_app(version: Version) -> web.Application:
    pod = pod_name()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "Reviews is healthy"})

    async def reviews(request: web.Request) -> web.Response:
        try:
            product_id = int(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "please provide a numeric product ID"}, status=400)
        ratings = None
        if version.star_color is not None:
            url = f"{service_url('ratings', os.environ)}/ratings/{product_id}"
            ratings = await call_json(request.app[SESSION], url, propagated(request.headers.items()),
                                      RATINGS_POLICY)
        return web.json_response(build_reviews(product_id, version, ratings, pod))

    app = web.Application(middlewares=[serving.access_log])
    app.router.add_get("/health", health)
    app.router.add_get("/reviews/{id}", reviews)
    app.cleanup_ctx.append(client_session)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serving.add_arguments(parser)
    parser.add_argument("--version", choices=[v.value for v in Version], default=None,
                        help="v1 (no stars), v2 (black stars) or v3 (red stars) (default: $REVIEWS_VERSION or v1)")


def run(args: argparse.Namespace) -> int:
    chosen = args.version or os.environ.get("REVIEWS_VERSION") or "v1"
    try:
        version = Version(chosen)
    except ValueError:
        print(f"reviews: unknown version {chosen!r} (REVIEWS_VERSION): use v1, v2 or v3", file=sys.stderr)
        return 2
    return serving.serve(make_app(version), "reviews", args, f" as {version.value}")
