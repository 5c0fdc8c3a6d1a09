"""The classic profile in the embedded lab: `meshlab mesh profile classic` deploys Mixer and re-pushes the
bookstore's sidecars; requests through them are counted by Mixer with the right workloads; a deny rule in
Mixer's policy refuses an edge with 403; `meshlab mesh profile modern` switches back and removes Mixer."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshlab import cli
from meshlab.mesh.mixer import profile
from tests.mesh import test_tasks_lab as tasks
from tests.polling import wait_for

pytestmark = pytest.mark.slow

mesh = tasks.mesh  # module-scoped: mesh installed, bookstore + httpbin + sleep in a fresh namespace
Mesh = tasks.Mesh
Key = tuple[str, str, str]  # (reporter, source workload, destination workload)


def mixer_counts(mesh: Mesh) -> dict[Key, float]:
    """Mixer's istio_requests_total for the test namespace, by reporter and workload pair."""
    handle, namespace = mesh
    (pod,) = tasks.pods(handle, profile.NAMESPACE, "app=istio-mixer")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{pod['status']['podIP']}:42422/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "istio_requests_total" and sample.labels["destination_workload_namespace"] == namespace:
                key = (sample.labels["reporter"], sample.labels["source_workload"],
                       sample.labels["destination_workload"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def settled_counts(mesh: Mesh) -> dict[Key, float]:
    """Mixer's counts once the sidecars' report batches (sent every second) have all arrived."""
    def same_twice() -> dict[Key, float] | None:
        first = mixer_counts(mesh)
        time.sleep(1.5)
        return first if mixer_counts(mesh) == first else None

    return wait_for(same_twice, timeout=20, what="Mixer's counts to settle")


@pytest.fixture(scope="module")
def classic(mesh: Mesh) -> Iterator[Mesh]:
    handle, _ = mesh
    try:
        assert cli.main(["mesh", "profile", "classic", "--kubeconfig", str(handle.kubeconfig)]) == 0
        assert profile.current_profile(handle) == "classic"
        # Pilot re-pushes: once the sidecars carry the mixer filter, requests reach Mixer's counts.
        wait_for(lambda: tasks.send(mesh, tasks.PAGE)[0][0] == 200 and mixer_counts(mesh).get(
            ("destination", "sleep", "productpage-v1")), timeout=40, what="Mixer counting requests", interval=0.5)
        yield mesh
    finally:
        profile.set_policy(handle, profile.EMPTY_POLICY)
        assert cli.main(["mesh", "profile", "modern", "--kubeconfig", str(handle.kubeconfig)]) == 0
        handle.wait_gone("deployment", profile.MIXER_NAME, namespace=profile.NAMESPACE, timeout=30)


def test_mixer_counts_the_bookstore_requests_with_their_workloads(classic: Mesh) -> None:
    before = settled_counts(classic)
    answers = tasks.send(classic, tasks.PAGE, n=10, concurrency=2)
    assert [a[0] for a in answers] == [200] * 10

    def grown() -> dict[Key, float] | None:
        now = mixer_counts(classic)
        front = ("destination", "sleep", "productpage-v1")
        return now if now.get(front, 0) - before.get(front, 0) >= 10 else None

    wait_for(grown, timeout=20, what="10 reports from productpage's sidecar", interval=0.5)
    after = settled_counts(classic)  # and every other sidecar's batch
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    assert delta[("destination", "sleep", "productpage-v1")] == 10
    assert delta[("source", "sleep", "productpage-v1")] == 10
    assert delta.get(("destination", "productpage-v1", "details-v1"), 0) >= 9
    reviews = sum(v for (reporter, source, destination), v in delta.items()
                  if reporter == "destination" and source == "productpage-v1" and destination.startswith("reviews-"))
    assert reviews >= 9, delta


def test_a_deny_rule_refuses_the_edge_with_403(classic: Mesh) -> None:
    handle, _ = classic
    profile.set_policy(handle, "deny: [{source: {workload: sleep}, destination: {workload: httpbin}}]\n")
    try:
        wait_for(lambda: tasks.send(classic, "http://httpbin:8000/get")[0][0] == 403, timeout=40,
                 what="Mixer's policy to deny sleep -> httpbin", interval=0.5)
        (status, _, body, _), = tasks.send(classic, "http://httpbin:8000/get", extract="body")
        assert (status, body.split(":")[0]) == (403, "PERMISSION_DENIED")
        assert tasks.send(classic, tasks.PAGE)[0][0] == 200  # other edges are not affected
    finally:
        profile.set_policy(handle, profile.EMPTY_POLICY)
