"""Regenerate ``ca_pb2.py`` / ``ca_pb2.pyi`` from ``ca.proto``: the messages only, as the one RPC is wired
by hand in :mod:`meshlab.mesh.citadel.server` and :mod:`meshlab.mesh.citadel.client`.

``python -m meshlab.mesh.citadel.codegen`` rewrites the files in place; :func:`generate` writes them elsewhere so a
test can check that the committed modules have not drifted. The work is :mod:`meshlab.mesh.protogen`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from meshlab.mesh import protogen

PACKAGE = Path(__file__).resolve().parent
PROTO = PACKAGE / "ca.proto"
OUTPUTS = protogen.outputs(PROTO)
GENERATOR = "meshlab.mesh.citadel.codegen"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on ``ca.proto`` into ``out_dir``; the files written."""
    return protogen.generate(PROTO, out_dir, generator=GENERATOR)


if __name__ == "__main__":
    sys.exit(protogen.main(PROTO, generator=GENERATOR))
