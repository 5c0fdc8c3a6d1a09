"""Pod addresses: unique while held, not soon reused, kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.cluster.kubelet.podnet import PodAddresses
from meshlab.errors import LabError


def test_each_pod_gets_its_own_stable_address(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json")
    a, b = ips.allocate("a"), ips.allocate("b")
    assert (a, b) == ("127.10.0.1", "127.10.0.2")
    assert ips.allocate("a") == a


def test_a_released_address_is_not_handed_out_next(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json")
    first = ips.allocate("a")
    ips.release("a")
    assert ips.allocate("b") != first


def test_addresses_survive_a_restart(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json")
    a = ips.allocate("a")
    ips.allocate("b")
    again = PodAddresses(tmp_path / "a.json")
    assert again.get("a") == a
    assert again.allocate("c") == "127.10.0.3"
    again.retain_only({"c"})
    assert again.get("a") is None


def test_the_range_skips_network_and_broadcast_addresses_and_can_run_out(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.254", "127.10.1.1")
    assert [ips.allocate(str(n)) for n in range(2)] == ["127.10.0.254", "127.10.1.1"]
    with pytest.raises(LabError):
        ips.allocate("x")
