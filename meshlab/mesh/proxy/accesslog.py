"""The access-log line, in Istio's default text format, and ``x-request-id`` generation.

Istio's mesh config ``accessLogFile: /dev/stdout`` with TEXT encoding makes every sidecar print one line per
request in this Envoy format (istio.io/latest/docs/tasks/observability/logs/access-log, "default access log
format")::

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
    %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
    "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME%
    %ROUTE_NAME% "%DOWNSTREAM_PEER_URI_SAN%" mtls=<true|false>

(one line; the last two fields are meshlab's: the peer's SPIFFE ID and whether the connection was mTLS,
which Istio records as the ``connection_security_policy`` metric label). An unknown value prints ``-``;
times are milliseconds; the start time is UTC with milliseconds.
Envoy's connection manager gives a request without ``x-request-id`` a fresh UUID4 so that every hop logs the
same id (envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-request-id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from meshlab.mesh.proxy.policies import ResponseFlag, format_flags

REQUEST_ID = "x-request-id"


@dataclass(frozen=True)
class AccessRecord:
    """Everything one access-log line shows; the shell fills it as the request goes."""

    start_time: datetime
    method: str
    path: str
    protocol: str = "HTTP/1.1"
    response_code: int = 0  # 0: no response was sent (downstream left)
    response_flags: frozenset[ResponseFlag] = field(default_factory=frozenset)
    response_code_details: str = ""
    bytes_received: int = 0
    bytes_sent: int = 0
    duration: float = 0.0  # seconds, first byte in to last byte out
    upstream_service_time: float | None = None  # seconds spent upstream (the response header's value)
    x_forwarded_for: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    authority: str | None = None
    upstream_host: str | None = None
    upstream_cluster: str | None = None
    upstream_local_address: str | None = None
    downstream_local_address: str | None = None
    downstream_remote_address: str | None = None
    route_name: str | None = None
    mtls: bool = False  # the downstream connection was mutual TLS
    peer_principal: str | None = None  # the downstream peer's SPIFFE ID (its certificate's URI SAN)
    upstream_mtls: bool = False  # the (last) upstream connection was mutual TLS: the client side's view


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else str(round(seconds * 1000))


def format_start_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_line(record: AccessRecord) -> str:
    r = record
    return (
        f'[{format_start_time(r.start_time)}] "{r.method} {r.path} {r.protocol}" {r.response_code} '
        f"{format_flags(r.response_flags)} {_dash(r.response_code_details)} - \"-\" "
        f"{r.bytes_received} {r.bytes_sent} {_ms(r.duration)} {_ms(r.upstream_service_time)} "
        f'"{_dash(r.x_forwarded_for)}" "{_dash(r.user_agent)}" "{_dash(r.request_id)}" "{_dash(r.authority)}" '
        f'"{_dash(r.upstream_host)}" {_dash(r.upstream_cluster)} {_dash(r.upstream_local_address)} '
        f"{_dash(r.downstream_local_address)} {_dash(r.downstream_remote_address)} - {_dash(r.route_name)} "
        f'"{_dash(r.peer_principal)}" mtls={"true" if r.mtls else "false"}'
    )


def ensure_request_id(
    headers: Iterable[tuple[str, str]], *, new_id: Callable[[], str] = lambda: str(uuid.uuid4())
) -> tuple[tuple[tuple[str, str], ...], str]:
    """The headers with an ``x-request-id`` (added if absent or empty) and that id."""
    kept = [(k, v) for k, v in headers if not (k.lower() == REQUEST_ID and not v.strip())]
    for key, value in kept:
        if key.lower() == REQUEST_ID:
            return tuple(kept), value
    request_id = new_id()
    return (*kept, (REQUEST_ID, request_id)), request_id
