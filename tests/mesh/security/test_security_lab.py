"""mTLS and authorization end to end in the embedded lab: ``meshlab mesh install`` (Pilot and Citadel), the
bookstore injected, each sidecar holding a Citadel certificate for its service account. Traffic between
sidecars is mTLS by default (PERMISSIVE + auto mTLS); STRICT refuses a plaintext client on the same port a
PERMISSIVE policy answers it; Istio's authorization tasks (deny all, allow GET from productpage to reviews
only, deny by path, allow by header) are asserted through real requests, and the sidecar's ``/certs`` shows
its SPIFFE identity."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

import meshlab.lab
from meshlab.errors import LabError
from meshlab.mesh import installing
from tests.conftest import RunningLab

pytestmark = pytest.mark.slow
BOOKSTORE = installing.MANIFESTS / "bookstore.yaml"
DEPLOYMENTS = ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1")


def pods(handle: meshlab.lab.Lab, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    listed = handle.clients.core.list_namespaced_pod(namespace, label_selector=selector)
    return list(handle.clients.api_client.sanitize_for_serialization(listed)["items"])


def proxy_logs(handle: meshlab.lab.Lab, namespace: str, selector: str = "") -> str:
    out = []
    for pod in pods(handle, namespace, selector):
        try:
            out.append(str(handle.clients.core.read_namespaced_pod_log(pod["metadata"]["name"], namespace,
                                                                      container="istio-proxy")))
        except Exception as err:  # a container not started yet has no log
            out.append(f"{pod['metadata']['name']}: {err}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def mesh(lab: RunningLab) -> Iterator[tuple[meshlab.lab.Lab, str]]:
    handle = meshlab.lab.connect(lab.kubeconfig)
    namespace = "secure-" + os.urandom(2).hex()
    try:
        installing.install(handle, timeout=60)
        handle.apply({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": namespace, "labels": {"istio-injection": "enabled"}}})
        docs = [d for d in yaml.safe_load_all(BOOKSTORE.read_text()) if d
                if d.get("kind") != "Deployment" or d["metadata"]["name"] in DEPLOYMENTS]
        handle.apply(docs, namespace=namespace)
        for name in DEPLOYMENTS:
            try:
                handle.wait_ready("deployment", name, namespace=namespace, timeout=90)
            except LabError as err:
                raise LabError(f"{err}\n{proxy_logs(handle, namespace)[-6000:]}") from err
        yield handle, namespace
    finally:
        handle.delete("namespace", namespace)
        installing.uninstall(handle)
        handle.close()


def eventually(check: Callable[[], Any], what: str, timeout: float = 20,
               explain: Callable[[], str] = lambda: "") -> Any:
    """``check()`` until it returns something true (policies reach the sidecars through Pilot a moment later)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except LabError as err:
            last = err
        if last and not isinstance(last, LabError):
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: last {last!r}\n{explain()}")


def inbound_filters(handle: meshlab.lab.Lab, namespace: str) -> str:
    """For a failure message: the HTTP filters of each sidecar's inbound chains, and istiod's log tail."""
    out = []
    for pod in pods(handle, namespace):
        ip = pod["status"].get("podIP")
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://{ip}:15000/config_dump", timeout=5) as r:
                dump = json.load(r)
        except OSError as err:
            out.append(f"{pod['metadata']['name']}: {err}")
            continue
        listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
        for listener in listeners.get("dynamicListeners", []):
            if listener["name"] == "virtualInbound":
                chains = listener["activeState"]["listener"]["filterChains"]
                names = [[f["name"] for f in c["filters"][0]["typedConfig"]["httpFilters"]] for c in chains]
                out.append(f"{pod['metadata']['name']}: {names}")
    logs = handle.kubectl("logs", "deploy/istiod", "-n", "istio-system", "--tail", "30")
    return "\n".join(out) + "\n" + logs


def pod_ip(handle: meshlab.lab.Lab, namespace: str, app: str) -> str:
    return str(pods(handle, namespace, f"app={app}")[0]["status"]["podIP"])


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    """A plaintext request from the host (no sidecar): the status, or 0 when the connection is refused/closed."""
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def test_sidecars_hold_citadel_certificates_for_their_service_accounts(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    ip = pod_ip(handle, namespace, "reviews")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{ip}:15000/certs") as r:
        certs = json.load(r)["certificates"][0]
    assert certs["spiffe_id"] == f"spiffe://cluster.local/ns/{namespace}/sa/bookstore-reviews"
    assert certs["cert_chain"][0]["subject_alt_names"] == [{"uri": certs["spiffe_id"]}]


def test_the_page_travels_over_mtls_between_sidecars(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    page = eventually(lambda: "Reviews served by" in (p := handle.get("productpage", 9080, "/productpage",
                                                                      namespace=namespace)) and p, "the page")
    assert "Reviews served by" in page
    principal = f"spiffe://cluster.local/ns/{namespace}/sa/bookstore-productpage"
    eventually(lambda: f'"{principal}" mtls=true' in proxy_logs(handle, namespace, "app=reviews"),
               "reviews' access log shows productpage's identity over mTLS")


def policy(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_strict_refuses_plaintext_where_permissive_answered(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    handle, namespace = mesh
    url = f"http://{pod_ip(handle, namespace, 'details')}:9080/details/0"
    assert eventually(lambda: status_of(url) == 200, "PERMISSIVE answers plaintext")
    handle.apply(policy("PeerAuthentication", "details-strict", {"selector": {"matchLabels": {"app": "details"}},
                                                                  "mtls": {"mode": "STRICT"}}), namespace=namespace)
    try:
        eventually(lambda: status_of(url) == 0, "STRICT refuses plaintext")
        # The kubelet's plaintext readiness probes were rewritten to the sidecar's status port: details stays
        # Ready well past its probes' failure threshold (3 x 2 s).
        time.sleep(8)
        [pod] = pods(handle, namespace, "app=details")
        assert all(c["ready"] for c in pod["status"]["containerStatuses"]), pod["status"]
        # The page still gets its details: productpage's sidecar speaks mTLS to details.
        eventually(lambda: "Book Details" in handle.get("productpage", 9080, "/productpage", namespace=namespace)
                   and "unavailable" not in handle.get("productpage", 9080, "/api/v1/products/0",
                                                       namespace=namespace), "details over mTLS")
    finally:
        handle.delete("peerauthentication", "details-strict", namespace=namespace)


REVIEWS_API = "/api/v1/products/0/reviews"  # productpage asks reviews (sidecar to sidecar, mTLS) and passes
# the status through: 403 when reviews' sidecar denied productpage


def allow(name: str, rules: list[dict[str, Any]], app: str = "reviews") -> dict[str, Any]:
    return policy("AuthorizationPolicy", name, {"selector": {"matchLabels": {"app": app}}, "rules": rules})


# (target: "api" through productpage or "direct" to the reviews pod from the host, headers, expected status)
Probe = tuple[str, dict[str, str], int]


@pytest.mark.parametrize(("policies", "probes"), [
    pytest.param([policy("AuthorizationPolicy", "allow-nothing", {})],
                 [("api", {}, 403), ("direct", {}, 403)], id="deny-all-in-the-namespace"),
    pytest.param([allow("reviews-viewer", [
        {"from": [{"source": {"principals": ["cluster.local/ns/{ns}/sa/bookstore-productpage"]}}],
         "to": [{"operation": {"methods": ["GET"]}}]}])],
                 [("api", {}, 200), ("direct", {}, 403)], id="allow-GET-from-productpage-to-reviews-only"),
    pytest.param([policy("AuthorizationPolicy", "deny-reviews-path", {
        "selector": {"matchLabels": {"app": "reviews"}}, "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["/reviews/*"]}}]}]})],
                 [("api", {}, 403), ("direct", {}, 403)], id="deny-by-path"),
    pytest.param([allow("jason-only", [{"when": [{"key": "request.headers[end-user]", "values": ["jason"]}]}])],
                 [("api", {"end-user": "jason"}, 200), ("api", {}, 403), ("api", {"end-user": "bob"}, 403)],
                 id="allow-by-header"),
])
def test_authorization_tasks(mesh: tuple[meshlab.lab.Lab, str], policies: list[dict[str, Any]],
                             probes: list[Probe]) -> None:
    handle, namespace = mesh
    specs = json.loads(json.dumps(policies).replace("{ns}", namespace))
    api = handle.url("productpage", 9080, namespace=namespace, path=REVIEWS_API)
    direct = f"http://{pod_ip(handle, namespace, 'reviews')}:9080/reviews/0"
    assert eventually(lambda: status_of(api) == 200, "reviews reachable before the policy")
    handle.apply(specs, namespace=namespace)
    try:
        for target, headers, expected in probes:
            url = api if target == "api" else direct
            eventually(lambda: status_of(url, headers) == expected,  # noqa: B023 - used at once
                       f"{target} {headers} -> {expected}", explain=lambda: inbound_filters(handle, namespace))
    finally:
        handle.delete(specs, namespace=namespace)
        eventually(lambda: status_of(api) == 200, "reviews reachable again")


def certificate_serial(ip: str) -> str:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{ip}:15000/certs",
                                                                          timeout=5) as r:
        return str(json.load(r)["certificates"][0]["cert_chain"][0]["serial_number"])


def test_short_lived_certificates_rotate_while_traffic_flows(mesh: tuple[meshlab.lab.Lab, str]) -> None:
    """The lesson's setting (mesh config workloadCertTTL lowered): a new ratings pod asks for 8 s certificates,
    its sidecar renews at half-life, and requests through productpage to it (mTLS) keep succeeding."""
    handle, namespace = mesh
    core = handle.clients.core
    old = (core.read_namespaced_config_map("meshlab-mesh", "istio-system").data or {}).get("workloadCertTTL")
    core.patch_namespaced_config_map("meshlab-mesh", "istio-system", {"data": {"workloadCertTTL": "8s"}})
    try:
        def injected_with_short_ttl() -> dict[str, Any] | None:
            for pod in pods(handle, namespace, "app=ratings"):
                proxy = next(c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy")
                ttl = {e["name"]: e.get("value") for e in proxy["env"]}.get("SECRET_TTL")
                statuses = pod["status"].get("containerStatuses") or []
                if ttl == "8s" and statuses and all(s["ready"] for s in statuses):
                    return pod
                if ttl != "8s" and not pod["metadata"].get("deletionTimestamp"):
                    handle.delete("pod", pod["metadata"]["name"], namespace=namespace)  # the next one gets 8 s
            return None

        pod = eventually(injected_with_short_ttl, "a ratings pod with 8 s certificates", timeout=60)
        ip = pod["status"]["podIP"]
        api = handle.url("productpage", 9080, namespace=namespace, path="/api/v1/products/0/ratings")
        eventually(lambda: status_of(api) == 200, "ratings reachable through productpage")
        serials, statuses = set(), []
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            statuses.append(status_of(api))
            serials.add(certificate_serial(ip))
            time.sleep(0.2)
        assert len(serials) >= 3, serials  # renewed about every 4 s
        assert set(statuses) == {200}, statuses
    finally:
        core.patch_namespaced_config_map("meshlab-mesh", "istio-system", {"data": {"workloadCertTTL": old or "24h"}})
