"""How the bookstore's services call each other: by Service name, through ``HTTP_PROXY``, headers propagated.

A service never learns where its peers run: it asks for ``http://details:9080/details/0`` and lets whatever
``HTTP_PROXY`` names (the lab's kube-proxy, or a sidecar) find a pod. That is the interception contract the
mesh relies on. Tracing works only if every service copies the trace context of the request it is serving
onto the requests it makes — the proxies cannot do it, because they cannot tell which outgoing request
belongs to which incoming one. The fields copied are those Istio's Bookinfo forwards (its productpage's
``forward_headers``; istio.io/latest/docs/tasks/observability/distributed-tracing/overview, "Trace context
propagation"): ``x-request-id``, W3C ``traceparent``/``tracestate``, Zipkin's B3 family, Lightstep's
``x-ot-span-context``, plus ``end-user`` and ``user-agent``, which routing rules match on. A call has a
timeout per attempt and a number of attempts (:class:`CallPolicy`): those numbers are the bug that Istio's
fault-injection lesson uncovers, so they are constants here, not options.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

PORT = 9080
PROPAGATED = ("x-request-id", "end-user", "user-agent", "traceparent", "tracestate", "x-b3-traceid",
              "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3", "x-ot-span-context")


def propagated(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The header fields of an incoming request that its outgoing calls must carry (names lower-cased)."""
    wanted = set(PROPAGATED)
    return {name.lower(): value for name, value in headers if name.lower() in wanted}


def service_url(service: str, env: Mapping[str, str]) -> str:
    """Where ``service`` is reached: ``http://<service>:9080`` (its Service name), or ``$<SERVICE>_URL``.

    The override lets tests and out-of-cluster runs point at an address; pods use the name.
    """
    return env.get(f"{service.upper()}_URL") or f"http://{service}:{PORT}"


@dataclass(frozen=True)
class CallPolicy:
    """Per-attempt timeout (seconds) and how many attempts; any failure (error, timeout, non-200) retries."""

    timeout: float
    attempts: int = 1


@dataclass(frozen=True)
class Reply:
    """What a call came back with: the status (None when no response arrived), the JSON body, or why not."""

    status: int | None
    body: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body is not None


SESSION = web.AppKey("session", aiohttp.ClientSession)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """An application's outgoing HTTP client, for ``app.cleanup_ctx``: open while the server runs."""
    # trust_env: HTTP_PROXY/NO_PROXY (and proxy credentials in the URL, which the lab uses to tell its
    # kube-proxy the caller's namespace) decide the route, as for any well-behaved HTTP client.
    async with aiohttp.ClientSession(trust_env=True) as session:
        app[SESSION] = session
        yield


async def call_json(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                    policy: CallPolicy) -> Reply:
    """GET ``url`` expecting JSON, under ``policy``; never raises for network trouble (it is the reply)."""
    reply = Reply(None, error="not attempted")
    for _ in range(max(1, policy.attempts)):
        reply = await _attempt(session, url, headers, policy.timeout)
        if reply.ok:
            return reply
    return reply


async def _attempt(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], timeout: float) -> Reply:
    try:
        async with session.get(url, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            try:
                body = await resp.json(content_type=None) if text else None
            except ValueError:
                body = None
            return Reply(resp.status, body, "" if resp.status == 200 else f"{resp.status} {resp.reason}")
    except TimeoutError:
        return Reply(None, error=f"timed out after {timeout:g}s")
    except aiohttp.ClientError as err:
        return Reply(None, error=str(err) or type(err).__name__)


def pod_name(env: Mapping[str, str] | None = None) -> str:
    """The serving pod's name: ``POD_NAME`` (downward API) or ``HOSTNAME`` (a container's is its pod's)."""
    env = os.environ if env is None else env
    return env.get("POD_NAME") or env.get("HOSTNAME") or "unknown"
