"""Regenerate ``mixer_pb2.py`` / ``mixer_pb2.pyi`` from ``mixer.proto``: the messages only, as the two RPCs
are wired by hand in :mod:`meshlab.mesh.mixer.server` and :mod:`meshlab.mesh.proxy.mixer_client`.

``python -m meshlab.mesh.mixer.codegen`` rewrites the files in place; :func:`generate` writes them elsewhere so a
test can check that the committed modules have not drifted. The work is :mod:`meshlab.mesh.protogen`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

from meshlab.mesh import protogen

PACKAGE = Path(__file__).resolve().parent
PROTO = PACKAGE / "mixer.proto"
OUTPUTS = protogen.outputs(PROTO)
GENERATOR = "meshlab.mesh.mixer.codegen"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on ``mixer.proto`` into ``out_dir``; the files written."""
    return protogen.generate(PROTO, out_dir, generator=GENERATOR)


if __name__ == "__main__":
    sys.exit(protogen.main(PROTO, generator=GENERATOR))
