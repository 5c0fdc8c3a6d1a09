"""``meshlab cluster status``: one table that says whether each part of a running lab is healthy.

The apiserver's ``/readyz?verbose`` lists the named checks each part registers (controllers, kubelet,
kube-proxy); pods are counted through the API like any client would.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass

from meshlab import kube
from meshlab.cluster.labdir import LabDir


@dataclass(frozen=True)
class Row:
    component: str
    healthy: bool
    detail: str


_CHECK = re.compile(r"^\[(?P<sign>[+-])\](?P<name>\S+) (?:ok|failed)(?::\s*(?P<fail>.*)|(?: \((?P<ok>.*)\))?)$")


def parse_readyz(text: str) -> list[Row]:
    rows = []
    for line in text.splitlines():
        m = _CHECK.match(line.strip())
        if m:
            rows.append(Row(m["name"], m["sign"] == "+", m["ok"] or m["fail"] or ""))
    return rows


def lab_health(lab: LabDir, port: int) -> list[Row]:
    ctx = ssl.create_default_context(cafile=str(lab.pki / "ca.crt"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz?verbose", context=ctx, timeout=5) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as err:
        text = err.read().decode()
    except OSError as err:
        return [Row("apiserver", False, f"unreachable: {err}")]
    rows = [Row("apiserver", True, f"https://127.0.0.1:{port}")]
    rows += [r for r in parse_readyz(text) if r.component != "meshlab-bootstrap"]
    clients = kube.clients(lab.kubeconfig)
    try:
        pods = clients.core.list_pod_for_all_namespaces().items
        phases = Counter((p.status.phase if p.status else None) or "Unknown" for p in pods)
        detail = ", ".join(f"{n} {phase.lower()}" for phase, n in sorted(phases.items())) or "none"
        rows.append(Row("pods", phases.get("Failed", 0) == 0, detail))
    finally:
        clients.close()
    return rows


def format_table(rows: list[Row]) -> str:
    width = max([len("COMPONENT"), *(len(r.component) for r in rows)])
    lines = [f"{'COMPONENT':<{width}}  STATUS  DETAIL"]
    for r in rows:
        lines.append(f"{r.component:<{width}}  {'ok' if r.healthy else 'FAILED':<6}  {r.detail}")
    return "\n".join(lines)
