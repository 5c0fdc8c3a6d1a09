"""The bookstore: its pure pieces, then the four services as real processes behind a forward proxy, then the
manifest deployed into the embedded lab."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlab.mesh.apps.bookstore.calling import Reply, propagated, service_url
from meshlab.mesh.apps.bookstore.productpage import (
    DETAILS_UNAVAILABLE,
    PRODUCTS,
    REVIEWS_UNAVAILABLE,
    TITLE,
    api_answer,
    outgoing_headers,
    render_page,
)
from meshlab.mesh.apps.bookstore.reviews import RATINGS_UNAVAILABLE, Version, build_reviews
from tests.mesh.harness import DIRECT, App, ForwardProxy, Route, clean_env, start_app, wait_healthy

MANIFEST = Path(__file__).parents[2] / "meshlab" / "mesh" / "manifests" / "bookstore.yaml"
RATED = Reply(200, {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
TRACE = {"x-request-id": "req-42", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "tracestate": "vendor=1", "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
         "x-b3-spanid": "e457b5a2e4d86bd1", "x-b3-sampled": "1", "b3": "80f198ee56343ba8-e457b5a2e4d86bd1-1",
         "end-user": "jason", "user-agent": "learner/1.0"}


def stars(page: str) -> list[str]:
    """The colour of every star rating on a page ([] for v1)."""
    return re.findall(r'class="stars" style="color: (\w+)"', page)


# -- pure pieces -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("incoming", "expected"), [
    (list(TRACE.items()), TRACE),
    ([("X-Request-Id", "a"), ("End-User", "jason"), ("Cookie", "s=1"), ("Authorization", "t"), ("X-Other", "1")],
     {"x-request-id": "a", "end-user": "jason"}),
    ([("Host", "productpage:9080")], {}),
], ids=["the trace and user fields pass", "names lower-cased, others dropped", "nothing to propagate"])
def test_propagated(incoming: list[tuple[str, str]], expected: dict[str, str]) -> None:
    assert propagated(incoming) == expected


@pytest.mark.parametrize(("env", "url"), [
    ({}, "http://details:9080"),
    ({"DETAILS_URL": "http://127.0.0.1:5000"}, "http://127.0.0.1:5000"),
], ids=["the Service name", "an override"])
def test_service_url(env: dict[str, str], url: str) -> None:
    assert service_url("details", env) == url


@pytest.mark.parametrize(("headers", "cookies", "expected"), [
    ([("end-user", "jason")], {"user": "kim"}, {"end-user": "jason"}),
    ([("x-request-id", "r")], {"user": "kim"}, {"x-request-id": "r", "end-user": "kim"}),
    ([], {}, {}),
], ids=["the header wins", "signed in: the cookie becomes end-user", "anonymous"])
def test_outgoing_headers(headers: list[tuple[str, str]], cookies: dict[str, str], expected: dict[str, str]) -> None:
    assert outgoing_headers(headers, cookies) == expected


@pytest.mark.parametrize(("version", "ratings", "expected"), [
    (Version.V1, None, [None, None]),
    (Version.V2, RATED, [{"stars": 5, "color": "black"}, {"stars": 4, "color": "black"}]),
    (Version.V3, RATED, [{"stars": 5, "color": "red"}, {"stars": 4, "color": "red"}]),
    (Version.V2, Reply(None, error="timed out"), [{"error": RATINGS_UNAVAILABLE}] * 2),
    (Version.V3, Reply(503, None, "503"), [{"error": RATINGS_UNAVAILABLE}] * 2),
], ids=["v1 no stars", "v2 black", "v3 red", "v2 ratings timed out", "v3 ratings answered 503"])
def test_build_reviews(version: Version, ratings: Reply | None, expected: list[Any]) -> None:
    built = build_reviews(0, version, ratings, "reviews-x")
    assert (built["podname"], built["version"]) == ("reviews-x", version.value)
    assert [r.get("rating") for r in built["reviews"]] == expected
    assert all(r["text"] for r in built["reviews"])


@pytest.mark.parametrize(("version", "ratings", "colors", "messages"), [
    (Version.V1, None, [], []),
    (Version.V2, RATED, ["black", "black"], []),
    (Version.V3, RATED, ["red", "red"], []),
    (Version.V2, Reply(None, error="x"), [], [RATINGS_UNAVAILABLE]),
], ids=["v1", "v2", "v3", "ratings unavailable"])
def test_render_page_shows_the_stars_of_each_version(version: Version, ratings: Reply | None, colors: list[str],
                                                     messages: list[str]) -> None:
    reviews = Reply(200, build_reviews(0, version, ratings, "reviews-v9"))
    page = render_page(PRODUCTS[0], Reply(200, {"id": 0, "author": "W. S."}), reviews, None)
    assert f"<title>{TITLE}</title>" in page
    assert stars(page) == colors
    assert all(message in page for message in messages)
    assert REVIEWS_UNAVAILABLE not in page and "W. S." in page


@pytest.mark.parametrize(("details", "reviews", "shown"), [
    (Reply(None, error="timed out"), Reply(200, build_reviews(0, Version.V1, None, "p")), DETAILS_UNAVAILABLE),
    (Reply(200, {"id": 0}), Reply(None, error="timed out"), REVIEWS_UNAVAILABLE),
    (Reply(200, {"id": 0}), Reply(500, None, "500"), REVIEWS_UNAVAILABLE),
], ids=["details down", "reviews timed out", "reviews answered 500"])
def test_render_page_when_a_service_fails(details: Reply, reviews: Reply, shown: str) -> None:
    page = render_page(PRODUCTS[0], details, reviews, "jason")
    assert shown in page and TITLE in page and "Signed in as <b>jason</b>" in page


@pytest.mark.parametrize(("reply", "expected"), [
    (RATED, (200, RATED.body)),
    (Reply(404, None, "404"), (404, {"error": "gone"})),
    (Reply(None, error="timed out"), (503, {"error": "gone"})),
], ids=["passed through", "the peer's error status", "no answer: 503"])
def test_api_answer(reply: Reply, expected: tuple[int, Any]) -> None:
    assert api_answer(reply, "gone") == expected


# -- the services as processes ---------------------------------------------------------------------------------


class Bookstore:
    def __init__(self, proxy: ForwardProxy, apps: dict[str, App]) -> None:
        self.proxy, self.apps = proxy, apps

    def route(self, name: str, *apps: str, delay: float = 0.0) -> None:
        self.proxy.routes[name] = Route([(self.apps[a].host, self.apps[a].port) for a in apps], delay)

    def default_routes(self) -> None:
        for name in ("details", "ratings", "productpage"):
            self.route(name, name)
        self.route("reviews", "reviews-v1", "reviews-v2", "reviews-v3")

    def get(self, path: str, headers: dict[str, str] | None = None, app: str = "productpage") -> tuple[int, str]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.apps[app].url}{path}", headers=headers or {})
        try:
            with DIRECT.open(request, timeout=20) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


@pytest.fixture(scope="module")
def bookstore() -> Iterator[Bookstore]:
    with ForwardProxy() as proxy:
        env = clean_env(HTTP_PROXY=proxy.url)
        # v1 is chosen by its option, v2 and v3 by the environment (as the manifest's Deployments do)
        apps = {name: start_app(*argv, env={**env, **extra}) for name, argv, extra in [
            ("productpage", ["productpage"], {}), ("details", ["details"], {}), ("ratings", ["ratings"], {}),
            ("reviews-v1", ["reviews", "--version", "v1"], {}),
            ("reviews-v2", ["reviews"], {"REVIEWS_VERSION": "v2"}),
            ("reviews-v3", ["reviews"], {"REVIEWS_VERSION": "v3"})]}
        try:
            wait_healthy(list(apps.values()))
            store = Bookstore(proxy, apps)
            store.default_routes()
            yield store
        finally:
            for app in apps.values():
                app.proc.terminate()  # all at once: each takes a moment to shut down gracefully
            for app in apps.values():
                app.stop()


def test_the_page_shows_each_reviews_version_in_turn(bookstore: Bookstore) -> None:
    bookstore.default_routes()
    seen = []
    for _ in range(3):
        status, page = bookstore.get("/productpage")
        assert status == 200 and f"<title>{TITLE}</title>" in page and "William Shakespeare" in page
        seen.append(tuple(stars(page)))
    assert seen == [(), ("black", "black"), ("red", "red")]  # the proxy's round robin: v1, v2, v3


def test_every_call_propagates_the_trace_and_user_headers(bookstore: Bookstore) -> None:
    bookstore.route("reviews", "reviews-v2")
    bookstore.proxy.seen.clear()
    status, page = bookstore.get("/productpage", {**TRACE, "X-Secret": "not for others"})
    assert status == 200 and stars(page) == ["black", "black"]
    calls = {f.host: f for f in bookstore.proxy.seen}
    assert sorted(calls) == ["details", "ratings", "reviews"]  # ratings was called by reviews, not productpage
    for name, call in calls.items():
        assert {k: call.headers.get(k) for k in TRACE} == TRACE, name
        assert "x-secret" not in call.headers, name


def test_the_json_api(bookstore: Bookstore) -> None:
    import json

    bookstore.default_routes()
    assert json.loads(bookstore.get("/api/v1/products")[1])[0]["title"] == "The Tempest"
    status, body = bookstore.get("/api/v1/products/0")
    assert status == 200 and json.loads(body)["author"] == "William Shakespeare"
    status, body = bookstore.get("/api/v1/products/0/ratings")
    assert status == 200 and json.loads(body)["ratings"] == {"Reviewer1": 5, "Reviewer2": 4}
    status, body = bookstore.get("/api/v1/products/0/reviews")
    assert status == 200 and len(json.loads(body)["reviews"]) == 2
    assert bookstore.get("/api/v1/products/x")[0] == 400
    assert bookstore.get("/health")[0] == 200


def test_ratings_unreachable(bookstore: Bookstore) -> None:
    bookstore.route("reviews", "reviews-v3")
    bookstore.proxy.routes.pop("ratings")
    try:
        status, page = bookstore.get("/productpage")
        assert status == 200 and RATINGS_UNAVAILABLE in page and stars(page) == []
        status, body = bookstore.get("/api/v1/products/0/ratings")
        assert status == 502 and "unavailable" in body
    finally:
        bookstore.default_routes()


def test_a_7s_ratings_delay_makes_productpage_give_up_after_two_3s_tries(bookstore: Bookstore) -> None:
    """Istio's fault-injection lesson: reviews would wait 10 s for ratings, productpage only 2 x 3 s."""
    bookstore.route("reviews", "reviews-v2")
    bookstore.route("ratings", "ratings", delay=7.0)
    direct: dict[str, Any] = {}

    def reviews_directly() -> None:
        started = time.monotonic()
        direct["answer"] = bookstore.get("/reviews/0", app="reviews-v2")
        direct["took"] = time.monotonic() - started

    try:
        side = threading.Thread(target=reviews_directly)
        side.start()
        started = time.monotonic()
        status, page = bookstore.get("/productpage")
        took = time.monotonic() - started
        side.join(timeout=15)
    finally:
        bookstore.default_routes()
    assert status == 200 and REVIEWS_UNAVAILABLE in page and "William Shakespeare" in page
    assert 5.9 <= took < 7.0, took
    assert len([f for f in bookstore.proxy.seen if f.host == "reviews"]) >= 2  # the retry
    # reviews itself is patient enough: after ~7 s it answers with stars
    assert direct["answer"][0] == 200 and '"stars": 5' in direct["answer"][1]
    assert 7.0 <= direct["took"] < 9.0


def test_access_log_lines(bookstore: Bookstore) -> None:
    app = start_app("ratings", env=clean_env())
    wait_healthy([app])
    assert bookstore  # the module's services are independent of this one
    DIRECT.open(f"{app.url}/ratings/3", timeout=5).read()
    out = app.stop().splitlines()
    assert out[0] == f"ratings listening on {app.url}"
    assert out[1:] == ['127.0.0.1 "GET /ratings/3" 200 -']  # /health (the probe) is not logged


# -- in the lab ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bookstore_yaml_in_the_embedded_lab(lab: Any, namespace: str) -> None:
    import meshlab.lab

    handle = meshlab.lab.connect(lab.kubeconfig)
    try:
        handle.apply(MANIFEST.read_text(), namespace=namespace)
        for deployment in ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"):
            handle.wait_ready("deployment", deployment, namespace=namespace, timeout=60)
        versions = set()
        for _ in range(9):
            page = handle.get("productpage", 9080, "/productpage", namespace=namespace, timeout=20)
            assert f"<title>{TITLE}</title>" in page and "William Shakespeare" in page
            versions.add(tuple(stars(page)))
            if len(versions) == 3:
                break
        assert versions == {(), ("black", "black"), ("red", "red")}
    finally:
        handle.close()
