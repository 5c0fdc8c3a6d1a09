"""CSI driver latency: CreateVolume / DeleteVolume through ``nfs.csi.meshlab.io`` over its unix socket.

``run()`` returns ``(measure, result, target)`` rows for ``python -m benchmarks``. The driver runs in this
process on a unix socket (the gRPC path is the real one); each CreateVolume opens an NFS connection,
reads the volume record, makes the directory and writes the record through NFS, as in the lab. Measured
against meshlab's Python NFSv3 server, and NFS-Ganesha v4 when it can run here (root and ``ganesha.nfsd``).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from meshlab.csiproto import csi_pb2 as pb
from meshlab.csiproto import csi_pb2_grpc as rpc
from meshlab.storage.csi.driver import build_services, run_driver
from meshlab.storage.nfsd.ganesha import ganesha_unavailable
from meshlab.storage.nfsd.running import start_nfs_server

REPORT = "report"


def _latencies(endpoint: str, params: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    capability = pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(), access_mode=pb.VolumeCapability.
                                     AccessMode(mode=pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))
    create, delete = [], []
    with grpc.insecure_channel(endpoint) as channel:
        controller = rpc.ControllerStub(channel)
        for i in range(runs + 3):
            request = pb.CreateVolumeRequest(name=f"pvc-bench-{i}", volume_capabilities=[capability],
                                             parameters=params, capacity_range=pb.CapacityRange(required_bytes=1 << 30))
            t0 = time.perf_counter()
            volume = controller.CreateVolume(request, timeout=30).volume
            t1 = time.perf_counter()
            controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=30)
            t2 = time.perf_counter()
            if i >= 3:   # warm-up: the first calls pay imports and channel setup
                create.append((t1 - t0) * 1000)
                delete.append((t2 - t1) * 1000)
    return create, delete


def run(*, runs: int = 30) -> list[tuple[str, str, str]]:
    """Median CreateVolume and DeleteVolume latency per NFS backend."""
    rows: list[tuple[str, str, str]] = []
    backends = ["python"] + (["ganesha"] if ganesha_unavailable() is None else [])
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-csi-") as tmp:
        base = Path(tmp)
        endpoint = f"unix://{base}/csi.sock"
        stop = threading.Event()
        thread = threading.Thread(target=run_driver, args=(endpoint, build_services("controller")),
                                  kwargs={"stop": stop}, daemon=True)
        thread.start()
        try:
            grpc.channel_ready_future(grpc.insecure_channel(endpoint)).result(timeout=10)
            for backend in backends:
                with start_nfs_server(base / backend / "export", backend=backend) as server:
                    loc = server.location
                    # no subDir: one directory per volume name, as a StorageClass with defaults makes
                    params = {"server": loc.server, "share": loc.export, "port": str(loc.port),
                              "version": str(loc.version)}
                    create, delete = _latencies(endpoint, params, runs)
                label = "Python NFSv3 server" if backend == "python" else "NFS-Ganesha v4"
                rows += [(f"CSI CreateVolume over the unix socket -> {label} (median of {runs})",
                          f"{statistics.median(create):.1f} ms", REPORT),
                         (f"CSI DeleteVolume over the unix socket -> {label} (median of {runs})",
                          f"{statistics.median(delete):.1f} ms", REPORT)]
        finally:
            stop.set()
            thread.join(timeout=10)
    return rows


if __name__ == "__main__":
    for measure, result, target in run():
        print(f"{measure:<72} {result:>10}   {target}")
