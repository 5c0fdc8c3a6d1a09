"""An in-process lab running every controller plus a fake kubelet, shared by the controller tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from meshlab import kube
from meshlab.cluster.apiserver import ApiServer
from meshlab.cluster.controllers import lab_controllers
from meshlab.cluster.controllers.namespaces import NamespaceController
from meshlab.cluster.labdir import LabDir
from meshlab.cluster.resources import ResourceType
from tests.cluster.controllers.fake_kubelet import FakeKubelet
from tests.inprocess import lab_in_thread
from tests.polling import wait_for

T = TypeVar("T")


@dataclass
class PodPeaks:
    """The most pods (not terminating) ever seen at once per namespace, recorded on every pod write."""

    server: ApiServer | None = None
    peaks: dict[str, int] = field(default_factory=dict)

    def __call__(self, operation: str, rt: ResourceType, old: Any, new: Any) -> None:
        if rt.plural != "pods" or self.server is None:
            return
        obj = new or old
        ns = obj["metadata"]["namespace"]
        live = sum(1 for p, _ in self.server.rest.store.scan("/pods", ns)
                   if not p["metadata"].get("deletionTimestamp"))
        self.peaks[ns] = max(self.peaks.get(ns, 0), live)


@dataclass
class ControllerLab:
    lab: LabDir
    clients: kube.Clients
    server: ApiServer
    peaks: PodPeaks
    loop: asyncio.AbstractEventLoop
    controllers: list[Any]

    def controller(self, kind: type[T]) -> T:
        return next(c for c in self.controllers if isinstance(c, kind))

    def kubectl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.lab.kubeconfig), "KUBECACHEDIR": str(self.lab.kube_cache)}
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="package")
def controller_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerLab]:
    lab = LabDir.named("controllers", tmp_path_factory.mktemp("controllers-home"))
    holder: dict[str, Any] = {}
    peaks = PodPeaks()

    def configure(server: ApiServer, port: int) -> list[Any]:
        holder["server"] = server
        holder["loop"] = asyncio.get_running_loop()
        peaks.server = server
        server.rest.after_store.append(peaks)
        ca_pem = (lab.pki / "ca.crt").read_bytes()
        # runtime=False: no real kubelet, and the supervisor runs the NamespaceController (the same class)
        # itself; the fake kubelet and the other controllers come from here.
        parts = [c for c in lab_controllers(server.rest, ca_pem=ca_pem) if not isinstance(c, NamespaceController)]
        holder["controllers"] = parts
        return [FakeKubelet(server.rest), *parts]

    with lab_in_thread(lab, configure, timeout=15):
        clients = kube.clients(lab.kubeconfig)
        wait_for(lambda: clients.core.list_node().items, timeout=10, what="lab-node")
        yield ControllerLab(lab, clients, holder["server"], peaks, holder["loop"], holder["controllers"])
        clients.close()


@pytest.fixture()
def ns(controller_lab: ControllerLab, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test (left for the lab's teardown: deleting it is itself a tested behaviour)."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + "-" + os.urandom(2).hex()
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
    controller_lab.clients.core.create_namespace({"metadata": {"name": name}})
    return name
