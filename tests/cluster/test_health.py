"""The status table's reading of /readyz?verbose."""

from __future__ import annotations

from meshlab.cluster.health import parse_readyz


def test_readyz_verbose_parsing() -> None:
    text = "[+]meshlab-bootstrap ok\n[+]kubelet ok (node lab-node Ready)\n[-]kube-proxy failed: not started\n" \
           "readyz check failed"
    rows = parse_readyz(text)
    assert [(r.component, r.healthy, r.detail) for r in rows] == [
        ("meshlab-bootstrap", True, ""), ("kubelet", True, "node lab-node Ready"),
        ("kube-proxy", False, "not started")]
