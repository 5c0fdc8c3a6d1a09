"""The real kubectl, driven through the command table of `reference/kubernetes-api.md`.

Rows run in order against one namespace (later rows use what earlier rows made), on a lab with its runtime
(controllers, kubelet), so pods really run. `port-forward` and `top` are out of scope.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningLab, kubectl_path

pytestmark = pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")

NS = "kubectl-conformance"

DEPLOY_V1 = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, labels: {app: shop}}
spec:
  replicas: 1
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - name: shop
        image: meshlab/echo:1
        ports: [{containerPort: 8080}]
        env: [{name: MODE, value: one}, {name: KEEP, value: "yes"}]
"""
DEPLOY_V2 = DEPLOY_V1.replace("value: one", "value: two").replace("replicas: 1", "replicas: 2")

POD = """
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec:
  containers: [{name: main, image: meshlab/echo:1}]
"""

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the gadget should be.
            properties:
              size: {type: integer, description: How big.}
"""


class Kubectl:
    def __init__(self, lab: RunningLab, cache: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "KUBECACHEDIR": str(cache)}

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def kubectl(lab: RunningLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    k = Kubectl(lab, tmp_path_factory.mktemp("kubecache"))
    yield k
    k("delete", "namespace", NS, "--wait=false", check=False)
    k("delete", "crd", "gadgets.example.com", check=False)


def run(kubectl: Kubectl, *args: str, stdin: str | None = None) -> str:
    return kubectl(*args, stdin=stdin).stdout


# (id, kubectl arguments, stdin, regular expressions the output must match)
ROWS: list[tuple[str, list[str], str | None, list[str]]] = [
    ("version", ["version"], None, [r"Server Version: v1\.33"]),
    ("get --raw /readyz", ["get", "--raw", "/readyz"], None, [r"^ok$"]),
    ("api-resources", ["api-resources"], None,
     [r"deployments\s+deploy\s+apps/v1\s+true\s+Deployment", r"pods\s+po\s+v1\s+true\s+Pod",
      r"customresourcedefinitions\s+crd,crds\s+apiextensions.k8s.io/v1\s+false"]),
    ("create namespace", ["create", "namespace", NS], None, [rf"namespace/{NS} created"]),
    ("create configmap", ["-n", NS, "create", "configmap", "settings", "--from-literal=a=b"], None,
     [r"configmap/settings created"]),
    ("create secret generic", ["-n", NS, "create", "secret", "generic", "creds", "--from-literal=pw=s3cret"],
     None, [r"secret/creds created"]),
    ("create serviceaccount", ["-n", NS, "create", "serviceaccount", "robot"], None,
     [r"serviceaccount/robot created"]),
    ("create deployment", ["-n", NS, "create", "deployment", "made", "--image=meshlab/echo:1", "--replicas=2"],
     None, [r"deployment.apps/made created"]),
    ("auth can-i", ["auth", "can-i", "create", "pods"], None, [r"^yes$"]),
    ("apply -f (create)", ["-n", NS, "apply", "-f", "-"], DEPLOY_V1, [r"deployment.apps/shop created"]),
    ("apply -f (changed: strategic merge patch)", ["-n", NS, "apply", "-f", "-"], DEPLOY_V2,
     [r"deployment.apps/shop configured"]),
    ("apply -f (unchanged)", ["-n", NS, "apply", "-f", "-"], DEPLOY_V2, [r"deployment.apps/shop unchanged"]),
    ("apply --server-side", ["-n", NS, "apply", "--server-side", "-f", "-"], POD, [r"pod/solo serverside-applied"]),
    ("create -f", ["-n", NS, "create", "-f", "-"], POD.replace("solo", "duo"), [r"pod/duo created"]),
    ("get pods", ["-n", NS, "get", "pods"], None,
     [r"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE", r"solo\s+[01]/1\s+\S+\s+0\s"]),
    ("get pods -o wide", ["-n", NS, "get", "pods", "-o", "wide"], None,
     [r"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE"]),
    ("get -o yaml", ["-n", NS, "get", "configmap", "settings", "-o", "yaml"], None,
     [r"a: b", r"resourceVersion: \"\d+\"", r"uid: [0-9a-f-]{36}"]),
    ("get deployment (env merged by apply)", ["-n", NS, "get", "deployment", "shop", "-o",
                                              "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].env}"],
     None, [r"^2 .*MODE.*two.*KEEP"]),
    ("get all", ["-n", NS, "get", "all"], None, [r"pod/solo", r"deployment.apps/shop"]),
    ("explain", ["explain", "deployment.spec"], None, [r"replicas\s+<integer>", r"DeploymentSpec"]),
    ("scale", ["-n", NS, "scale", "deployment", "shop", "--replicas=3"], None, [r"deployment.apps/shop scaled"]),
    ("rollout status", ["-n", NS, "rollout", "status", "deployment/shop", "--timeout=60s"], None,
     [r'deployment "shop" successfully rolled out']),
    ("wait pod Ready", ["-n", NS, "wait", "--for=condition=Ready", "pod/solo", "--timeout=60s"], None,
     [r"pod/solo condition met"]),
    ("exec", ["-n", NS, "exec", "solo", "--", "python", "-c", "print('inside', 6 * 7)"], None, [r"^inside 42$"]),
    ("logs", ["-n", NS, "logs", "deployment/shop"], None, [r"listening on http://127\.\d+\.\d+\.\d+:8080"]),
    ("rollout history", ["-n", NS, "rollout", "history", "deployment/shop"], None, [r"REVISION", r"^1\s", r"^2\s"]),
    ("rollout undo", ["-n", NS, "rollout", "undo", "deployment/shop"], None, [r"deployment.apps/shop rolled back"]),
    ("label", ["-n", NS, "label", "configmap", "settings", "tier=backend"], None, [r"configmap/settings labeled"]),
    ("annotate", ["-n", NS, "annotate", "configmap", "settings", "note=hi"], None, [r"configmap/settings annotated"]),
    ("get -l", ["-n", NS, "get", "configmaps", "-l", "tier=backend", "-o", "name"], None, [r"^configmap/settings$"]),
    ("patch --type=merge", ["-n", NS, "patch", "configmap", "settings", "--type=merge", "-p", '{"data":{"c":"d"}}'],
     None, [r"configmap/settings patched"]),
    ("patch --type=json", ["-n", NS, "patch", "configmap", "settings", "--type=json",
                           "-p", '[{"op":"remove","path":"/data/c"}]'], None, [r"configmap/settings patched"]),
    ("describe pod", ["-n", NS, "describe", "pod", "solo"], None, [r"Name:\s+solo", r"Namespace:\s+" + NS,
                                                                  r"Containers:"]),
    ("describe deployment", ["-n", NS, "describe", "deployment", "shop"], None,
     [r"Replicas:\s+3 desired", r"StrategyType:\s+RollingUpdate"]),
    ("apply CRD", ["apply", "-f", "-"], WIDGET_CRD,
     [r"customresourcedefinition.apiextensions.k8s.io/gadgets.example.com created"]),
    ("wait for condition", ["wait", "--for=condition=Established", "crd/gadgets.example.com", "--timeout=20s"],
     None, [r"condition met"]),
    ("get crd", ["get", "crd"], None, [r"NAME\s+CREATED AT", r"gadgets.example.com\s+\d{4}-\d\d-\d\dT"]),
    ("apply custom resource", ["-n", NS, "apply", "-f", "-"],
     "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 3}\n",
     [r"gadget.example.com/g1 created"]),
    ("get custom resource by short name", ["-n", NS, "get", "gd"], None, [r"NAME\s+SIZE$", r"g1\s+3$"]),
    ("explain custom resource", ["explain", "gadget.spec"], None, [r"What the gadget should be", r"size\s+<integer>"]),
    ("delete", ["-n", NS, "delete", "configmap", "settings"], None, [r'configmap "settings" deleted']),
    ("delete pod (graceful: the kubelet stops it first)", ["-n", NS, "delete", "pod", "duo"], None,
     [r'pod "duo" deleted']),
]


@pytest.mark.parametrize(("args", "stdin", "patterns"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_kubectl_command(kubectl: Kubectl, args: list[str], stdin: str | None, patterns: list[str]) -> None:
    out = run(kubectl, *args, stdin=stdin)
    for pattern in patterns:
        assert re.search(pattern, out, re.MULTILINE), f"{pattern!r} not in:\n{out}"


def test_get_watch_prints_new_objects(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", NS, check=False)
    proc = subprocess.Popen(["kubectl", "-n", NS, "get", "configmaps", "-w", "--request-timeout=6s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env)

    def create_later() -> None:
        time.sleep(1.5)
        kubectl("-n", NS, "create", "configmap", "watched-one")

    thread = threading.Thread(target=create_later)
    thread.start()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    thread.join()
    assert re.search(r"NAME\s+DATA\s+AGE", out), out
    assert "watched-one" in out


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["logs", "solo", "-c", "nope"], r"container nope is not valid for pod solo"),
        (["exec", "solo", "--", "no-such-command"], r"no-such-command"),
        (["get", "nosuchkind"], r"the server doesn't have a resource type \"nosuchkind\""),
        (["get", "pod", "missing"], r'pods "missing" not found'),
    ],
    ids=["logs of an unknown container", "exec of an unknown command", "unknown kind", "missing object"],
)
def test_kubectl_errors_are_clear(kubectl: Kubectl, args: list[str], pattern: str) -> None:
    proc = kubectl("-n", NS, *args, check=False)
    assert proc.returncode != 0
    assert re.search(pattern, proc.stderr), proc.stderr


def test_delete_namespace(kubectl: Kubectl) -> None:
    out = run(kubectl, "delete", "namespace", NS, "--timeout=30s")
    assert f'namespace "{NS}" deleted' in out
    gone: Any = kubectl("get", "namespace", NS, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr
