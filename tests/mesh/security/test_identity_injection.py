"""What the injector adds when the mesh has a CA (istio-agent's inputs, the istio-token and trust bundle
volumes, probes rewritten to the status port), and the sidecar's status port answering rewritten probes while
the app port is STRICT."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest

from meshlab.mesh.injection import InjectionConfig, config_from_mesh, inject_pod_spec
from meshlab.mesh.proxy.main import mounted
from meshlab.mesh.proxy.probes import parse_probers, serve_status

WITH_CA = InjectionConfig(mode="address", ca_address="istio-citadel.istio-system.svc:15012",
                          trust_domain="corp.example", cert_ttl="60s")


def spec(**probe: Any) -> dict[str, Any]:
    return {"containers": [{"name": "details", "image": "meshlab/details:1",
                            "ports": [{"name": "http", "containerPort": 9080}], **probe}]}


def sidecar_env(pod_spec: dict[str, Any]) -> dict[str, Any]:
    proxy = next(c for c in pod_spec["containers"] if c["name"] == "istio-proxy")
    return {v["name"]: v.get("value") for v in proxy["env"]}


def test_mesh_config_with_a_ca_reaches_the_injection_config() -> None:
    config = config_from_mesh({"mode": "address", "caAddress": WITH_CA.ca_address, "trustDomain": "corp.example",
                               "workloadCertTTL": "60s"})
    assert config == WITH_CA


def test_the_sidecar_gets_istio_agents_inputs_and_volumes() -> None:
    injected = inject_pod_spec(spec(), {"labels": {"app": "details"}}, config=WITH_CA)
    env = sidecar_env(injected)
    assert (env["CA_ADDR"], env["TRUST_DOMAIN"], env["SECRET_TTL"]) == (WITH_CA.ca_address, "corp.example", "60s")
    proxy = next(c for c in injected["containers"] if c["name"] == "istio-proxy")
    assert {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]} == {
        "istio-token": "/var/run/secrets/tokens", "istiod-ca-cert": "/var/run/secrets/istio"}
    volumes = {v["name"]: v for v in injected["volumes"]}
    assert volumes["istio-token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca"
    assert volumes["istiod-ca-cert"]["configMap"] == {"name": "istio-ca-root-cert", "optional": True}


def test_no_ca_no_identity_inputs() -> None:
    injected = inject_pod_spec(spec(), {}, config=InjectionConfig(mode="address"))
    assert "CA_ADDR" not in sidecar_env(injected) and "volumes" not in injected


@pytest.mark.parametrize(("probe", "annotations", "rewritten"), [
    pytest.param({"readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2}}, {},
                 {"/app-health/details/readyz": {"httpGet": {"path": "/health", "port": 9080}, "timeoutSeconds": 1}},
                 id="named-port-readiness"),
    pytest.param({"livenessProbe": {"httpGet": {"path": "/live", "port": 9080}, "timeoutSeconds": 3}}, {},
                 {"/app-health/details/livez": {"httpGet": {"path": "/live", "port": 9080}, "timeoutSeconds": 3}},
                 id="liveness"),
    pytest.param({"readinessProbe": {"tcpSocket": {"port": 9080}}}, {}, None, id="tcp-probes-left-alone"),
    pytest.param({"readinessProbe": {"httpGet": {"path": "/health", "port": 9080}}},
                 {"sidecar.istio.io/rewriteAppHTTPProbers": "false"}, None, id="opted-out"),
])
def test_http_probes_are_rewritten_to_the_status_port(probe: dict[str, Any], annotations: dict[str, str],
                                                       rewritten: dict[str, Any] | None) -> None:
    injected = inject_pod_spec(spec(**probe), {"annotations": annotations}, config=WITH_CA)
    app = injected["containers"][0]
    env = sidecar_env(injected)
    if rewritten is None:
        assert "ISTIO_KUBE_APP_PROBERS" not in env
        assert {k: app[k] for k in probe} == probe
        return
    assert json.loads(env["ISTIO_KUBE_APP_PROBERS"]) == rewritten
    [(path, _)] = rewritten.items()
    [kind] = probe
    assert app[kind]["httpGet"] == {"path": path, "port": 15020}


def test_volume_paths_follow_meshlab_mounts_when_not_mounted() -> None:
    env = {"MESHLAB_MOUNTS": json.dumps({"/var/run/secrets/tokens": "/lab/pods/x/volumes/istio-token"})}
    assert mounted("/var/run/secrets/tokens/istio-token", env) == "/lab/pods/x/volumes/istio-token/istio-token"
    assert mounted("/var/run/secrets/istio/root-cert.pem", env) == "/var/run/secrets/istio/root-cert.pem"


def test_the_status_port_probes_the_app_directly() -> None:
    from aiohttp import web

    probers = parse_probers(json.dumps({
        "/app-health/details/readyz": {"httpGet": {"path": "/health", "port": 19080}, "timeoutSeconds": 1},
        "/app-health/details/livez": {"httpGet": {"path": "/missing", "port": 19080}, "timeoutSeconds": 1},
        "/app-health/other/readyz": {"httpGet": {"path": "/", "port": 19081}, "timeoutSeconds": 1}}))

    def status(path: str) -> int:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://127.0.73.1:15020{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    async def main() -> None:
        async def health(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.73.2", 19080).start()
        server = await serve_status("127.0.73.1", probers, "127.0.73.2", lambda: True)
        try:
            got = [await asyncio.to_thread(status, p) for p in (
                "/app-health/details/readyz", "/app-health/details/livez", "/app-health/other/readyz",
                "/healthz/ready", "/app-health/nope/readyz")]
            assert got == [200, 404, 503, 200, 404]
        finally:
            server.close()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 20))
