"""The CA core: what a signed workload certificate contains, what is refused, plug-in CAs, rotation, and interop
with the ``openssl`` command line (``verify`` accepts the chain, ``x509 -text`` shows exactly one URI SAN)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshlab.errors import CaError
from meshlab.mesh.citadel.ca import (
    BACKDATE,
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    CertificateAuthority,
    KeyAlgorithm,
    build_csr,
    certificates_pem,
    generate_key,
)
from meshlab.mesh.citadel.identity import WorkloadIdentity
from meshlab.mesh.citadel.verification import verify_chain

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
WEB = WorkloadIdentity("cluster.local", "shop", "web")


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return CertificateAuthority.create_self_signed("cluster.local", now=NOW)


@pytest.fixture(scope="module")
def plugin(root: CertificateAuthority) -> CertificateAuthority:
    """An operator's cacerts: an intermediate for this cluster under the shared root, loaded from its files."""
    files = root.issue_intermediate("cluster-1 intermediate", now=NOW).secret_data()
    return CertificateAuthority.from_pem(ca_cert=files[CA_CERT], ca_key=files[CA_KEY], cert_chain=files[CERT_CHAIN],
                                         root_cert=files[ROOT_CERT])


def test_self_signed_root_defaults_are_istios(root: CertificateAuthority) -> None:
    cert = root.certificate
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=3650)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.roots_pem == certificates_pem([cert]) and "PRIVATE" not in repr(root)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.ECDSA_P256, KeyAlgorithm.RSA_2048], ids=lambda a: a.value)
def test_workload_certificate_has_one_spiffe_san_and_both_usages(algorithm: KeyAlgorithm) -> None:
    authority = CertificateAuthority.create_self_signed("cluster.local", algorithm=algorithm, now=NOW)
    issued = authority.sign_csr(build_csr(generate_key(algorithm)), WEB, dt.timedelta(hours=24), now=NOW)
    leaf = issued.leaf
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and list(san.value) == [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/web")]
    assert leaf.subject == x509.Name([])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert usage.key_encipherment == (algorithm is KeyAlgorithm.RSA_2048)
    assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_before_utc == NOW - BACKDATE and leaf.not_valid_after_utc == NOW + dt.timedelta(hours=24)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey if algorithm is KeyAlgorithm.RSA_2048
                      else ec.EllipticCurvePublicKey)
    assert issued.chain[-1] == authority.root


@pytest.mark.parametrize(("asked", "forged"), [
    pytest.param([], False, id="no SAN asked"),
    pytest.param(["spiffe://cluster.local/ns/shop/sa/web"], False, id="own identity asked"),
    pytest.param(["spiffe://cluster.local/ns/kube-system/sa/admin"], True, id="another account asked"),
    pytest.param(["spiffe://evil.example/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/web"], True,
                 id="two identities asked"),
])
def test_the_certificate_names_the_authenticated_caller_whatever_the_csr_asks(
        root: CertificateAuthority, asked: list[str], forged: bool) -> None:
    issued = root.sign_csr(build_csr(generate_key(), uris=asked), WEB, now=NOW)
    assert issued.forged is forged and list(issued.requested_uris) == asked
    uris = issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [u.value for u in uris] == ["spiffe://cluster.local/ns/shop/sa/web"]


@pytest.mark.parametrize(("ttl", "max_ttl", "expected"), [
    pytest.param(dt.timedelta(seconds=4), dt.timedelta(days=90), dt.timedelta(seconds=4), id="4 s demo"),
    pytest.param(dt.timedelta(0), dt.timedelta(days=90), dt.timedelta(hours=24), id="0 means the default 24h"),
    pytest.param(dt.timedelta(days=400), dt.timedelta(days=90), dt.timedelta(days=90), id="capped at the max TTL"),
    pytest.param(dt.timedelta(days=9000), dt.timedelta(days=9999), dt.timedelta(days=3650),
                 id="capped at the CA's expiry"),
])
def test_ttl_is_capped(root: CertificateAuthority, ttl: dt.timedelta, max_ttl: dt.timedelta,
                       expected: dt.timedelta) -> None:
    leaf = root.sign_csr(build_csr(generate_key()), WEB, ttl, now=NOW, max_ttl=max_ttl).leaf
    assert leaf.not_valid_after_utc - NOW == expected


def _tampered_csr() -> bytes:
    good = x509.load_pem_x509_csr(build_csr(generate_key()))
    from cryptography.hazmat.primitives import serialization

    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # flip a bit of the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(("csr", "message"), [
    pytest.param(lambda: b"not a csr", "not a PEM PKCS#10", id="[Error] garbage"),
    pytest.param(_tampered_csr, "signature does not verify", id="[Error] signature does not verify"),
    pytest.param(lambda: build_csr(ec.generate_private_key(ec.SECP521R1())), "not accepted", id="[Error] P-521"),
    pytest.param(lambda: build_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
                 "at least 2048", id="[Error] RSA 1024"),
])
def test_unusable_csrs_are_refused(root: CertificateAuthority, csr: object, message: str) -> None:
    with pytest.raises(CaError, match=message):
        root.sign_csr(csr(), WEB, now=NOW)  # type: ignore[operator]


def test_an_expired_ca_signs_nothing(root: CertificateAuthority) -> None:
    with pytest.raises(CaError, match="CA certificate expired"):
        root.sign_csr(build_csr(generate_key()), WEB, now=NOW + dt.timedelta(days=3651))


def test_plugin_ca_chain_runs_leaf_intermediate_root(root: CertificateAuthority,
                                                     plugin: CertificateAuthority) -> None:
    issued = plugin.sign_csr(build_csr(generate_key()), WEB, now=NOW)
    assert [c.subject for c in issued.chain[1:]] == [plugin.certificate.subject, root.certificate.subject]
    assert plugin.roots_pem == root.roots_pem and not plugin.self_signed
    assert verify_chain(issued.chain_pem, root.roots_pem, now=NOW).spiffe_id.endswith("/ns/shop/sa/web")


def test_plugin_files_without_the_root_in_the_chain_are_completed(root: CertificateAuthority,
                                                                  plugin: CertificateAuthority) -> None:
    files = plugin.secret_data()
    loaded = CertificateAuthority.from_pem(ca_cert=files[CA_CERT], ca_key=files[CA_KEY], cert_chain=b"",
                                           root_cert=files[ROOT_CERT])
    assert loaded.chain == (root.certificate,)


@pytest.mark.parametrize(("files", "message"), [
    pytest.param(lambda p, o: {**p, CA_KEY: o[CA_KEY]}, "does not belong", id="[Error] key of another CA"),
    pytest.param(lambda p, o: {**p, ROOT_CERT: o[ROOT_CERT], CERT_CHAIN: b""}, "no root", id="[Error] wrong root"),
    pytest.param(lambda p, o: {**p, CERT_CHAIN: o[CA_CERT]}, "is not signed by", id="[Error] broken chain"),
    pytest.param(lambda p, o: {**p, ROOT_CERT: b""}, "is empty", id="[Error] no root file"),
    pytest.param(lambda p, o: {**p, CA_KEY: b"junk"}, "not an unencrypted PEM", id="[Error] unreadable key"),
])
def test_inconsistent_plugin_files_are_refused(plugin: CertificateAuthority, files: object, message: str) -> None:
    other = CertificateAuthority.create_self_signed("cluster.local", now=NOW).issue_intermediate("x", now=NOW)
    data = files(plugin.secret_data(), other.secret_data())  # type: ignore[operator]
    with pytest.raises(CaError, match=message):
        CertificateAuthority.from_pem(ca_cert=data[CA_CERT], ca_key=data[CA_KEY], cert_chain=data[CERT_CHAIN],
                                      root_cert=data[ROOT_CERT])


def test_root_rotation_overlap_keeps_old_certificates_verifying(root: CertificateAuthority) -> None:
    old_cert = root.sign_csr(build_csr(generate_key()), WEB, now=NOW)
    rotated = root.rotate_root("cluster.local", overlap=dt.timedelta(hours=24), now=NOW)
    new_cert = rotated.sign_csr(build_csr(generate_key()), WEB, now=NOW)
    assert rotated.trusted_roots == (root.certificate, rotated.certificate)
    later = NOW + dt.timedelta(hours=1)
    for issued in (old_cert, new_cert):  # during the overlap both verify against the published bundle
        verify_chain(issued.chain_pem, rotated.roots_pem, now=later)
    assert rotated.retire_old_roots(now=later) is rotated
    retired = rotated.retire_old_roots(now=NOW + dt.timedelta(hours=25))
    assert retired.trusted_roots == (rotated.certificate,)
    with pytest.raises(CaError, match="not signed by a trusted root"):
        verify_chain(old_cert.chain_pem, retired.roots_pem, now=later)


def test_a_plugin_ca_is_not_rotated_by_citadel(plugin: CertificateAuthority) -> None:
    with pytest.raises(CaError, match="cacerts"):
        plugin.rotate_root("cluster.local", overlap=dt.timedelta(hours=1))


# -- the openssl command line ---------------------------------------------------------------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=20, check=False)


@needs_openssl
@pytest.mark.parametrize("which", ["self-signed", "plug-in"])
def test_openssl_verifies_the_chain_and_sees_one_uri_san(tmp_path: Path, root: CertificateAuthority,
                                                         plugin: CertificateAuthority, which: str) -> None:
    authority = root if which == "self-signed" else plugin
    issued = authority.sign_csr(build_csr(generate_key()), WEB)  # now: openssl checks against the real clock
    leaf, intermediates = tmp_path / "leaf.pem", tmp_path / "intermediates.pem"
    (tmp_path / "root.pem").write_bytes(authority.roots_pem)
    leaf.write_bytes(certificates_pem(issued.chain[:1]))
    intermediates.write_bytes(certificates_pem(issued.chain[1:-1]))
    args = ["verify", "-CAfile", str(tmp_path / "root.pem")]
    if issued.chain[1:-1]:
        args += ["-untrusted", str(intermediates)]
    result = openssl(*args, "-purpose", "sslclient", str(leaf))
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr
    assert openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-purpose", "sslserver", *args[3:],
                   str(leaf)).returncode == 0
    text = openssl("x509", "-in", str(leaf), "-noout", "-text").stdout
    assert text.count("URI:") == 1 and "URI:spiffe://cluster.local/ns/shop/sa/web" in text
    assert "X509v3 Subject Alternative Name: critical" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text


@needs_openssl
def test_openssl_refuses_a_chain_from_another_root(tmp_path: Path, root: CertificateAuthority) -> None:
    stranger = CertificateAuthority.create_self_signed("cluster.local")
    issued = stranger.sign_csr(build_csr(generate_key()), WEB)
    (tmp_path / "root.pem").write_bytes(root.roots_pem)
    (tmp_path / "leaf.pem").write_bytes(certificates_pem(issued.chain[:1]))
    result = openssl("verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "leaf.pem"))
    assert result.returncode != 0 and "unable to get local issuer certificate" in result.stdout + result.stderr
