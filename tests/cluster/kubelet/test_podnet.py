"""Pod addresses: a network per lab, unique while held, not soon reused, kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.cluster.kubelet.podnet import NetworkClaim, PodAddresses
from meshlab.errors import LabError


def test_each_pod_gets_its_own_stable_address(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.1", "127.10.255.254")
    a, b = ips.allocate("a"), ips.allocate("b")
    assert (a, b) == ("127.10.0.1", "127.10.0.2")
    assert ips.allocate("a") == a


def test_a_released_address_is_not_handed_out_next(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.1", "127.10.255.254")
    first = ips.allocate("a")
    ips.release("a")
    assert ips.allocate("b") != first


def test_the_range_skips_network_and_broadcast_addresses_and_can_run_out(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.254", "127.10.1.1")
    assert [ips.allocate(str(n)) for n in range(2)] == ["127.10.0.254", "127.10.1.1"]
    with pytest.raises(LabError):
        ips.allocate("x")


def test_two_labs_never_share_a_network(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    one, two = PodAddresses(tmp_path / "one.json"), PodAddresses(tmp_path / "two.json")
    first, second = one.claim(locks), two.claim(locks)
    assert first != second
    assert one.allocate("a").startswith(f"127.{first}.") and two.allocate("a").startswith(f"127.{second}.")


def test_a_restarted_lab_gets_its_network_and_addresses_back(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    squatter = NetworkClaim.take(None, locks)  # holds the first network while our lab starts
    ips = PodAddresses(tmp_path / "a.json")
    octet = ips.claim(locks)
    address = ips.allocate("a")
    ips.release_network()
    squatter.release()
    again = PodAddresses(tmp_path / "a.json")
    assert again.claim(locks) == octet
    assert again.get("a") == address
    assert again.allocate("b") == f"127.{octet}.0.2"
    again.retain_only({"b"})
    assert again.get("a") is None


def test_when_the_old_network_is_taken_addresses_are_renumbered(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    ips = PodAddresses(tmp_path / "a.json")
    octet = ips.claim(locks)
    ips.allocate("a")
    ips.release_network()
    thief = NetworkClaim.take(octet, locks)
    again = PodAddresses(tmp_path / "a.json")
    assert again.claim(locks) != octet and again.get("a") is None
    thief.release()


# -- the pod-localhost: a second, private address per pod from the same pool ------------------------------------


def test_a_pod_localhost_is_the_pods_own_and_never_anyone_elses_address(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.1", "127.10.255.254")
    a_ip, a_local = ips.allocate("a"), ips.allocate_localhost("a")
    b_ip, b_local = ips.allocate("b"), ips.allocate_localhost("b")
    assert len({a_ip, a_local, b_ip, b_local}) == 4
    assert (ips.allocate_localhost("a"), ips.localhost("a"), ips.get("a")) == (a_local, a_local, a_ip)


def test_a_pod_localhost_counts_against_the_pool(tmp_path: Path) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.1", "127.10.0.2")
    ips.allocate("a")
    ips.allocate_localhost("a")
    with pytest.raises(LabError):
        ips.allocate("b")


@pytest.mark.parametrize("forget", ["release", "retain_only"])
def test_a_pod_localhost_is_freed_with_the_pod(tmp_path: Path, forget: str) -> None:
    ips = PodAddresses(tmp_path / "a.json", "127.10.0.1", "127.10.0.2")
    ips.allocate("a")
    local = ips.allocate_localhost("a")
    if forget == "release":
        ips.release("a")
    else:
        ips.retain_only(set())
    assert ips.localhost("a") is None and ips.get("a") is None
    assert local in {ips.allocate("b"), ips.allocate_localhost("b")}  # a pool of two: both are free again
    assert PodAddresses(tmp_path / "a.json").localhost("a") is None  # and the file agrees


def test_a_restarted_lab_gives_a_pod_its_localhost_back(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    ips = PodAddresses(tmp_path / "a.json")
    ips.claim(locks)
    address, local = ips.allocate("a"), ips.allocate_localhost("a")
    ips.release_network()
    again = PodAddresses(tmp_path / "a.json")
    again.claim(locks)
    assert (again.allocate("a"), again.allocate_localhost("a")) == (address, local)
    assert local not in {again.allocate("b"), again.allocate_localhost("b")}
