"""The store's resourceVersion and watch-history rules, without HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.cluster.store import Store
from meshlab.errors import Gone

KEY = ("/configmaps", "default", "a")


def test_resource_versions_are_monotonic_and_survive_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    first = store.put(KEY, {"metadata": {"name": "a"}}, created=True)
    second = store.put(KEY, {"metadata": {"name": "a"}, "data": {"x": "1"}}, created=False)
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    store.delete(KEY, second)
    last = store.resource_version
    store.close()
    reopened = Store(tmp_path / "db")
    assert reopened.resource_version == last
    assert reopened.get(KEY) is None
    again = reopened.put(KEY, {"metadata": {"name": "a"}}, created=True)
    assert int(again["metadata"]["resourceVersion"]) == last + 1


def test_watch_replays_changes_after_a_version_including_after_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    start = store.resource_version
    store.put(KEY, {"metadata": {"name": "a"}}, created=True)
    store.put(("/configmaps", "other", "b"), {"metadata": {"name": "b"}}, created=True)
    store.put(("/secrets", "default", "s"), {"metadata": {"name": "s"}}, created=True)
    store.close()
    store = Store(tmp_path / "db")
    _, replay = store.watch("/configmaps", "default", start)
    assert [(c.type, c.name) for c in replay] == [("ADDED", "a")]
    _, everywhere = store.watch("/configmaps", "", start)
    assert [c.name for c in everywhere] == ["a", "b"]


def test_watching_from_before_the_kept_history_is_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", history=5)
    for i in range(10):
        store.put(("/configmaps", "default", f"c{i}"), {"metadata": {"name": f"c{i}"}}, created=True)
    with pytest.raises(Gone) as err:
        store.watch("/configmaps", "", 2)
    assert err.value.code == 410
    _, replay = store.watch("/configmaps", "", store.resource_version - 5)
    assert len(replay) == 5


def test_live_changes_reach_matching_watchers_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    watcher, _ = store.watch("/configmaps", "default", store.resource_version)
    store.put(("/configmaps", "elsewhere", "x"), {"metadata": {"name": "x"}}, created=True)
    store.put(("/secrets", "default", "y"), {"metadata": {"name": "y"}}, created=True)
    store.put(KEY, {"metadata": {"name": "a"}}, created=True)
    assert watcher.queue.qsize() == 1
    change = watcher.queue.get_nowait()
    assert change is not None and change.name == "a" and change.type == "ADDED"

