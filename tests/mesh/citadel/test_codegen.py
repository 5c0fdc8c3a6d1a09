"""The committed ``ca_pb2`` modules are exactly what ``python -m meshlab.mesh.citadel.codegen`` produces from
``ca.proto``, and the messages carry Istio's field numbers (a real istio-agent could call Citadel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshlab.mesh.citadel import ca_pb2, codegen


def test_regenerating_the_messages_changes_nothing(tmp_path: Path) -> None:
    for generated in codegen.generate(tmp_path):
        committed = codegen.PACKAGE / generated.name
        assert generated.read_text() == committed.read_text(), f"{committed.name} drifted: run the codegen"


@pytest.mark.parametrize(("message", "field", "number"), [
    pytest.param(ca_pb2.IstioCertificateRequest, "csr", 1, id="request csr"),
    pytest.param(ca_pb2.IstioCertificateRequest, "validity_duration", 3, id="request validity"),
    pytest.param(ca_pb2.IstioCertificateRequest, "metadata", 4, id="request metadata"),
    pytest.param(ca_pb2.IstioCertificateResponse, "cert_chain", 1, id="response chain"),
])
def test_field_numbers_are_istios(message: Any, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number
    assert message.DESCRIPTOR.full_name.startswith("istio.v1.auth.")
