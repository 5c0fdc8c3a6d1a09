"""The RPC's edges without a network: reading the Bearer token, and turning a TokenReview answer into an identity."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.mesh.citadel.identity import WorkloadIdentity
from meshlab.mesh.citadel.server import Unauthenticated, bearer_token, identity_from_review


@pytest.mark.parametrize(("metadata", "expected"), [
    pytest.param([("authorization", "Bearer abc.def")], "abc.def", id="bearer"),
    pytest.param([("Authorization", b"bearer  abc ")], "abc", id="any case, bytes, spaces"),
    pytest.param([("x-trace", "1"), ("authorization", "Bearer t")], "t", id="among other metadata"),
    pytest.param([], "no authorization metadata", id="[Error] none"),
    pytest.param(None, "no authorization metadata", id="[Error] no metadata at all"),
    pytest.param([("authorization", "Basic dTpw")], "not 'Bearer <token>'", id="[Error] basic"),
    pytest.param([("authorization", "Bearer ")], "not 'Bearer <token>'", id="[Error] empty token"),
])
def test_bearer_token(metadata: Any, expected: str) -> None:
    if expected.startswith(("no ", "not ")):
        with pytest.raises(Unauthenticated, match=expected):
            bearer_token(metadata)
    else:
        assert bearer_token(metadata) == expected


def review(authenticated: bool, username: str = "", error: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"authenticated": authenticated}
    if username:
        status["user"] = {"username": username, "groups": ["system:serviceaccounts", "system:authenticated"]}
    if error:
        status["error"] = error
    return {"kind": "TokenReview", "status": status}


@pytest.mark.parametrize(("answer", "expected"), [
    pytest.param(review(True, "system:serviceaccount:shop:web"), WorkloadIdentity("example.org", "shop", "web"),
                 id="a workload"),
    pytest.param(review(False, error="invalid bearer token: token has expired"), "token has expired",
                 id="[Error] expired token"),
    pytest.param(review(False), "not authenticated", id="[Error] rejected without a reason"),
    pytest.param(review(True, "admin"), "not a service account", id="[Error] a person"),
    pytest.param({}, "not authenticated", id="[Error] no status"),
])
def test_identity_from_review(answer: dict[str, Any], expected: WorkloadIdentity | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(Unauthenticated, match=expected):
            identity_from_review(answer, "example.org")
    else:
        assert identity_from_review(answer, "example.org") == expected
