"""Both ends of CSI plugin registration, for real: meshlab's registrar (``meshlab csi-registrar``'s service)
serving in the kubelet's plugins_registry, and the lab kubelet's plugin watcher and CSI handler — the
kubelet registers the driver (CSINode) and the registrar hears about it; when the kubelet cannot reach the
driver it refuses, and the registrar hears the reason (upstream it then exits so its container restarts)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshlab.cluster.kubelet.pluginwatcher import PluginWatcher
from meshlab.cluster.kubelet.volume_plugins.csi import CsiPlugin
from meshlab.cluster.rest import WriteOptions
from meshlab.csiproto import csi_pb2, csi_pb2_grpc
from meshlab.storage.csi.registrar import RegistrationService, driver_name, serve, socket_name
from tests.cluster.kubelet.volume_lab import Api, open_api

DRIVER = "registrar-test.csi.meshlab.io"


class Driver(csi_pb2_grpc.IdentityServicer, csi_pb2_grpc.NodeServicer):
    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER, vendor_version="1")

    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetInfoResponse(node_id="node-a")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    for opened in open_api(tmp_path_factory):
        rt = opened.rest.registry.lookup("", "v1", "nodes")
        assert rt is not None
        asyncio.run(opened.rest.create(rt, "", {"metadata": {"name": "lab-node"}}, WriteOptions()))
        yield opened


def start_driver(socket: Path) -> grpc.Server:
    socket.parent.mkdir(parents=True, exist_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    csi_pb2_grpc.add_IdentityServicer_to_server(Driver(), server)
    csi_pb2_grpc.add_NodeServicer_to_server(Driver(), server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    return server


def kubelet_scan(api: Api) -> None:
    csi = CsiPlugin(api.rest, node_name="lab-node", root_dir=api.lab_dir)
    watcher = PluginWatcher(api.lab_dir / "plugins_registry", {"CSIPlugin": csi})

    async def scan() -> None:
        await watcher.scan()
        await csi.close()

    asyncio.run(scan())


def drivers(api: Api) -> list[dict[str, Any]]:
    rt = api.rest.registry.lookup("storage.k8s.io", "v1", "csinodes")
    assert rt is not None
    return list(api.rest.get(rt, "", "lab-node")["spec"]["drivers"])


@pytest.mark.parametrize("driver_up", [True, False], ids=["registered", "refused: driver unreachable"])
def test_registrar_and_kubelet(api: Api, driver_up: bool) -> None:
    socket = api.lab_dir / "plugins" / DRIVER / "csi.sock"
    driver = start_driver(socket)
    assert driver_name(f"unix://{socket}", timeout=5) == DRIVER
    refused = threading.Event()
    service = RegistrationService(DRIVER, f"/var/lib/kubelet/plugins/{DRIVER}/csi.sock", on_refused=refused.set)
    registration, path = serve(service, api.lab_dir / "plugins_registry")
    try:
        assert path.name == socket_name(DRIVER) == f"{DRIVER}-reg.sock"
        if not driver_up:
            driver.stop(0)
        kubelet_scan(api)
        if driver_up:
            assert service.registered.is_set() and service.refused is None
            assert {"name": DRIVER, "nodeID": "node-a"} in drivers(api)
        else:
            assert refused.is_set() and not service.registered.is_set()
            assert service.refused is not None and f"NodeGetInfo of {DRIVER}" in service.refused
    finally:
        registration.stop(0)
        driver.stop(0)
        path.unlink(missing_ok=True)
