"""Consul intentions compiled to AuthorizationPolicies: precedence as Consul decides, the policy Istio needs to
decide the same, and the table syntax."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.errors import CaError
from meshlab.mesh.citadel.intentions import Action, Intention, compile_intentions, decide, parse_intentions

TABLE = parse_intentions("""
    # HashiCups, deny by default
    * -> * deny
    frontend -> public-api allow
    public-api -> products-api allow
    products-api -> postgres allow
    frontend -> postgres deny   # redundant with the default, kept for the lesson
""")


@pytest.mark.parametrize(("source", "destination", "action", "by"), [
    pytest.param("frontend", "public-api", Action.ALLOW, "frontend => public-api (allow)", id="exact allow"),
    pytest.param("frontend", "postgres", Action.DENY, "frontend => postgres (deny)", id="exact deny"),
    pytest.param("payments", "public-api", Action.DENY, "* => * (deny)", id="wildcard default"),
])
def test_consul_precedence(source: str, destination: str, action: Action, by: str) -> None:
    decided, intention = decide(TABLE, source, destination)
    assert decided is action and str(intention) == by


def test_no_intention_falls_back_to_the_default_policy() -> None:
    assert decide([], "a", "b", default=Action.DENY) == (Action.DENY, None)
    assert decide([Intention("*", "b", Action.ALLOW)], "a", "b", default=Action.DENY)[0] is Action.ALLOW
    # an exact source beats a wildcard source for the same destination
    table = [Intention("*", "db", Action.ALLOW), Intention("web", "db", Action.DENY)]
    assert decide(table, "web", "db")[0] is Action.DENY and decide(table, "api", "db")[0] is Action.ALLOW


def policies(table: list[Intention], **kwargs: Any) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p["spec"] for p in compile_intentions(table, namespace="shop", **kwargs)}


def test_deny_by_default_compiles_to_allow_policies() -> None:
    specs = policies(TABLE, destinations=["frontend"])
    assert specs["intentions-public-api"] == {
        "selector": {"matchLabels": {"app": "public-api"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend"]}}]}]}
    assert specs["intentions-postgres"]["rules"][0]["from"][0]["source"]["principals"] == [
        "cluster.local/ns/shop/sa/products-api"]
    # nobody may call frontend: an ALLOW policy with no rules denies everything
    assert specs["intentions-frontend"] == {"selector": {"matchLabels": {"app": "frontend"}}, "action": "ALLOW"}


def test_allow_by_default_compiles_to_deny_policies() -> None:
    table = parse_intentions("web -> db deny\nother/batch -> db deny\nweb -> api allow")
    docs = compile_intentions(table, namespace="shop", trust_domain="example.org")
    assert [(d["metadata"]["name"], d["spec"]["action"]) for d in docs] == [("intentions-db", "DENY")]
    assert docs[0]["apiVersion"] == "security.istio.io/v1" and docs[0]["metadata"]["namespace"] == "shop"
    assert docs[0]["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        "example.org/ns/other/sa/batch", "example.org/ns/shop/sa/web"]


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("web api allow", "expected 'SOURCE -> DESTINATION", id="[Error] no arrow"),
    pytest.param("web -> api maybe", "expected 'SOURCE -> DESTINATION", id="[Error] unknown action"),
])
def test_bad_table_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(CaError, match=f"line 1: {message}"):
        parse_intentions(text)


def test_a_destination_in_another_namespace_is_refused() -> None:
    with pytest.raises(CaError, match="must be a service of namespace shop"):
        compile_intentions([Intention("web", "other/db", Action.DENY)], namespace="shop")
