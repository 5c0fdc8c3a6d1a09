"""The layers of DESIGN.md, checked on every import statement of the package (lazy imports included).

The mesh and storage run as pods and reach the cluster only through the ``kubernetes`` client, so they never
import the embedded lab; the lab may mount volumes (``mounting``) and speak CSI (``csiproto``) but never
imports the drivers it calls; protocol packages import nothing of meshlab's above them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "meshlab"

# layer -> meshlab packages it must not import
FORBIDDEN = {
    "meshlab.mesh": ("meshlab.cluster", "meshlab.storage"),
    "meshlab.storage": ("meshlab.cluster", "meshlab.mesh"),
    "meshlab.mounting": ("meshlab.cluster", "meshlab.storage", "meshlab.mesh"),
    "meshlab.nfs": ("meshlab.cluster", "meshlab.storage", "meshlab.mesh", "meshlab.mounting"),
    "meshlab.csiproto": ("meshlab.cluster", "meshlab.storage", "meshlab.mesh", "meshlab.mounting"),
    "meshlab.cluster": ("meshlab.storage", "meshlab.mesh"),
}


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: Path) -> list[tuple[int, str]]:
    module = _module_name(path, package)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found += [(node.lineno, name)]
    return found


def _violations(layer: str, package: Path = PACKAGE) -> list[str]:
    root = package.joinpath(*layer.split(".")[1:])
    out = []
    for path in sorted(root.rglob("*.py")) if root.is_dir() else []:
        for line, name in _imports(path, package):
            if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[layer]):
                out.append(f"{path.relative_to(package.parent)}:{line} imports {name}")
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert _violations(layer) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("def f() -> None:\n    from meshlab.cluster import store\n", ["meshlab.cluster"]),
    ("import meshlab.storage.csi\n", ["meshlab.storage.csi"]),
    ("from ...cluster.kubelet import volumes\n", ["meshlab.cluster.kubelet"]),
    ("from meshlab.mesh.xds import node\nimport meshlab.kube\n", []),
], ids=["lazy", "plain", "relative", "allowed"])
def test_the_check_sees_every_form_of_import(tmp_path: Path, source: str, expected: list[str]) -> None:
    probe = tmp_path / "meshlab" / "mesh" / "pilot" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    found = _violations("meshlab.mesh", tmp_path / "meshlab")
    assert [line.rpartition(" imports ")[2] for line in found] == expected
