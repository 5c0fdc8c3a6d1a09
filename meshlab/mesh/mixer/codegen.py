"""Regenerate ``mixer_pb2.py`` / ``mixer_pb2.pyi`` from ``mixer.proto`` with grpcio-tools' bundled ``protoc``.

Only the messages are generated: the two RPCs are wired by hand with gRPC's generic handlers
(:mod:`meshlab.mesh.mixer.server`, :mod:`meshlab.mesh.proxy.mixer_client`), which keeps untyped generated stubs out
of the package. ``python -m meshlab.mesh.mixer.codegen`` rewrites the files in place;
:func:`generate` writes them elsewhere so a test can check that the committed modules have not drifted.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parents[2]  # the repository (or site-packages) directory holding ``meshlab/``
PROTO = PACKAGE / "mixer.proto"
OUTPUTS = ("mixer_pb2.py", "mixer_pb2.pyi")
MARKER = "# ruff: noqa\n# Generated from mixer.proto by meshlab.mesh.mixer.codegen: edit the .proto, then regenerate.\n"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on ``mixer.proto`` into ``out_dir`` (laid out as ``meshlab/mesh/mixer/``); the files written."""
    import grpc_tools
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/duration.proto
    out_dir.mkdir(parents=True, exist_ok=True)
    code = protoc.main(["protoc", f"-I{ROOT}", f"-I{includes}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                        str(PROTO.relative_to(ROOT))])
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    generated = out_dir / PROTO.parent.relative_to(ROOT)
    paths = [generated / name for name in OUTPUTS]
    for path in paths:  # protoc's Python is not in this project's style: keep the linter off it
        path.write_text(MARKER + path.read_text())
    return paths


def main() -> int:
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, PACKAGE / path.name)
            print(f"wrote {PACKAGE / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
