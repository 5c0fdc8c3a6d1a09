"""How the sidecar finds Pilot where cluster DNS is missing: the Service name read as a DNS name, then a ready
endpoint of the Service port from its EndpointSlices; DNS names that resolve are used as they are."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.errors import XdsError
from meshlab.mesh.proxy.main import ApiResolver, endpoint_for, service_of

ISTIOD = {"metadata": {"name": "istiod", "namespace": "istio-system"},
          "spec": {"ports": [{"name": "grpc-xds", "port": 15010, "targetPort": 15010},
                             {"name": "http-debug", "port": 8080, "targetPort": 8080},
                             {"name": "https-webhook", "port": 443, "targetPort": 15017}]}}


def endpoint_slice(*endpoints: tuple[str, bool | None]) -> dict[str, Any]:
    return {"ports": [{"name": "grpc-xds", "port": 15010}, {"name": "http-debug", "port": 8080},
                      {"name": "https-webhook", "port": 15017}],
            "endpoints": [{"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
                          for ip, ready in endpoints]}


@pytest.mark.parametrize(("host", "expected"), [
    ("istiod.istio-system.svc", ("istiod", "istio-system")),
    ("istiod.istio-system.svc.cluster.local", ("istiod", "istio-system")),
    ("istiod.istio-system", ("istiod", "istio-system")),
    ("istiod", ("istiod", "shop")),
    ("pilot.example.com", None),
], ids=["svc", "fqdn", "name-namespace", "short-name", "not-a-service"])
def test_service_of_a_dns_name(host: str, expected: tuple[str, str] | None) -> None:
    assert service_of(host, "shop") == expected


@pytest.mark.parametrize(("port", "slices", "expected"), [
    ("15010", [endpoint_slice(("127.2.0.9", True))], ("127.2.0.9", 15010)),
    ("grpc-xds", [endpoint_slice(("127.2.0.9", True))], ("127.2.0.9", 15010)),
    ("443", [endpoint_slice(("127.2.0.9", True))], ("127.2.0.9", 15017)),
    ("15010", [endpoint_slice(("127.2.0.8", False), ("127.2.0.9", None))], ("127.2.0.9", 15010)),
], ids=["by-number", "by-name", "target-port", "skips-not-ready"])
def test_endpoint_for_a_service_port(port: str, slices: list[dict[str, Any]], expected: tuple[str, int]) -> None:
    assert endpoint_for(ISTIOD, slices, port, choose=lambda found: found[0]) == expected


@pytest.mark.parametrize(("port", "slices", "message"), [
    ("15011", [endpoint_slice(("127.2.0.9", True))], "has no port 15011"),
    ("15010", [endpoint_slice(("127.2.0.9", False))], "no ready endpoint"),
    ("15010", [], "no ready endpoint"),
], ids=["unknown-port", "none-ready", "no-slices"])
def test_endpoint_for_names_what_is_missing(port: str, slices: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(XdsError, match=message):
        endpoint_for(ISTIOD, slices, port)


def test_a_resolvable_address_is_kept_without_asking_the_api() -> None:
    assert ApiResolver("shop", None)("localhost:15010") == "localhost:15010"


def test_an_unresolvable_address_without_api_access_is_left_to_grpc() -> None:
    assert ApiResolver("shop", None)("istiod.istio-system.svc:15010") == "istiod.istio-system.svc:15010"
