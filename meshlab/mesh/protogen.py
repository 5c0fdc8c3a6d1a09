"""Regenerating the mesh's own message modules (``<name>_pb2.py`` / ``.pyi``) with grpcio-tools' ``protoc``.

Citadel's ``ca.proto`` and Mixer's ``mixer.proto`` are compiled for their messages only: their RPCs are wired
by hand with gRPC's generic handlers, which keeps untyped generated stubs out of the package. Each package's
``codegen`` module names its proto and calls :func:`generate` (a test compares a fresh generation with the
committed files, so a hand edit or a stale module fails) or :func:`main` (rewrites them in place).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (or site-packages) directory holding ``meshlab/``


def outputs(proto: Path) -> tuple[str, str]:
    return f"{proto.stem}_pb2.py", f"{proto.stem}_pb2.pyi"


def generate(proto: Path, out_dir: Path, *, generator: str) -> list[Path]:
    """Run protoc on ``proto`` into ``out_dir`` (laid out as the package is under the root); the files
    written, each opened with a marker naming ``generator`` (the module to run after editing the proto)."""
    import grpc_tools  # a dev dependency: imported only when regenerating
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    out_dir.mkdir(parents=True, exist_ok=True)
    code = protoc.main(["protoc", f"-I{ROOT}", f"-I{includes}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                        str(proto.relative_to(ROOT))])
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    marker = (f"# ruff: noqa\n# Generated from {proto.name} by {generator}: edit the .proto, then regenerate.\n")
    paths = [out_dir / proto.parent.relative_to(ROOT) / name for name in outputs(proto)]
    for path in paths:  # protoc's Python is not in this project's style: keep the linter off it
        path.write_text(marker + path.read_text())
    return paths


def main(proto: Path, *, generator: str) -> int:
    """Rewrite the committed modules of ``proto`` in place."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(proto, Path(tmp), generator=generator):
            shutil.copyfile(path, proto.parent / path.name)
            print(f"wrote {proto.parent / path.name}")
    return 0
