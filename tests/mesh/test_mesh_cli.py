"""``meshlab mesh install`` flags: security settings are checked before anything reaches the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab import cli


@pytest.mark.parametrize(("flags", "message"), [
    pytest.param(["--workload-cert-ttl", "3parsecs"], "invalid duration '3parsecs'", id="ttl-not-a-duration"),
    pytest.param(["--workload-cert-ttl", "0s"], "workloadCertTTL must be positive", id="ttl-zero"),
    pytest.param(["--trust-domain", "Bad Domain"], "invalid trust domain 'Bad Domain'", id="trust-domain"),
])
def test_bad_security_flags_are_refused_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          flags: list[str], message: str) -> None:
    # The kubeconfig does not exist: reaching for the cluster would fail with another message.
    assert cli.main(["mesh", "install", "--kubeconfig", str(tmp_path / "missing"), *flags]) == 1
    assert message in capsys.readouterr().err
