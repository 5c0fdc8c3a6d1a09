"""`kubectl exec` and `kubectl logs` through the apiserver's PodIO hook.

The lab runtime's kubelet plugs into this hook; here the apiserver runs alone with a small PodIO that runs
commands as local processes, so the WebSocket channel protocol and the log stream are tested with the real
kubectl and the real Python client independently of the kubelet.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes.stream import stream

from meshlab import kube
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.labdir import LabDir
from meshlab.cluster.podio import ExecProcess, LocalProcess, LogOptions
from tests.conftest import kubectl_path
from tests.inprocess import lab_in_thread


class LocalPodIO:
    """Runs exec commands as local processes; serves logs from a fixed text per container."""

    def __init__(self) -> None:
        self.logs_by_container = {"main": b"line one\nline two\nline three\n"}

    async def logs(self, pod: dict[str, Any], options: LogOptions) -> AsyncIterator[bytes]:
        text = self.logs_by_container.get(options.container, b"")
        lines = text.splitlines(keepends=True)
        if options.tail_lines is not None:
            lines = lines[-options.tail_lines:] if options.tail_lines else []
        for line in lines:
            yield line

    async def exec(self, pod: dict[str, Any], container: str, command: Sequence[str], *, tty: bool,
                   stdin: bool) -> ExecProcess:
        return await LocalProcess.start(command, stdin=stdin)


@pytest.fixture(scope="module")
def pod_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabDir]:
    lab = LabDir.named("exec", tmp_path_factory.mktemp("exec-home"))

    def configure(server: ApiServer, port: int) -> list[Any]:
        server.pod_io = LocalPodIO()
        return []

    # the apiserver alone (runtime=False), with this PodIO standing in for a kubelet
    with lab_in_thread(lab, configure):
        c = kube.clients(lab.kubeconfig)
        c.core.create_namespaced_pod("default", {"metadata": {"name": "box"}, "spec": {
            "nodeName": "lab-node", "containers": [{"name": "main", "image": "meshlab/echo:1"}]}})
        c.close()
        yield lab


def _kubectl(lab: LabDir, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "KUBECACHEDIR": str(lab.kube_cache)}
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


needs_kubectl = pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")


@needs_kubectl
def test_kubectl_exec_streams_stdout_stderr_and_exit_code(pod_lab: LabDir) -> None:
    proc = _kubectl(pod_lab, "exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert proc.stdout == "out\n"
    assert "err" in proc.stderr
    assert proc.returncode == 3


@needs_kubectl
def test_kubectl_exec_with_stdin(pod_lab: LabDir) -> None:
    proc = _kubectl(pod_lab, "exec", "-i", "box", "--", "tr", "a-z", "A-Z", stdin="hello mesh\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "HELLO MESH\n"


@needs_kubectl
@pytest.mark.parametrize(("args", "expected"), [
    ([], "line one\nline two\nline three\n"),
    (["--tail=1"], "line three\n"),
], ids=["all", "tail"])
def test_kubectl_logs(pod_lab: LabDir, args: list[str], expected: str) -> None:
    proc = _kubectl(pod_lab, "logs", "box", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected


@needs_kubectl
def test_logs_of_an_unknown_container_is_a_clear_400(pod_lab: LabDir) -> None:
    proc = _kubectl(pod_lab, "logs", "box", "-c", "nope")
    assert proc.returncode != 0
    assert "container nope is not valid for pod box" in proc.stderr


def test_python_client_stream_exec(pod_lab: LabDir, tmp_path: Path) -> None:
    c = kube.clients(pod_lab.kubeconfig)
    try:
        out = stream(c.core.connect_get_namespaced_pod_exec, "box", "default",
                     command=["echo", "from", "python"], stderr=True, stdin=False, stdout=True, tty=False)
        assert out == "from python\n"
    finally:
        c.close()
