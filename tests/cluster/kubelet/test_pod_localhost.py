"""The pod-localhost: a private, unreported address per pod that its containers share, like a pod's 127.0.0.1.

One in-process lab with the kubelet (the pattern of ``test_kubelet.py``); the pods are created up front and
report what they see in their logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from meshlab import kube, podnet
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.kubelet import BackOffPolicy, Kubelet
from meshlab.cluster.labdir import LabDir
from tests.inprocess import lab_in_thread
from tests.polling import wait_for

NS = "podlocal"

# Polls the other container's server (HTTP_PROXY is set in the lab: this also checks NO_PROXY lets it through).
CLIENT = """
import os, time, urllib.request
from meshlab.podnet import pod_localhost
print("local=" + pod_localhost(), flush=True)
deadline = time.monotonic() + 15
while True:
    try:
        with urllib.request.urlopen(os.environ["UPSTREAM"], timeout=2) as resp:
            print("reached", resp.status, flush=True)
            break
    except OSError as err:
        if time.monotonic() > deadline:
            print("unreachable", err, flush=True)
            break
        time.sleep(0.2)
time.sleep(600)
"""
REPORT = """
import os, time
from meshlab.podnet import listen_address, pod_localhost
print(f"listen={listen_address()} local={pod_localhost()} bind={os.environ.get('BIND', '')}", flush=True)
time.sleep(600)
"""


def container(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "meshlab/test:1", **extra}


PODS: dict[str, list[dict[str, Any]]] = {
    "duo": [container("server", command=["python", "-u", "-m", "http.server", "8080", "--bind",
                                         "$(MESHLAB_POD_LOCALHOST)"]),
            container("client", command=["python", "-c", CLIENT],
                      env=[{"name": "UPSTREAM", "value": "http://$(MESHLAB_POD_LOCALHOST):8080/"}])],
    "solo": [container("app", command=["python", "-c", REPORT])],
    # the sidecar pattern: the app keeps to the pod-localhost, leaving the pod IP to its proxy
    "override": [container("app", command=["python", "-c", REPORT], env=[
        {"name": "MESHLAB_POD_IP", "value": "$(MESHLAB_POD_LOCALHOST)"},
        {"name": "BIND", "value": "$(MESHLAB_POD_IP):9000"}])],
}


@dataclass
class Node:
    clients: kube.Clients
    kubelet: Kubelet

    @property
    def core(self) -> Any:
        return self.clients.core

    def pod(self, name: str) -> dict[str, Any]:
        return dict(self.clients.api_client.sanitize_for_serialization(self.core.read_namespaced_pod(name, NS)))

    def log_line(self, pod: str, container: str, prefix: str | tuple[str, ...]) -> str:
        """The first line of the container's log starting with ``prefix`` (waits for it)."""
        def probe() -> str | None:
            try:
                text = str(self.core.read_namespaced_pod_log(pod, NS, container=container))
            except ApiException:
                return None
            return next((line for line in text.splitlines() if line.startswith(prefix)), None)

        return wait_for(probe, timeout=20, what=f"{prefix!r} in the log of {pod}/{container}")

    def fields(self, pod: str, container: str) -> dict[str, str]:
        line = self.log_line(pod, container, "listen=")
        return dict(part.split("=", 1) for part in line.split())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    lab = LabDir.named("podlocal", tmp_path_factory.mktemp("podlocal-home"))
    made: list[Kubelet] = []

    def configure(server: ApiServer, port: int) -> list[Any]:
        kubelet = Kubelet(server.rest, state_dir=lab.path, signer=server.signer,
                          apiserver_url=f"https://127.0.0.1:{port}", ca_pem=b"", proxy_url="http://127.0.0.1:3128",
                          backoff=BackOffPolicy(initial=0.4, maximum=1.6, pull_error_visible=0.3), stop_grace=1.0)
        server.pod_io = kubelet
        made.append(kubelet)
        return [kubelet]

    with lab_in_thread(lab, configure):
        yield from _pods(lab, made)


def _pods(lab: LabDir, made: list[Kubelet]) -> Iterator[Node]:
    clients = kube.clients(lab.kubeconfig)
    core: Any = clients.core
    core.create_namespace({"metadata": {"name": NS}})
    for ns in (NS, "default"):
        try:
            core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        except ApiException as err:
            if err.status != 409:
                raise
    for name, containers in PODS.items():
        core.create_namespaced_pod(NS, {"metadata": {"name": name},
                                        "spec": {"nodeName": "lab-node", "containers": containers}})
    yield Node(clients, made[0])
    clients.close()


def served_on(node: Node) -> str:
    """The address the duo's server bound: ``http.server`` says so, after the kubelet expanded its args."""
    line = node.log_line("duo", "server", "Serving HTTP on ")
    return line.split()[3]


def test_the_containers_of_a_pod_share_its_localhost_and_other_pods_have_their_own(node: Node) -> None:
    server = served_on(node)
    client = node.log_line("duo", "client", "local=").removeprefix("local=")
    solo = node.fields("solo", "app")["local"]
    assert server == client
    assert solo != server
    assert server.startswith("127.") and server != "127.0.0.1"
    assert node.kubelet.ctx.addresses.localhost(node.pod("duo")["metadata"]["uid"]) == server


def test_a_server_on_the_pod_localhost_is_reachable_from_the_other_container(node: Node) -> None:
    assert node.log_line("duo", "client", ("reached", "unreachable")) == "reached 200"


@pytest.mark.parametrize(("field", "expected"), [
    ("listen", "local"),  # meshlab.podnet.listen_address() follows the override
    ("bind", "local:9000"),  # a later $(MESHLAB_POD_IP) sees the container's own value
], ids=["listen-address", "later-reference"])
def test_a_container_may_override_its_pod_ip(node: Node, field: str, expected: str) -> None:
    seen = node.fields("override", "app")
    assert seen[field] == expected.replace("local", seen["local"])
    assert seen["local"] != node.pod("override")["status"]["podIP"]


def test_the_pod_localhost_is_not_reported_in_status(node: Node) -> None:
    local = served_on(node)
    pod = wait_for(lambda: (p := node.pod("duo"))["status"].get("podIP") and p, timeout=10, what="duo's podIP")
    status = pod["status"]
    assert status["podIPs"] == [{"ip": status["podIP"]}] and status["podIP"] != local
    assert local not in json.dumps(status)


def test_deleting_the_pod_releases_its_localhost(node: Node) -> None:
    local = served_on(node)
    uid = node.pod("duo")["metadata"]["uid"]
    node.core.delete_namespaced_pod("duo", NS, grace_period_seconds=1)
    wait_for(lambda: uid not in node.kubelet.workers, timeout=15, what="the duo's worker to finish")
    addresses = node.kubelet.ctx.addresses
    assert addresses.localhost(uid) is None and addresses.get(uid) is None
    # the persisted table (what a restarted kubelet starts from) forgets it too, once the coalesced write lands
    wait_for(lambda: uid not in json.loads(addresses.path.read_text())["localhost"], timeout=5,
             what="the table to be saved")
    assert local not in json.loads(addresses.path.read_text())["localhost"].values()


@pytest.mark.parametrize(("env", "listen", "local"), [
    ({}, "0.0.0.0", "127.0.0.1"),
    ({"MESHLAB_POD_IP": "127.10.0.4", "MESHLAB_POD_LOCALHOST": "127.10.0.5"}, "127.10.0.4", "127.10.0.5"),
    ({"POD_IP": "10.0.0.9", "MESHLAB_POD_IP": "127.10.0.4"}, "10.0.0.9", "127.0.0.1"),
], ids=["real-cluster", "lab", "downward-api-pod-ip-wins"])
def test_meshlab_programs_find_their_addresses(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], listen: str,
                                               local: str) -> None:
    for name in ("POD_IP", "MESHLAB_POD_IP", "MESHLAB_POD_LOCALHOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (podnet.listen_address(), podnet.pod_localhost()) == (listen, local)
