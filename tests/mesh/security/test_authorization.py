"""AuthorizationPolicy semantics, end to end without sockets: Pilot translates the policies of Istio's
authorization tasks into RBAC filters, the proxy decodes what Pilot sent, and ``rbac.evaluate`` decides
requests as the reviews sidecar would."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.mesh.pilot.model import AuthorizationPolicy, Endpoint, MeshState, Service, ServicePort
from meshlab.mesh.pilot.translation import translate
from meshlab.mesh.proxy import rbac
from meshlab.mesh.proxy.config import ProxyConfig, apply_resources
from meshlab.mesh.proxy.routing import RequestHead
from meshlab.mesh.xds.node import ProxyIdentity
from meshlab.mesh.xds.resources import INBOUND_LISTENER, ORDER

REVIEWS = ProxyIdentity(ip="127.0.0.30", pod="reviews-v1", namespace="default",
                        labels={"app": "reviews", "version": "v1"}, service_account="bookinfo-reviews",
                        app_address="127.0.0.31:9080")
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
RATINGS = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
FOREIGN = "spiffe://cluster.local/ns/other/sa/sleep"


def policy(name: str, spec: dict[str, Any], namespace: str = "default") -> AuthorizationPolicy:
    return AuthorizationPolicy(name, namespace, spec)


def filters_for(*policies: AuthorizationPolicy) -> tuple[rbac.RbacFilter, ...]:
    """The RBAC filters the reviews sidecar ends up with on port 9080, through Pilot and the proxy's decoder."""
    state = MeshState((Service("reviews", "default", "10.96.0.30", (ServicePort("http", 9080),)),),
                      {("default", "reviews"): (Endpoint("127.0.0.30", {"http": 9080}, dict(REVIEWS.labels), True,
                                                         "reviews-v1", "default", "bookinfo-reviews", True),)},
                      authorization_policies=policies)
    snapshot = translate(state, REVIEWS)
    assert not snapshot.problems, snapshot.problems
    config = ProxyConfig()
    for type_url in ORDER:
        update = apply_resources(config, type_url, list(snapshot.resources.get(type_url, ())), version="1")
        assert update.accepted, update.errors
        config = update.config
    chains = config.listeners[INBOUND_LISTENER].chains_for(9080)
    assert len({c.rbac for c in chains}) == 1  # the mTLS and plaintext chains enforce the same policies
    return chains[0].rbac


def ask(filters: tuple[rbac.RbacFilter, ...], method: str = "GET", path: str = "/reviews/0",
        principal: str = PRODUCTPAGE, headers: tuple[tuple[str, str], ...] = (), port: int = 9080) -> bool:
    head = RequestHead(method, path, "reviews:9080", headers)
    return rbac.evaluate(filters, rbac.Request(head, port, principal)).allowed


ALLOW_NOTHING = policy("allow-nothing", {})
# Istio task "HTTP traffic": allow GET from productpage to reviews.
REVIEWS_VIEWER = policy("reviews-viewer", {
    "selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW",
    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}],
               "to": [{"operation": {"methods": ["GET"]}}]}]})
DENY_ADMIN_PATHS = policy("deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]})
ALLOW_BY_HEADER = policy("allow-by-header", {"action": "ALLOW", "rules": [
    {"when": [{"key": "request.headers[x-token]", "values": ["admin", "ops-*"]}]}]})
ALLOW_NAMESPACE = policy("same-namespace", {"rules": [{"from": [{"source": {"namespaces": ["default"]}}]}]})
DENY_NOT_GET_ON_PORT = policy("deny-writes", {"action": "DENY", "rules": [
    {"to": [{"operation": {"notMethods": ["GET", "HEAD"], "ports": ["9080"]}}]}]})
MESH_WIDE_DENY = policy("mesh-deny-suffix", {"action": "DENY",
                                             "rules": [{"to": [{"operation": {"paths": ["*.php"]}}]}]},
                        namespace="istio-system")
OTHER_WORKLOAD = policy("ratings-only", {"selector": {"matchLabels": {"app": "ratings"}}})
ALLOW_ALL_RULE = policy("allow-all", {"rules": [{}]})
WHEN_PRINCIPAL_NOT = policy("not-ratings", {"rules": [{"when": [
    {"key": "source.principal", "notValues": ["cluster.local/ns/default/sa/bookinfo-ratings"]}]}]})


@pytest.mark.parametrize(("policies", "request_kwargs", "allowed"), [
    pytest.param((), {}, True, id="no-policy-allows-everything"),
    pytest.param((ALLOW_NOTHING,), {}, False, id="deny-all-in-a-namespace-spec-empty"),
    pytest.param((OTHER_WORKLOAD,), {}, True, id="a-policy-selecting-another-workload-does-not-apply"),
    pytest.param((REVIEWS_VIEWER,), {}, True, id="productpage-may-GET-reviews"),
    pytest.param((REVIEWS_VIEWER,), {"method": "POST"}, False, id="productpage-may-not-POST"),
    pytest.param((REVIEWS_VIEWER,), {"principal": RATINGS}, False, id="ratings-may-not-GET"),
    pytest.param((REVIEWS_VIEWER,), {"principal": ""}, False, id="plaintext-has-no-principal"),
    pytest.param((REVIEWS_VIEWER, DENY_ADMIN_PATHS), {"path": "/admin/users"}, False, id="deny-wins-over-allow"),
    pytest.param((DENY_ADMIN_PATHS,), {"path": "/administrator?x=1"}, False, id="deny-by-path-prefix"),
    pytest.param((DENY_ADMIN_PATHS,), {"path": "/reviews/0?next=/admin"}, True, id="query-is-not-the-path"),
    pytest.param((ALLOW_BY_HEADER,), {"headers": (("x-token", "admin"),)}, True, id="allow-by-header-exact"),
    pytest.param((ALLOW_BY_HEADER,), {"headers": (("X-Token", "ops-7"),)}, True, id="allow-by-header-prefix"),
    pytest.param((ALLOW_BY_HEADER,), {"headers": (("x-token", "guest"),)}, False, id="other-header-value-denied"),
    pytest.param((ALLOW_BY_HEADER,), {}, False, id="missing-header-denied"),
    pytest.param((ALLOW_NAMESPACE,), {}, True, id="namespace-of-the-peer"),
    pytest.param((ALLOW_NAMESPACE,), {"principal": FOREIGN}, False, id="peer-from-another-namespace"),
    pytest.param((DENY_NOT_GET_ON_PORT,), {"method": "DELETE"}, False, id="notMethods-on-port-denied"),
    pytest.param((DENY_NOT_GET_ON_PORT,), {"method": "HEAD"}, True, id="listed-method-passes"),
    pytest.param((MESH_WIDE_DENY,), {"path": "/index.php"}, False, id="root-namespace-policy-applies-mesh-wide"),
    pytest.param((ALLOW_ALL_RULE,), {"principal": ""}, True, id="an-empty-rule-matches-everything"),
    pytest.param((WHEN_PRINCIPAL_NOT,), {"principal": RATINGS}, False, id="when-principal-notValues"),
    pytest.param((WHEN_PRINCIPAL_NOT,), {}, True, id="when-principal-notValues-other-peer"),
])
def test_istio_authorization_semantics(policies: tuple[AuthorizationPolicy, ...], request_kwargs: dict[str, Any],
                                       allowed: bool) -> None:
    assert ask(filters_for(*policies), **request_kwargs) is allowed


def test_deny_filter_comes_before_allow_filter() -> None:
    filters = filters_for(REVIEWS_VIEWER, DENY_ADMIN_PATHS)
    assert [f.action for f in filters] == ["DENY", "ALLOW"]
    assert [name for name, _ in filters[1].policies] == ["ns[default]-policy[reviews-viewer]-rule[0]"]


def test_a_denial_names_the_policy_that_matched() -> None:
    head = RequestHead("GET", "/admin", "reviews:9080")
    decision = rbac.evaluate(filters_for(DENY_ADMIN_PATHS), rbac.Request(head, 9080, PRODUCTPAGE))
    assert decision.reason == "denied by ns[default]-policy[deny-admin]-rule[0]"


def test_a_policy_pilot_cannot_translate_denies_everything_and_says_why() -> None:
    # The CRD refuses this key; a policy that got past it anyway must not open the workload (fail closed).
    odd = policy("odd", {"action": "DENY", "rules": [{"when": [{"key": "request.auth.claims[iss]",
                                                                 "values": ["x"]}]}]})
    state = MeshState((Service("reviews", "default", "10.96.0.30", (ServicePort("http", 9080),)),),
                      {("default", "reviews"): (Endpoint("127.0.0.30", {"http": 9080}, dict(REVIEWS.labels), True,
                                                         "reviews-v1", "default", "bookinfo-reviews", True),)},
                      authorization_policies=(odd,))
    snapshot = translate(state, REVIEWS)
    assert any("request.auth.claims[iss]" in str(p) and "denied" in str(p) for p in snapshot.problems)
    config = ProxyConfig()
    for type_url in ORDER:
        config = apply_resources(config, type_url, list(snapshot.resources.get(type_url, ())), version="1").config
    assert not ask(config.listeners[INBOUND_LISTENER].chains_for(9080)[0].rbac)
