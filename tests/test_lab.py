"""The notebooks' facade on the embedded lab."""

from __future__ import annotations

import pytest

from meshlab import lab as meshlab_lab
from meshlab.errors import LabError
from tests.conftest import RunningLab, kubectl_path


def test_connect_to_a_kubeconfig_and_apply_twice(lab: RunningLab) -> None:
    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: facade}\ndata: {mode: one}\n"
        first = handle.apply(manifest)
        second = handle.apply(manifest.replace("one", "two"))
        assert first[0]["data"] == {"mode": "one"} and second[0]["data"] == {"mode": "two"}
        assert handle.core.read_namespaced_config_map("facade", "default").data == {"mode": "two"}
        assert repr(handle) == "Lab(embedded, name='test')"
    finally:
        handle.close()


def test_apply_explains_unknown_kinds(lab: RunningLab) -> None:
    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        with pytest.raises(LabError, match="does not serve Gizmo"):
            handle.apply({"apiVersion": "example.com/v9", "kind": "Gizmo", "metadata": {"name": "x"}})
    finally:
        handle.close()


@pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")
def test_kubectl_through_the_facade(lab: RunningLab) -> None:
    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        assert "default" in handle.kubectl("get", "namespaces", "-o", "name")
        with pytest.raises(LabError, match='namespaces "nope" not found'):
            handle.kubectl("get", "namespace", "nope")
    finally:
        handle.close()


def test_connect_without_a_running_lab_says_what_to_do(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHLAB_HOME", str(tmp_path))
    with pytest.raises(LabError, match=r"meshlab.lab.up\(\)"):
        meshlab_lab.connect()


def test_delete_by_manifest_and_by_name(lab: RunningLab) -> None:
    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        manifest = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone-1}\n---\n"
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone-2}\n")
        handle.apply(manifest)
        assert handle.delete(manifest) == ["configmap/gone-1", "configmap/gone-2"]
        assert handle.delete(manifest) == []  # already gone: nothing to do, no error
        handle.apply(manifest)
        if kubectl_path():
            assert handle.delete("configmap", "gone-1") == ["configmap/gone-1"]
    finally:
        handle.close()


def test_wait_ready_says_what_it_waited_for(lab: RunningLab) -> None:
    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        handle.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "waited"},
                      "spec": {"ports": [{"port": 80}]}})
        assert handle.wait_ready("service", "waited", timeout=5)["metadata"]["name"] == "waited"
        with pytest.raises(LabError, match="pod default/absent was not ready after 1s: it does not exist yet"):
            handle.wait_ready("pod", "absent", timeout=1)
    finally:
        handle.close()


def test_wait_gone_waits_for_a_namespace_to_finish_terminating(lab: RunningLab) -> None:
    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        handle.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "going"}})
        handle.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inside"}}, namespace="going")
        with pytest.raises(LabError, match=r"namespace going is still there after 0s \(Active\)"):
            handle.wait_gone("namespace", "going", timeout=0)
        handle.delete("namespace", "going")
        handle.wait_gone("namespace", "going", timeout=30)
        assert handle.delete("namespace", "going") == []  # already gone
    finally:
        handle.close()


ECHO = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: facade-echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: meshlab/echo:1
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: facade-echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_deploy_wait_and_call_a_service(lab: RunningLab) -> None:
    import json

    handle = meshlab_lab.connect(lab.kubeconfig)
    try:
        handle.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "facade-echo"}})
        handle.apply(ECHO)
        deployment = handle.wait_ready("deployment", "echo", namespace="facade-echo", timeout=60)
        assert deployment["status"]["availableReplicas"] == 2
        pods = {json.loads(handle.get("echo", 80, "/hi", namespace="facade-echo"))["hostname"] for _ in range(6)}
        assert len(pods) == 2, "the service did not balance over both ready pods"
        with pytest.raises(LabError, match=r"answered 50\d: .*no such service \"echo\" in namespace \"default\""):
            handle.get("echo", 80, namespace="default")  # no such service there
    finally:
        handle.kubectl("delete", "namespace", "facade-echo", "--wait=false")
        handle.close()
