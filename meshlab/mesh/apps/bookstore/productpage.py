"""productpage: the bookstore's front end, an HTML page and a JSON API built from details and reviews.

``GET /productpage`` asks details and reviews (by Service name, through ``HTTP_PROXY``, the incoming trace
and user headers propagated) and renders one page titled "Simple Bookstore App". Which reviews version
answered shows in the stars: none (v1), black (v2), red (v3). productpage gives reviews 3 s per attempt and
tries twice — about 6 s in all — which is shorter than the 10 s reviews gives ratings: inject a 7 s delay
into ratings and the page shows "Sorry, product reviews are currently unavailable for this book." although
reviews itself would have answered (the bug Istio's fault-injection task uncovers). Signing in (``/login``)
sets a ``user`` cookie, sent on as ``end-user`` — the field routing rules match to send one user to v2. The
JSON API mirrors Bookinfo's: ``/api/v1/products``, ``/api/v1/products/<id>`` (details),
``/api/v1/products/<id>/reviews`` and ``/api/v1/products/<id>/ratings``. ``/health`` answers probes.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from meshlab.mesh.apps.bookstore import serving
from meshlab.mesh.apps.bookstore.calling import (
    SESSION,
    CallPolicy,
    Reply,
    call_json,
    client_session,
    propagated,
    service_url,
)

TITLE = "Simple Bookstore App"
DETAILS_POLICY = CallPolicy(timeout=3.0, attempts=1)
REVIEWS_POLICY = CallPolicy(timeout=3.0, attempts=2)  # one retry: ~6 s before giving up
RATINGS_POLICY = CallPolicy(timeout=3.0, attempts=1)
DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Sorry, product ratings are currently unavailable for this book."

PRODUCTS: tuple[dict[str, Any], ...] = ({
    "id": 0,
    "title": "The Tempest",
    "descriptionHtml": "A sorcerer, an island and a shipwreck he arranged himself: Shakespeare's "
                       "<a href=\"https://en.wikipedia.org/wiki/The_Tempest\">romance</a> of revenge "
                       "given up for forgiveness.",
},)


def outgoing_headers(headers: Iterable[tuple[str, str]], cookies: Mapping[str, str]) -> dict[str, str]:
    """The fields productpage sends on: the propagated ones, plus ``end-user`` from the sign-in cookie."""
    sent = propagated(headers)
    user = cookies.get("user")
    if user and "end-user" not in sent:
        sent["end-user"] = user
    return sent


def stars_html(stars: int, color: str) -> str:
    full = max(0, min(5, stars))
    return (f'<span class="stars" style="color: {html.escape(color)}" title="{full} of 5 stars">'
            f'{"&#9733;" * full}{"&#9734;" * (5 - full)}</span>')


def render_page(product: Mapping[str, Any], details: Reply, reviews: Reply, user: str | None) -> str:
    """The whole HTML page for ``product`` from what details and reviews answered."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{TITLE}</title>",
        "<style>body{font-family:sans-serif;max-width:52em;margin:2em auto}"
        ".review{border-left:3px solid #ccc;padding-left:1em;margin:1em 0}"
        ".unavailable{color:#a33}</style></head><body>",
        f'<header><h1>{TITLE}</h1>{_sign_in(user)}</header>',
        f'<h2 class="title">{html.escape(str(product["title"]))}</h2>',
        f'<p class="description">{product["descriptionHtml"]}</p>',  # our own trusted HTML
        '<section id="details"><h3>Book Details</h3>',
    ]
    if details.ok and isinstance(details.body, dict):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in details.body.items() if k != "id")
        parts.append(f"<table>{rows}</table>")
    else:
        parts.append(f'<p class="unavailable">{DETAILS_UNAVAILABLE}</p>')
    parts.append('</section><section id="reviews"><h3>Book Reviews</h3>')
    if reviews.ok and isinstance(reviews.body, dict):
        for review in reviews.body.get("reviews", []):
            parts.append(_review_html(review))
        parts.append(f'<p class="served-by">Reviews served by: {html.escape(str(reviews.body.get("podname")))} '
                     f'({html.escape(str(reviews.body.get("version", "?")))})</p>')
    else:
        parts.append(f'<p class="unavailable">{REVIEWS_UNAVAILABLE}</p>')
    parts.append("</section></body></html>\n")
    return "\n".join(parts)


def _review_html(review: Mapping[str, Any]) -> str:
    out = [f'<blockquote class="review"><p>{html.escape(str(review.get("text", "")))}</p>',
           f'<footer>— {html.escape(str(review.get("reviewer", "")))}</footer>']
    rating = review.get("rating")
    if isinstance(rating, dict) and isinstance(rating.get("stars"), int):
        out.append(stars_html(rating["stars"], str(rating.get("color", "black"))))
    elif isinstance(rating, dict) and rating.get("error"):
        out.append(f'<p class="unavailable">{html.escape(str(rating["error"]))}</p>')
    out.append("</blockquote>")
    return "\n".join(out)


def _sign_in(user: str | None) -> str:
    if user:
        return (f'<form method="post" action="logout">Signed in as <b>{html.escape(user)}</b> '
                '<button>Sign out</button></form>')
    return ('<form method="post" action="login"><input name="username" placeholder="user name"> '
            '<button>Sign in</button></form>')


def api_answer(reply: Reply, unavailable: str) -> tuple[int, Any]:
    """Status and body of an API call passed through: the peer's answer, or an error when it failed."""
    if reply.ok:
        return 200, reply.body
    status = reply.status if reply.status is not None and reply.status >= 400 else 503
    return status, {"error": unavailable}


# -- the server --------------------------------------------------------------------------------------------


def make_app(env: Mapping[str, str] | None = None) -> web.Application:
    env = os.environ if env is None else env
    details_url, reviews_url, ratings_url = (service_url(s, env) for s in ("details", "reviews", "ratings"))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "Product page is healthy"})

    async def page(request: web.Request) -> web.Response:
        product = PRODUCTS[0]
        headers = outgoing_headers(request.headers.items(), request.cookies)
        session = request.app[SESSION]
        details, reviews = await asyncio.gather(
            call_json(session, f"{details_url}/details/{product['id']}", headers, DETAILS_POLICY),
            call_json(session, f"{reviews_url}/reviews/{product['id']}", headers, REVIEWS_POLICY))
        return web.Response(text=render_page(product, details, reviews, headers.get("end-user")),
                            content_type="text/html")

    async def products(request: web.Request) -> web.Response:
        return web.json_response(list(PRODUCTS))

    def api(base: str, path: str, policy: CallPolicy, unavailable: str) -> serving.Handler:
        async def handler(request: web.Request) -> web.Response:
            try:
                product_id = int(request.match_info["id"])
            except ValueError:
                return web.json_response({"error": "please provide a numeric product ID"}, status=400)
            reply = await call_json(request.app[SESSION], f"{base}/{path}/{product_id}",
                                    outgoing_headers(request.headers.items(), request.cookies), policy)
            status, body = api_answer(reply, unavailable)
            return web.json_response(body, status=status)
        return handler

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        user = str(form.get("username") or request.query.get("username") or "").strip()
        response = web.HTTPSeeOther("productpage")
        if user:
            response.set_cookie("user", user, httponly=True, samesite="Lax")
        raise response

    async def logout(request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("productpage")
        response.del_cookie("user")
        raise response

    app = web.Application(middlewares=[serving.access_log])
    app.router.add_get("/health", health)
    app.router.add_get("/", lambda request: _redirect())
    app.router.add_get("/productpage", page)
    app.router.add_get("/api/v1/products", products)
    app.router.add_get("/api/v1/products/{id}", api(details_url, "details", DETAILS_POLICY, DETAILS_UNAVAILABLE))
    app.router.add_get("/api/v1/products/{id}/reviews",
                       api(reviews_url, "reviews", REVIEWS_POLICY, REVIEWS_UNAVAILABLE))
    app.router.add_get("/api/v1/products/{id}/ratings",
                       api(ratings_url, "ratings", RATINGS_POLICY, RATINGS_UNAVAILABLE))
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.cleanup_ctx.append(client_session)
    return app


async def _redirect() -> web.Response:
    raise web.HTTPFound("/productpage")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serving.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return serving.serve(make_app(), "productpage", args)
