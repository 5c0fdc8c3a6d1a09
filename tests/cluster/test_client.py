"""The official `kubernetes` Python client against the embedded apiserver."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils, watch
from kubernetes.client.rest import ApiException

from meshlab import kube

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "meshlab/echo:1", "ports": [{"containerPort": 8080}],
                                     "env": [{"name": "A", "value": "1"}]}]},
        },
    },
}


def test_configmap_create_read_replace_delete(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    created = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"a": "b"}})
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    got = core.read_namespaced_config_map("cfg", namespace)
    assert got.data == {"a": "b"}
    got.data["c"] = "d"
    replaced = core.replace_namespaced_config_map("cfg", namespace, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    core.delete_namespaced_config_map("cfg", namespace)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("cfg", namespace)
    assert err.value.status == 404


def test_duplicate_create_is_409_already_exists(clients: kube.Clients, namespace: str) -> None:
    clients.core.create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as err:
        clients.core.create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    assert err.value.status == 409
    assert '"reason":"AlreadyExists"' in err.value.body.replace(" ", "")


def test_stale_update_is_409_conflict(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    first = core.create_namespaced_config_map(namespace, {"metadata": {"name": "cc"}, "data": {"v": "1"}})
    core.patch_namespaced_config_map("cc", namespace, {"data": {"v": "2"}})
    first.data["v"] = "3"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cc", namespace, first)
    assert err.value.status == 409
    assert core.read_namespaced_config_map("cc", namespace).data == {"v": "2"}


def test_generate_name(clients: kube.Clients, namespace: str) -> None:
    made = clients.core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "job-"}})
    assert made.metadata.name.startswith("job-") and len(made.metadata.name) == len("job-") + 5


def test_list_with_label_and_field_selectors(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": {"tier": tier}}})
    web = core.list_namespaced_config_map(namespace, label_selector="tier=web")
    assert [i.metadata.name for i in web.items] == ["a", "b"]
    not_web = core.list_namespaced_config_map(namespace, label_selector="tier,tier notin (web)")
    assert [i.metadata.name for i in not_web.items] == ["c"]
    by_name = core.list_namespaced_config_map(namespace, field_selector="metadata.name=b")
    assert [i.metadata.name for i in by_name.items] == ["b"]
    everywhere = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={namespace},metadata.name!=kube-root-ca.crt")
    assert len(everywhere.items) == 3


def test_list_pagination(clients: kube.Clients, namespace: str) -> None:
    for i in range(5):
        clients.core.create_namespaced_config_map(namespace, {"metadata": {"name": f"p{i}", "labels": {"page": "y"}}})
    # (selected by label: the controllers add kube-root-ca.crt to every namespace at their own pace)
    page = clients.core.list_namespaced_config_map(namespace, limit=2, label_selector="page")
    names = [i.metadata.name for i in page.items]
    while page.metadata._continue:
        page = clients.core.list_namespaced_config_map(namespace, limit=2, label_selector="page",
                                                       _continue=page.metadata._continue)
        names += [i.metadata.name for i in page.items]
    assert names == ["p0", "p1", "p2", "p3", "p4"]


def test_deployment_patches_of_every_kind(clients: kube.Clients, namespace: str) -> None:
    apps = clients.apps
    apps.create_namespaced_deployment(namespace, DEPLOYMENT)
    # strategic merge (the typed client's default for a dict): env merged by name, containers by name
    patched = apps.patch_namespaced_deployment("web", namespace, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}})
    env = patched.spec.template.spec.containers[0].env
    assert {(e.name, e.value) for e in env} == {("A", "1"), ("B", "2")}
    assert patched.metadata.generation == 2
    # JSON patch (a list)
    patched = apps.patch_namespaced_deployment("web", namespace, [
        {"op": "replace", "path": "/spec/replicas", "value": 3}])
    assert patched.spec.replicas == 3
    # scale subresource answers an autoscaling/v1 Scale
    scale = apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    assert scale.kind == "Scale" and scale.spec.replicas == 1
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 1
    # status is written only through /status, and does not bump generation
    # (the lab's deployment controller writes status too, so check what this write answered)
    before = apps.read_namespaced_deployment("web", namespace)
    written = apps.patch_namespaced_deployment_status("web", namespace, {"status": {"observedGeneration": 4,
                                                                                    "collisionCount": 7}})
    assert written.status.collision_count == 7 and written.metadata.generation == before.metadata.generation
    unchanged = apps.patch_namespaced_deployment("web", namespace, {"status": {"collisionCount": 9}})
    assert unchanged.status.collision_count != 9, "the main resource must not write status"


def test_server_side_apply_creates_then_updates(clients: kube.Clients, namespace: str) -> None:
    def apply(body: dict[str, Any]) -> tuple[int, Any]:
        data, status, _ = clients.apps.patch_namespaced_deployment_with_http_info(
            "web", namespace, body, field_manager="tester", _content_type="application/apply-patch+yaml")
        return status, data

    status, first = apply(DEPLOYMENT)
    assert status == 201 and first.spec.replicas == 2
    changed = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": 5}}
    status, second = apply(changed)
    assert status == 200 and second.spec.replicas == 5
    assert {m.manager: m.operation for m in second.metadata.managed_fields}["tester"] == "Apply"
    # another manager changing a field the applier owns is a conflict, exactly as in Kubernetes
    with pytest.raises(ApiException) as err:
        clients.apps.patch_namespaced_deployment(
            "web", namespace, {**changed, "spec": {**changed["spec"], "replicas": 7}}, field_manager="other",
            _content_type="application/apply-patch+yaml")
    assert err.value.status == 409 and 'conflict with "tester"' in json.loads(err.value.body)["message"]


def test_watch_from_resource_version_sees_later_changes(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "w1"}})
    core.patch_namespaced_config_map("w1", namespace, {"data": {"x": "y"}})
    core.delete_namespaced_config_map("w1", namespace)
    seen = []
    w = watch.Watch()
    # (by name: the controllers add kube-root-ca.crt to a new namespace at their own pace)
    for event in w.stream(core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=2,
                          field_selector="metadata.name=w1"):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_watch_delivers_live_events(clients: kube.Clients, namespace: str) -> None:
    core = clients.core

    def later() -> None:
        time.sleep(0.3)
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "live", "labels": {"w": "1"}}})

    threading.Thread(target=later).start()
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, namespace, label_selector="w=1", timeout_seconds=5):
        assert event["type"] == "ADDED" and event["object"].metadata.name == "live"
        w.stop()
        break
    else:
        pytest.fail("no event arrived")


def test_watch_from_compacted_version_is_410(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshlab.cluster import supervisor
    from meshlab.cluster.labdir import LabDir

    monkeypatch.setenv("MESHLAB_WATCH_HISTORY", "20")
    small = LabDir.named("compacted", tmp_path)
    supervisor.up(small, port=0)
    c = kube.clients(small.kubeconfig)
    try:
        first = c.core.create_namespaced_config_map("default", {"metadata": {"name": "c0"}})
        for i in range(1, 40):
            c.core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        w = watch.Watch()
        with pytest.raises(ApiException) as err:
            for _ in w.stream(c.core.list_namespaced_config_map, "default",
                              resource_version=first.metadata.resource_version, timeout_seconds=2):
                pass
        assert err.value.status == 410 and "too old resource version" in str(err.value)
    finally:
        c.close()
        supervisor.down(small)


def test_create_from_yaml(clients: kube.Clients, namespace: str, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n"
        "  ports: [{port: 80, targetPort: 8080}]\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: demo}\n"
    )
    utils.create_from_yaml(clients.api_client, str(manifest), namespace=namespace)
    svc = clients.core.read_namespaced_service("web", namespace)
    assert svc.spec.cluster_ip.startswith("10.") and svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].protocol == "TCP"
    assert clients.core.read_namespaced_config_map("settings", namespace).data == {"mode": "demo"}


def test_delete_returns_the_object_for_typed_kinds(clients: kube.Clients, namespace: str) -> None:
    clients.core.create_namespaced_service(namespace, {"metadata": {"name": "s"},
                                                       "spec": {"ports": [{"port": 80}]}})
    deleted = clients.core.delete_namespaced_service("s", namespace)
    assert isinstance(deleted, client.V1Service) and deleted.metadata.name == "s"


def test_finalizers_hold_deletion_until_removed(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "held", "finalizers": ["example.com/x"]}})
    core.delete_namespaced_config_map("held", namespace)
    held = core.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", namespace)
    assert err.value.status == 404


def test_dry_run_stores_nothing(clients: kube.Clients, namespace: str) -> None:
    made = clients.core.create_namespaced_config_map(namespace, {"metadata": {"name": "dry"}}, dry_run="All")
    assert made.metadata.name == "dry"
    with pytest.raises(ApiException) as err:
        clients.core.read_namespaced_config_map("dry", namespace)
    assert err.value.status == 404


def test_namespace_deletion_removes_its_content(clients: kube.Clients) -> None:
    core = clients.core
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "x"}})
    core.delete_namespace("doomed")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            core.read_namespace("doomed")
        except ApiException as err:
            assert err.status == 404
            break
        time.sleep(0.1)
    else:
        pytest.fail("namespace was not removed")
    with pytest.raises(ApiException):
        core.create_namespaced_config_map("doomed", {"metadata": {"name": "y"}})


CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [{
            "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["size"], "properties": {
                    "size": {"type": "integer", "minimum": 1}, "color": {"type": "string"}}},
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            }}},
        }],
    },
}


@pytest.fixture(scope="module")
def widget_crd(lab: Any) -> Any:
    c = lab.clients()
    try:
        c.apiextensions.create_custom_resource_definition(CRD)
    except ApiException as err:
        if err.status != 409:
            raise
    yield c
    c.apiextensions.delete_custom_resource_definition("widgets.example.com")
    c.close()


def test_custom_resources(widget_crd: kube.Clients, namespace: str) -> None:
    crd = widget_crd.apiextensions.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    custom = widget_crd.custom
    args = ("example.com", "v1", namespace, "widgets")
    custom.create_namespaced_custom_object(*args, {"apiVersion": "example.com/v1", "kind": "Widget",
                                                   "metadata": {"name": "w"}, "spec": {"size": 2}})
    got = custom.get_namespaced_custom_object(*args, "w")
    assert got["spec"] == {"size": 2} and got["metadata"]["generation"] == 1
    merged = custom.patch_namespaced_custom_object(*args, "w", {"spec": {"color": "red"}})
    assert merged["spec"] == {"size": 2, "color": "red"} and merged["metadata"]["generation"] == 2
    status = custom.patch_namespaced_custom_object_status(*args, "w", {"status": {"ready": True}})
    assert status["status"] == {"ready": True} and status["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(*args, {"apiVersion": "example.com/v1", "kind": "Widget",
                                                       "metadata": {"name": "bad"}, "spec": {"size": 0}})
    assert err.value.status == 422 and "spec.size" in err.value.body
    listed = custom.list_namespaced_custom_object(*args)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w"]


def test_storage_classes_and_csidrivers(clients: kube.Clients) -> None:
    storage = clients.storage
    storage.create_storage_class({"metadata": {"name": "lab-nfs"}, "provisioner": "nfs.csi.meshlab.io"})
    sc = storage.read_storage_class("lab-nfs")
    assert sc.reclaim_policy == "Delete" and sc.volume_binding_mode == "Immediate"
    storage.create_csi_driver({"metadata": {"name": "nfs.csi.meshlab.io"}, "spec": {"attachRequired": False}})
    assert storage.read_csi_driver("nfs.csi.meshlab.io").spec.attach_required is False
    assert isinstance(storage.delete_storage_class("lab-nfs"), client.V1StorageClass)
    storage.delete_csi_driver("nfs.csi.meshlab.io")


def test_service_account_token_and_review(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    token = core.create_namespaced_service_account_token(
        "robot", namespace, {"spec": {"audiences": ["meshlab"], "expirationSeconds": 3600}}).status.token
    review = client.AuthenticationV1Api(clients.api_client).create_token_review(
        {"spec": {"token": token, "audiences": ["meshlab"]}})
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:robot"
    bad = client.AuthenticationV1Api(clients.api_client).create_token_review({"spec": {"token": token + "x"}})
    assert bad.status.authenticated is False


def test_requests_without_a_token_are_401(lab: Any) -> None:
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=lab.ca)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{lab.url}/api/v1/namespaces", context=ctx, timeout=5)
    assert err.value.code == 401


def test_deletecollection_by_label(clients: kube.Clients, namespace: str) -> None:
    core = clients.core
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": {"tier": tier}}})
    core.delete_collection_namespaced_config_map(namespace, label_selector="tier=web")
    assert [i.metadata.name for i in core.list_namespaced_config_map(namespace, label_selector="tier").items] == ["c"]


def test_watch_with_initial_events_ends_them_with_a_bookmark(lab: Any, namespace: str,
                                                             clients: kube.Clients) -> None:
    import ssl
    import urllib.request

    clients.core.create_namespaced_config_map(namespace, {"metadata": {"name": "present"}})
    ctx = ssl.create_default_context(cafile=lab.ca)
    url = (f"{lab.url}/api/v1/namespaces/{namespace}/configmaps?watch=true&sendInitialEvents=true"
           "&fieldSelector=metadata.name%3Dpresent"
           "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {lab.token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "present"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
