"""Regenerate the Python modules of every ``*.proto`` in this directory with ``grpc_tools.protoc``.

Run ``python -m meshlab.csiproto.generate`` after editing a ``.proto``; it writes ``<name>_pb2.py``,
``<name>_pb2.pyi`` and ``<name>_pb2_grpc.py`` next to it. The protos are compiled with the repository root
as the include path, so the generated modules import each other as ``meshlab.csiproto.<name>_pb2`` (protoc's
default, a bare ``import csi_pb2``, only works when the directory itself is on ``sys.path``). A test
regenerates into a temporary directory and compares the bytes, so a hand edit or a stale module fails CI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = "meshlab/csiproto"            # the include-relative directory of the protos
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(directory: Path = PACKAGE_DIR) -> list[Path]:
    """Every ``.proto`` of the package, sorted so the generation order never changes the output."""
    return sorted(directory.glob("*.proto"))


def generated_files(directory: Path = PACKAGE_DIR) -> list[Path]:
    """The modules :func:`generate` writes for the protos in ``directory``."""
    return [directory / f"{proto.stem}{suffix}" for proto in proto_files(directory) for suffix in GENERATED_SUFFIXES]


def generate(out_root: Path, *, source_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Compile every proto of ``source_dir`` into ``out_root/meshlab/csiproto/``; return the files written.

    ``out_root`` is a stand-in for the repository root: generating into the real root rewrites the
    committed modules, generating into a temporary directory lets a test compare them.
    """
    from grpc_tools import protoc  # a dev dependency: imported only when regenerating

    out_dir = out_root / PACKAGE
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc names imports after the path relative to an include root: mirror meshlab/csiproto/ there.
    staging = out_root / ".protoc-include" / PACKAGE
    staging.mkdir(parents=True, exist_ok=True)
    protos = proto_files(source_dir)
    for proto in protos:
        shutil.copyfile(proto, staging / proto.name)
    well_known = resources.files("grpc_tools") / "_proto"   # google/protobuf/*.proto ship with grpc_tools
    include_root = out_root / ".protoc-include"
    args = [
        "grpc_tools.protoc",
        f"-I{include_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(f"{PACKAGE}/{proto.name}" for proto in protos),
    ]
    try:
        status = protoc.main(args)
    finally:
        shutil.rmtree(include_root, ignore_errors=True)
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status} on {[p.name for p in protos]}")
    return [out_dir / path.name for path in generated_files(source_dir)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=PACKAGE_DIR.parent.parent,
                        help="directory standing for the repository root (default: the real one)")
    args = parser.parse_args(argv)
    for path in generate(args.out_root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
