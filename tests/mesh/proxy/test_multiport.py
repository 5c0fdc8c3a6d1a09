"""Pilot's whole translation for a pod that serves two ports is accepted by the proxy's configuration."""

from __future__ import annotations

from meshlab.mesh.pilot.model import Endpoint, MeshState, Service, ServicePort
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.proxy.config import ProxyConfig, apply_resources
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import ORDER


def test_a_two_port_pod_gets_a_config_the_proxy_accepts() -> None:
    httpbin = ProxyIdentity(ip="127.0.0.40", pod="httpbin-1", namespace="tools", labels={"app": "httpbin"},
                            app_address="127.0.0.40")
    state = MeshState(
        (Service("httpbin", "tools", "10.96.0.40", (ServicePort("http", 8000), ServicePort("admin", 9000))),),
        {("tools", "httpbin"): (Endpoint("127.0.0.40", {"http": 8000, "admin": 9000}, {"app": "httpbin"}, True,
                                         "httpbin-1", "tools"),)},
        (), ())
    snapshot = translate(state, httpbin)
    assert snapshot.consistent() and not snapshot.problems
    config = ProxyConfig()
    for type_url in ORDER:
        update = apply_resources(config, type_url, list(snapshot.resources.get(type_url, ())),
                                 version="1")
        assert update.accepted, update.errors
        config = update.config
    assert config.validate() == []
