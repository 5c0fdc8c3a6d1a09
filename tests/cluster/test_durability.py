"""A kill -9 of the lab loses no acknowledged write, and resourceVersions keep increasing after restart."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from meshlab import kube
from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir


@pytest.mark.slow
def test_sigkill_during_a_write_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    lab = LabDir.named("durability", tmp_path)
    info = supervisor.up(lab, port=0)
    c = kube.clients(lab.kubeconfig)
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def writer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"w{worker}-{i}"
            try:
                made = c.core.create_namespaced_config_map("default", {"metadata": {"name": name},
                                                                       "data": {"n": str(i)}})
            except Exception:
                return
            acknowledged[name] = made.metadata.resource_version
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    os.kill(int(info["pid"]), signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    c.close()
    assert len(acknowledged) > 20, "the burst was too small to mean anything"
    highest = max(int(rv) for rv in acknowledged.values())

    supervisor.up(lab, port=0)
    c = kube.clients(lab.kubeconfig)
    try:
        stored = {cm.metadata.name: cm for cm in c.core.list_namespaced_config_map("default").items}
        missing = [name for name in acknowledged if name not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        for name, rv in acknowledged.items():
            assert stored[name].metadata.resource_version == rv
        after = c.core.create_namespaced_config_map("default", {"metadata": {"name": "after-restart"}})
        assert int(after.metadata.resource_version) > highest
    except ApiException as err:
        pytest.fail(f"the restarted lab answered {err.status}: {err.body}")
    finally:
        c.close()
        supervisor.down(lab)
