"""Lab runtime benchmarks: start-up to a Ready node, Deployments to Ready pods, memory, teardown."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from meshlab import kube
from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir

Row = tuple[str, str, str, str]


def _node_ready(c: kube.Clients) -> bool:
    try:
        node = c.core.read_node("lab-node")
    except Exception:  # not registered yet
        return False
    return any(cond.type == "Ready" and cond.status == "True" for cond in (node.status.conditions or []))


def _wait(predicate: object, timeout: float) -> float:
    start = time.perf_counter()
    deadline = start + timeout
    while time.perf_counter() < deadline:
        if predicate():  # type: ignore[operator]
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"not reached within {timeout}s")


def _deployment(name: str, replicas: int) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "echo", "image": "meshlab/echo:1",
                                                       "ports": [{"containerPort": 8080}]}]}}},
    }


def _all_ready(c: kube.Clients, ns: str, name: str, want: int) -> bool:
    d = c.apps.read_namespaced_deployment(name, ns)
    return (d.status.ready_replicas or 0) >= want and (d.status.updated_replicas or 0) >= want


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def bench_runtime(home: Path, runs: int) -> list[Row]:
    rows: list[Row] = []
    to_ready = []
    for i in range(runs):
        lab = LabDir.named(f"rt{i}", home)
        t0 = time.perf_counter()
        supervisor.up(lab, port=0)
        c = kube.clients(lab.kubeconfig)
        _wait(lambda c=c: _node_ready(c), 30)
        to_ready.append(time.perf_counter() - t0)
        c.close()
        supervisor.down(lab)
    ms = statistics.median(to_ready) * 1000
    rows.append(("cold cluster up -> node Ready", f"{ms:.0f} ms", "<= 2000 ms", "ok" if ms <= 2000 else "MISS"))

    lab = LabDir.named("runtime", home)
    info = supervisor.up(lab, port=0)
    c = kube.clients(lab.kubeconfig)
    try:
        _wait(lambda: _node_ready(c), 30)
        ten = []
        for i in range(runs):
            ns = f"ten-{i}"
            c.core.create_namespace({"metadata": {"name": ns}})
            t0 = time.perf_counter()
            c.apps.create_namespaced_deployment(ns, _deployment("echo", 10))
            _wait(lambda ns=ns: _all_ready(c, ns, "echo", 10), 60)
            ten.append(time.perf_counter() - t0)
            c.core.delete_namespace(ns)
        ms = statistics.median(ten) * 1000
        rows.append(("10-replica Deployment: apply -> all Ready", f"{ms:.0f} ms", "<= 5000 ms",
                     "ok" if ms <= 5000 else "MISS"))
        _wait(lambda: not [n for n in c.core.list_namespace().items if n.metadata.name.startswith("ten-")], 60)

        c.core.create_namespace({"metadata": {"name": "hundred"}})
        t0 = time.perf_counter()
        c.apps.create_namespaced_deployment("hundred", _deployment("echo", 100))
        _wait(lambda: _all_ready(c, "hundred", "echo", 100), 120)
        seconds = time.perf_counter() - t0
        rows.append(("100 pods: apply -> all Ready", f"{seconds:.1f} s", "<= 30 s", "ok" if seconds <= 30 else "MISS"))

        pid = int(info["pid"])
        pods = [p for p in _descendants(pid)]
        per_pod = sorted(rss_mb(p) for p in pods if "meshlab" in _cmdline(p) and "app" in _cmdline(p))
        rows.append(("supervisor RSS with 100 pods", f"{rss_mb(pid):.0f} MB", "report", ""))
        if per_pod:
            rows.append(("echo container process RSS (median)", f"{statistics.median(per_pod):.0f} MB", "<= 30 MB",
                         "ok" if statistics.median(per_pod) <= 30 else "MISS"))
    finally:
        c.close()
        before = set(_descendants(int(info["pid"])))
        t0 = time.perf_counter()
        supervisor.down(lab, timeout=30)
        seconds = time.perf_counter() - t0
        time.sleep(0.5)
        leftovers = [p for p in before if Path(f"/proc/{p}").exists()]
        rows.append(("lab teardown with 100 pods", f"{seconds:.1f} s", "<= 3 s", "ok" if seconds <= 3 else "MISS"))
        rows.append(("  processes left behind", str(len(leftovers)), "0", "ok" if not leftovers else "MISS"))
    return rows


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="meshlab-bench-"))
    os.environ["MESHLAB_HOME"] = str(home)
    for row in bench_runtime(home, 3):
        print(row)
