"""The process kubelet end to end: real processes, real HTTP, the real kubectl and Python client.

One in-process lab with the kubelet (short back-offs so crash loops show quickly); every scenario's pod is
created up front, so they all progress at once and each test only waits for its own outcome.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from meshlab import kube
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.kubelet import BackOffPolicy, Kubelet
from meshlab.cluster.labdir import LabDir
from tests.conftest import kubectl_path
from tests.inprocess import lab_in_thread
from tests.polling import wait_for

NS = "kl"
needs_kubectl = pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")
PY = sys.executable


@dataclass
class Node:
    lab: LabDir
    clients: kube.Clients
    marks: Path
    kubelet: Kubelet

    @property
    def core(self) -> Any:  # the typed client wants models; these tests send plain manifests
        return self.clients.core

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.lab.kubeconfig), "KUBECACHEDIR": str(self.lab.kube_cache)}
        return subprocess.run(["kubectl", "-n", NS, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def pod(self, name: str) -> dict[str, Any]:
        raw = self.clients.core.read_namespaced_pod(name, NS)
        return dict(self.clients.api_client.sanitize_for_serialization(raw))

    def events(self, name: str) -> list[tuple[str, str, str]]:
        found = self.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
        return [(str(e.type), str(e.reason), str(e.message)) for e in found]

    def logs(self, name: str) -> str:
        return str(self.core.read_namespaced_pod_log(name, NS))


def container(name: str = "app", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "meshlab/test:1", **extra}


def sh(script: str) -> dict[str, Any]:
    return {"command": ["sh", "-c", script]}


def http_server(port: int) -> dict[str, Any]:
    return {"command": ["python", "-m", "http.server", str(port), "--bind", "$(POD_IP)"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}


def scenario_pods(marks: Path) -> dict[str, dict[str, Any]]:
    slow_term = (f"import os, signal, time\n"
                 f"open('{marks}/graceful.pid', 'w').write(str(os.getpid()))\n"
                 f"def term(*_):\n    open('{marks}/graceful.term', 'w').write('SIGTERM')\n"
                 f"signal.signal(signal.SIGTERM, term)\nprint('up', flush=True)\ntime.sleep(600)\n")
    return {
        "web": {"containers": [container(**http_server(8080), ports=[{"name": "http", "containerPort": 8080}],
                                         readinessProbe={"httpGet": {"port": "http"}, "periodSeconds": 1})]},
        "gated": {"containers": [container(**sh("sleep 600"), readinessProbe={
            "exec": {"command": ["sh", "-c", 'test -f "$HOME/ready"']}, "periodSeconds": 1})]},
        "liveness": {"containers": [container(**sh("sleep 600"), livenessProbe={
            "tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2})]},
        "graceful": {"terminationGracePeriodSeconds": 3,
                     "containers": [container(command=["python", "-c", slow_term])]},
        "nginx": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
        "configwait": {"containers": [container(**sh('echo "greeting=$GREETING"; sleep 600'), env=[
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "greeting"}}}])]},
        "init": {"initContainers": [container("one", **sh('echo one > "$HOME/trail"')),
                                    container("two", **sh('echo two >> "$HOME/trail"'))],
                 "containers": [container(**sh('cat "$HOME/trail"; sleep 600'))]},
        "done-ok": {"restartPolicy": "Never", "containers": [container(**sh("echo bye"))]},
        "done-error": {"restartPolicy": "Never", "containers": [container(**sh("exit 7"))]},
        "retry": {"restartPolicy": "OnFailure", "containers": [container(**sh(
            'test -f "$HOME/once" && exit 0; touch "$HOME/once"; exit 3'))]},
        "envdump": {"containers": [container(**sh("env | sort; sleep 600"), env=[
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "WHERE", "value": "$(MY_NS)/$(APP)"},
            {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}])]},
        "chatty": {"restartPolicy": "Never", "containers": [container(**sh(
            "for i in 1 2 3; do echo line $i; sleep 0.3; done"))]},
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    home = tmp_path_factory.mktemp("kubelet-home")
    marks = tmp_path_factory.mktemp("marks")
    lab = LabDir.named("kubelet", home)
    made: list[Kubelet] = []

    def configure(server: ApiServer, port: int) -> list[Any]:
        kubelet = Kubelet(server.rest, state_dir=lab.path, signer=server.signer,
                          apiserver_url=f"https://127.0.0.1:{port}", ca_pem=b"", proxy_url="http://127.0.0.1:3128",
                          backoff=BackOffPolicy(initial=0.4, maximum=1.6, pull_error_visible=0.3), stop_grace=1.0)
        server.pod_io = kubelet
        made.append(kubelet)
        return [kubelet]

    # runtime=False: the apiserver alone, plus this kubelet (short back-offs) and nothing else
    with lab_in_thread(lab, configure):
        yield from _scenario(lab, marks, made)


def _scenario(lab: LabDir, marks: Path, made: list[Kubelet]) -> Iterator[Node]:
    clients = kube.clients(lab.kubeconfig)
    core: Any = clients.core
    core.create_namespace({"metadata": {"name": NS}})
    for ns in (NS, "default"):
        try:
            core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        except ApiException as err:
            if err.status != 409:
                raise
    core.create_namespaced_service(NS, {"metadata": {"name": "redis-primary"}, "spec": {
        "ports": [{"name": "redis", "port": 6379}], "selector": {"app": "redis"}}})
    for name, spec in scenario_pods(marks).items():
        core.create_namespaced_pod(NS, {"metadata": {"name": name, "labels": {"app": name}},
                                        "spec": {"nodeName": "lab-node", **spec}})
    yield Node(lab, clients, marks, made[0])
    clients.close()


def until(node: Node, name: str, check: Callable[[dict[str, Any]], Any], timeout: float = 15.0,
          what: str = "") -> dict[str, Any]:
    """Wait until ``check(pod)`` holds for pod ``name``; returns the pod."""
    def probe() -> dict[str, Any] | None:
        pod = node.pod(name)
        return pod if check(pod) else None

    return wait_for(probe, timeout=timeout, what=what or name)


@pytest.fixture(scope="module")
def crash_messages(node: Node) -> Iterator[list[str]]:
    """Create a container that always fails, and record its distinct CrashLoopBackOff messages from the start."""
    script = 'n=$(cat "$HOME/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$HOME/n"; echo "run $n"; exit 1'
    node.core.create_namespaced_pod(NS, {"metadata": {"name": "crasher"}, "spec": {
        "nodeName": "lab-node", "containers": [container(**sh(script))]}})
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline and not done.is_set():
            try:
                waiting = state(node.pod("crasher")).get("waiting") or {}
            except (KeyError, IndexError):
                waiting = {}
            if waiting.get("reason") == "CrashLoopBackOff" and waiting["message"] not in seen:
                seen.append(waiting["message"])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield seen
    done.set()


def logged(node: Node, name: str, needle: str, timeout: float = 10.0) -> str:
    """Wait until the log of ``name`` contains ``needle``; returns the log."""
    def probe() -> str | None:
        text = node.logs(name)
        return text if needle in text else None

    return wait_for(probe, timeout=timeout, what=f"{needle!r} in the log of {name}")


def condition(pod: dict[str, Any], kind: str) -> str:
    return next(c["status"] for c in pod["status"]["conditions"] if c["type"] == kind)


def state(pod: dict[str, Any], index: int = 0, key: str = "containerStatuses") -> dict[str, Any]:
    return dict(pod["status"][key][index]["state"])


# -- running and ready ------------------------------------------------------------------------------------------


def test_a_pod_runs_and_becomes_ready_serving_on_its_own_address(node: Node) -> None:
    pod = until(node, "web", lambda p: condition(p, "Ready") == "True")
    status = pod["status"]
    assert status["phase"] == "Running"
    # each lab's kubelet takes a 127.N.0.0/16 range of its own (N >= 10), never the node's 127.0.0.1
    first, second = (int(part) for part in status["podIP"].split(".")[:2])
    assert first == 127 and second >= 10 and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"] == "127.0.0.1"
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    cs = status["containerStatuses"][0]
    assert cs["containerID"].startswith("meshlab://") and cs["imageID"].startswith("meshlab/test@sha256:")
    assert (cs["ready"], cs["started"], cs["restartCount"]) == (True, True, 0)
    assert "startedAt" in cs["state"]["running"]
    with urllib.request.urlopen(f"http://{status['podIP']}:8080/", timeout=5) as resp:
        assert resp.status == 200
    expected = {("Normal", "Pulled", 'Container image "meshlab/test:1" already present on machine'),
                ("Normal", "Created", "Created container: app"), ("Normal", "Started", "Started container app")}
    # events are recorded just after the status is written: give them a moment
    wait_for(lambda: expected <= set(node.events("web")), timeout=5, what="Pulled, Created and Started events")


def test_node_is_registered_ready_with_capacity_and_a_lease(node: Node) -> None:
    n = node.clients.api_client.sanitize_for_serialization(node.core.read_node("lab-node"))
    assert n["metadata"]["labels"]["kubernetes.io/hostname"] == "lab-node"
    assert "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"]
    assert n["status"]["capacity"]["pods"] == "110" and int(n["status"]["capacity"]["cpu"]) >= 1
    assert n["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.0-meshlab"
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("meshlab-process://")
    ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}
    assert ready == {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}
    leases: Any = client.CoordinationV1Api(node.clients.api_client)
    lease = node.clients.api_client.sanitize_for_serialization(leases.read_namespaced_lease("lab-node",
                                                                                            "kube-node-lease"))
    assert lease["spec"]["holderIdentity"] == "lab-node" and lease["spec"]["leaseDurationSeconds"] == 40


def test_readiness_probe_gates_ready_until_exec_makes_it_pass(node: Node) -> None:
    wait_for(lambda: state(node.pod("gated")).get("running"), what="gated running")
    time.sleep(1.5)
    pod = node.pod("gated")
    assert condition(pod, "Ready") == "False"
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    assert any(r == "Unhealthy" and m.startswith("Readiness probe failed") for _, r, m in node.events("gated"))
    # the Python client's exec goes through the same PodIO as kubectl's
    stream(node.core.connect_get_namespaced_pod_exec, "gated", NS, command=["sh", "-c", 'touch "$HOME/ready"'],
           stderr=True, stdin=False, stdout=True, tty=False)
    wait_for(lambda: condition(node.pod("gated"), "Ready") == "True", timeout=10, what="gated Ready")


# -- restarts -----------------------------------------------------------------------------------------------------


def test_a_crashing_container_shows_crash_loop_back_off_with_growing_back_off(
        node: Node, crash_messages: list[str]) -> None:
    seen = crash_messages
    wait_for(lambda: len(seen) >= 3, timeout=20, what="three back-off periods")
    assert [m.split()[1] for m in seen[:3]] == ["400ms", "800ms", "1.6s"]
    assert seen[0].startswith("back-off 400ms restarting failed container=app pod=crasher_kl(")
    pod = node.pod("crasher")
    assert pod["status"]["phase"] == "Running"
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (1, "Error")
    assert any(r == "BackOff" and "Back-off restarting failed container app" in m for _, r, m in node.events("crasher"))


@needs_kubectl
def test_kubectl_logs_previous_shows_the_run_before(node: Node, crash_messages: list[str]) -> None:
    wait_for(lambda: node.pod("crasher")["status"]["containerStatuses"][0]["restartCount"] >= 2, timeout=20,
             what="restarts")
    for _ in range(5):  # a restart may land between the two reads: retry until both agree
        current = node.kubectl("logs", "crasher")
        previous = node.kubectl("logs", "crasher", "--previous")
        assert current.returncode == 0 and previous.returncode == 0, current.stderr + previous.stderr
        now, before = int(current.stdout.split()[1]), int(previous.stdout.split()[1])
        if now == before + 1:
            break
    assert now == before + 1
    shown = node.kubectl("get", "pod", "crasher").stdout
    assert "CrashLoopBackOff" in shown or "Error" in shown or "Running" in shown


def test_liveness_failure_kills_and_restarts(node: Node) -> None:
    wait_for(lambda: node.pod("liveness")["status"]["containerStatuses"][0]["restartCount"] >= 1, timeout=20,
             what="a restart")
    events = node.events("liveness")
    ip = node.pod("liveness")["status"]["podIP"]
    assert ("Warning", "Unhealthy", f"Liveness probe failed: dial tcp {ip}:9: connect: connection refused") in events
    assert ("Normal", "Killing", "Container app failed liveness probe, will be restarted") in events


@pytest.mark.parametrize(("name", "phase", "exit_code", "reason"), [
    ("done-ok", "Succeeded", 0, "Completed"),
    ("done-error", "Failed", 7, "Error"),
    ("retry", "Succeeded", 0, "Completed"),
])
def test_restart_policy_decides_the_final_phase(node: Node, name: str, phase: str, exit_code: int,
                                                reason: str) -> None:
    pod = until(node, name, lambda p: p["status"]["phase"] == phase)
    terminated = state(pod)["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (exit_code, reason)
    assert condition(pod, "Ready") == "False"


def test_init_containers_run_in_order_before_the_app(node: Node) -> None:
    pod = until(node, "init", lambda p: p["status"]["phase"] == "Running")
    inits = pod["status"]["initContainerStatuses"]
    assert [(s["name"], s["ready"], s["state"]["terminated"]["reason"]) for s in inits] == [
        ("one", True, "Completed"), ("two", True, "Completed")]
    assert condition(pod, "Initialized") == "True"
    logs = node.logs("init")
    assert logs == "one\ntwo\n"


# -- configuration ------------------------------------------------------------------------------------------------


def test_a_missing_configmap_waits_then_starts_once_it_exists(node: Node) -> None:
    waiting = wait_for(lambda: state(node.pod("configwait")).get("waiting", {}).get("reason") ==
                       "CreateContainerConfigError" and state(node.pod("configwait"))["waiting"], what="config error")
    assert waiting["message"] == 'configmap "later" not found'
    assert ("Warning", "Failed", 'Error: configmap "later" not found') in node.events("configwait")
    node.core.create_namespaced_config_map(NS, {"metadata": {"name": "later"}, "data": {"greeting": "hi"}})
    wait_for(lambda: state(node.pod("configwait")).get("running"), timeout=10, what="configwait running")
    assert logged(node, "configwait", "greeting") == "greeting=hi\n"


def test_environment_as_kubernetes_builds_it(node: Node) -> None:
    wait_for(lambda: state(node.pod("envdump")).get("running"), what="envdump running")
    text = logged(node, "envdump", "PATH=")
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    ip = node.pod("envdump")["status"]["podIP"]
    assert (env["APP"], env["SA"], env["WHERE"]) == ("envdump", "default", "$(MY_NS)/envdump")
    assert env["REDIS_PRIMARY_SERVICE_PORT"] == "6379" and env["REDIS_PRIMARY_SERVICE_HOST"].count(".") == 3
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    # the pod's namespace and name ride along as proxy credentials, so short Service names resolve in it
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://kl:envdump@127.0.0.1:3128"
    assert env["NO_PROXY"].split(",")[:3] == [ip, "127.0.0.1", "localhost"]
    assert env["PATH"].startswith(str(Path(PY).parent)) and env["HOSTNAME"] == "envdump"


def test_a_non_meshlab_image_fails_with_a_clear_reason(node: Node) -> None:
    waiting = wait_for(lambda: state(node.pod("nginx")).get("waiting", {}).get("reason") in (
        "ErrImagePull", "ImagePullBackOff") and state(node.pod("nginx"))["waiting"], what="image error")
    assert "only runs meshlab images (meshlab/" in waiting["message"]
    assert any(t == "Warning" and r == "Failed" and m.startswith('Failed to pull image "nginx:1.27"')
               for t, r, m in node.events("nginx"))
    assert node.pod("nginx")["status"]["phase"] == "Pending"


# -- logs and exec ----------------------------------------------------------------------------------------------


@needs_kubectl
def test_kubectl_logs_follow_streams_until_the_container_ends(node: Node) -> None:
    started = time.monotonic()
    followed = node.kubectl("logs", "-f", "chatty", "--timestamps", timeout=20)
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["line 1", "line 2", "line 3"]
    assert lines[0].split(" ")[0].endswith("Z") and time.monotonic() - started < 15


@needs_kubectl
def test_kubectl_exec_runs_in_the_containers_environment(node: Node) -> None:
    wait_for(lambda: state(node.pod("web")).get("running"), what="web running")
    proc = node.kubectl("exec", "web", "--", "sh", "-c", 'echo "$POD_IP $HOSTNAME"; echo oops >&2; exit 4')
    assert proc.returncode == 4
    assert proc.stdout.split() == [node.pod("web")["status"]["podIP"], "web"]
    assert "oops" in proc.stderr
    missing = node.kubectl("exec", "web", "--", "no-such-command")
    assert missing.returncode != 0 and "no-such-command" in missing.stderr


@needs_kubectl
def test_logs_of_a_container_that_never_started_say_why(node: Node) -> None:
    proc = node.kubectl("logs", "nginx")
    assert proc.returncode != 0
    assert 'container "web" in pod "nginx" is waiting to start: trying and failing to pull image' in proc.stderr
    proc = node.kubectl("logs", "web", "--previous")
    assert 'previous terminated container "app" in pod "web" not found' in proc.stderr


# -- termination (last: it deletes pods) ------------------------------------------------------------------------


def test_graceful_termination_sigterm_then_sigkill_then_the_pod_is_gone(node: Node) -> None:
    wait_for(lambda: (node.marks / "graceful.pid").exists() and state(node.pod("graceful")).get("running"),
             what="graceful running")
    pid = int((node.marks / "graceful.pid").read_text())
    started = time.monotonic()
    node.core.delete_namespaced_pod("graceful", NS)

    def gone() -> bool:
        try:
            node.core.read_namespaced_pod("graceful", NS)
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(gone, timeout=15, what="the pod to disappear")
    took = time.monotonic() - started
    assert (node.marks / "graceful.term").read_text() == "SIGTERM"
    assert 2.5 <= took < 10, took  # the process ignored SIGTERM: SIGKILL came after the 3 s grace period
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert any(r == "Killing" and m == "Stopping container app" for _, r, m in node.events("graceful"))


def test_deleting_a_pod_frees_its_address_and_files(node: Node) -> None:
    pod = until(node, "envdump", lambda p: state(p).get("running"))
    uid = pod["metadata"]["uid"]
    node.core.delete_namespaced_pod("envdump", NS, grace_period_seconds=1)
    wait_for(lambda: uid not in node.kubelet.workers, timeout=15, what="the worker to finish")
    assert not (node.lab.path / "pods" / uid).exists()
    assert node.kubelet.ctx.addresses.get(uid) is None


def test_stop_leaves_no_container_processes(node: Node) -> None:
    pids = [proc.pid for worker in node.kubelet.workers.values() for proc in worker.procs.values()]
    assert pids
    for pid in pids:
        os.kill(pid, 0)  # alive now; the fixture's teardown stops the lab
    asyncio.run_coroutine_threadsafe(node.kubelet.stop(), _loop_of(node)).result(30)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _loop_of(node: Node) -> asyncio.AbstractEventLoop:
    task = node.kubelet._tasks[0] if node.kubelet._tasks else None
    assert task is not None
    return task.get_loop()
