"""``meshlab mesh proxy-status``'s table from istiod's /debug/syncz JSON, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.mesh.installing import format_table, proxy_rows


def _entry(pod: str, ns: str, **statuses: str) -> dict[str, Any]:
    types = {t: {"status": statuses.get(t, "SYNCED"), "latest": f"{t}-1", "sent": f"{t}-1", "acked": f"{t}-1",
                 "error": ""} for t in ("CDS", "EDS", "LDS", "RDS")}
    return {"proxy": f"sidecar~127.1.0.9~{pod}.{ns}~{ns}.svc.cluster.local", "istiod": "istiod-abc", "types": types}


@pytest.mark.parametrize(("syncz", "expected"), [
    pytest.param([], ["NAME   CDS   LDS   EDS   RDS   ISTIOD   VERSION"], id="no proxies: the header alone"),
    pytest.param([_entry("reviews-v1", "default", RDS="NACKED"), _entry("details-v1", "default", LDS="STALE")],
                 [["details-v1.default", "SYNCED", "STALE", "SYNCED", "SYNCED", "istiod-abc"],
                  ["reviews-v1.default", "SYNCED", "SYNCED", "SYNCED", "NACKED", "istiod-abc"]],
                 id="sorted by pod.namespace, columns in istioctl's order CDS LDS EDS RDS"),
    pytest.param([_entry("web", "shop", EDS="NOT SENT")],
                 [["web.shop", "SYNCED", "SYNCED", "NOT", "SENT", "SYNCED", "istiod-abc"]],
                 id="NOT SENT shows as istioctl writes it"),
])
def test_proxy_status_table(syncz: list[dict[str, Any]], expected: list[Any]) -> None:
    lines = format_table(proxy_rows(syncz)).splitlines()
    if not syncz:
        assert lines == expected
        return
    assert [line.split()[:-1] for line in lines[1:]] == expected


def test_same_config_shows_the_same_version() -> None:
    rows = proxy_rows([_entry("a", "default"), _entry("b", "default"), {**_entry("c", "default"), "types": {
        t: {"status": "SYNCED", "latest": "other"} for t in ("CDS", "EDS", "LDS", "RDS")}}])
    assert rows[0].version == rows[1].version != rows[2].version
