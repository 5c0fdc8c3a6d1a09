"""The mesh config's security fields, and how the CA and the trust bundle are kept in Secrets and ConfigMaps."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from meshlab.errors import CaError
from meshlab.mesh.citadel import keeping
from meshlab.mesh.citadel.ca import CA_KEY, ROOT_CERT, CertificateAuthority, load_certificates
from meshlab.mesh.citadel.publishing import KEY, root_configmap, up_to_date
from meshlab.mesh.citadel.settings import (
    SecuritySettings,
    format_duration,
    mesh_data,
    parse_duration,
    settings_from_mesh,
)


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("24h", 86400, id="hours"), pytest.param("1h30m", 5400, id="hours and minutes"),
    pytest.param("60s", 60, id="seconds"), pytest.param("1.5s", 1.5, id="fraction"),
    pytest.param("500ms", 0.5, id="milliseconds"), pytest.param("90", 90, id="bare number"),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1d", "h", "24 h", "-5s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(CaError, match="invalid duration"):
        parse_duration(text)


def test_settings_default_to_istios_and_round_trip() -> None:
    assert settings_from_mesh(None) == SecuritySettings("cluster.local", dt.timedelta(hours=24),
                                                        "istio-citadel.istio-system.svc:15012")
    demo = SecuritySettings("example.org", dt.timedelta(seconds=60), "citadel.sec.svc:8060")
    assert mesh_data(demo) == {"trustDomain": "example.org", "workloadCertTTL": "1m",
                               "caAddress": "citadel.sec.svc:8060"}
    assert settings_from_mesh({"mode": "address", **mesh_data(demo)}) == demo
    assert format_duration(dt.timedelta(hours=1, minutes=30, seconds=5)) == "1h30m5s"


@pytest.mark.parametrize(("data", "message"), [
    pytest.param({"trustDomain": "Bad Domain"}, "invalid trust domain", id="[Error] trust domain"),
    pytest.param({"workloadCertTTL": "0s"}, "must be positive", id="[Error] zero TTL"),
    pytest.param({"caAddress": "citadel"}, "host:port", id="[Error] address without port"),
])
def test_bad_settings_are_refused(data: dict[str, str], message: str) -> None:
    with pytest.raises(CaError, match=message):
        settings_from_mesh(data)


def test_the_self_signed_ca_survives_a_secret_round_trip_with_its_rotation() -> None:
    now = dt.datetime.now(dt.UTC)
    rotated = CertificateAuthority.create_self_signed("cluster.local").rotate_root(
        "cluster.local", overlap=dt.timedelta(hours=2), now=now)
    secret = keeping.self_signed_secret(rotated, "istio-system")
    assert secret["type"] == "istio.io/ca-root" and secret["metadata"]["name"] == "istio-ca-secret"
    loaded = keeping.authority_from_secret(secret)
    assert loaded.trusted_roots == rotated.trusted_roots and loaded.certificate == rotated.certificate
    assert loaded.overlap_until == rotated.overlap_until and loaded.self_signed
    assert len(load_certificates(base64.b64decode(secret["data"][ROOT_CERT]))) == 2


def test_a_plugin_secret_may_be_written_by_hand() -> None:
    files = CertificateAuthority.create_self_signed("cluster.local").issue_intermediate("c1").secret_data()
    secret = {"metadata": {"name": "cacerts"}, "stringData": {k: v.decode() for k, v in files.items()}}
    assert not keeping.authority_from_secret(secret).self_signed
    del secret["stringData"][CA_KEY]
    with pytest.raises(CaError, match=r"secret cacerts lacks ca-key\.pem"):
        keeping.authority_from_secret(secret)


def test_the_root_configmap_holds_the_bundle() -> None:
    bundle = CertificateAuthority.create_self_signed("cluster.local").roots_pem
    configmap = root_configmap("shop", bundle)
    assert configmap["metadata"] == {"name": "istio-ca-root-cert", "namespace": "shop",
                                     "labels": {"istio.io/config": "true", "app.kubernetes.io/part-of": "meshlab"}}
    assert configmap["data"][KEY].startswith("-----BEGIN CERTIFICATE-----")
    assert up_to_date(configmap, bundle) and not up_to_date(None, bundle)
    assert not up_to_date({"data": {KEY: "old"}}, bundle)
