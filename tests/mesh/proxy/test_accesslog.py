"""The access-log line in Istio's default text format, and x-request-id generation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from meshlab.mesh.proxy.accesslog import AccessRecord, ensure_request_id, format_line, format_start_time
from meshlab.mesh.proxy.policies import ResponseFlag

START = datetime(2024, 6, 2, 13, 24, 57, 930_512, tzinfo=UTC)


def test_a_proxied_request_logs_like_istio() -> None:
    record = AccessRecord(
        start_time=START, method="GET", path="/reviews/0", response_code=200, response_code_details="via_upstream",
        bytes_sent=358, duration=0.0123, upstream_service_time=0.0111, user_agent="python-requests/2.32",
        request_id="9f69865b-eed1-409b-8c12-12436234a191", authority="reviews:9080", upstream_host="127.0.1.5:9080",
        upstream_cluster="outbound|9080|v1|reviews.default.svc.cluster.local",
        downstream_local_address="127.0.0.1:15001", downstream_remote_address="127.0.2.3:51234", route_name="default",
    )
    assert format_line(record) == (
        '[2024-06-02T13:24:57.930Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 358 12 11 "-" '
        '"python-requests/2.32" "9f69865b-eed1-409b-8c12-12436234a191" "reviews:9080" "127.0.1.5:9080" '
        "outbound|9080|v1|reviews.default.svc.cluster.local - 127.0.0.1:15001 127.0.2.3:51234 - default "
        '"-" mtls=false'
    )


def test_a_local_reply_logs_its_flags_and_dashes() -> None:
    record = AccessRecord(start_time=START, method="GET", path="/x", response_code=503,
                          response_flags=frozenset({ResponseFlag.URX, ResponseFlag.UF}),
                          response_code_details="upstream_reset_before_response_started{connection_failure}")
    line = format_line(record)
    assert line.startswith('[2024-06-02T13:24:57.930Z] "GET /x HTTP/1.1" 503 UF,URX upstream_reset')
    assert line.endswith('"-" "-" "-" "-" "-" - - - - - - "-" mtls=false')


def test_start_time_is_utc_with_milliseconds() -> None:
    local = datetime(2024, 1, 1, 2, 0, 0, 5_000, tzinfo=timezone(timedelta(hours=2)))
    assert format_start_time(local) == "2024-01-01T00:00:00.005Z"


def test_a_request_without_an_id_gets_one_and_an_existing_one_is_kept() -> None:
    headers, request_id = ensure_request_id([("Host", "reviews")], new_id=lambda: "fresh")
    assert (headers, request_id) == ((("Host", "reviews"), ("x-request-id", "fresh")), "fresh")
    headers, request_id = ensure_request_id([("X-Request-Id", "abc")], new_id=lambda: "fresh")
    assert (headers, request_id) == ((("X-Request-Id", "abc"),), "abc")
    _, request_id = ensure_request_id([("x-request-id", " ")], new_id=lambda: "fresh")
    assert request_id == "fresh"


def test_generated_ids_are_uuid4() -> None:
    import uuid

    _, first = ensure_request_id([])
    _, second = ensure_request_id([])
    assert first != second and uuid.UUID(first).version == 4
