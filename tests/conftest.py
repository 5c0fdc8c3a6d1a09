"""Fixtures shared by every test: an embedded lab started the way a learner starts it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshlab import kube
from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir

_NOTEBOOK_SCRATCH = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    # nbval opens its sanitize file relative to the current directory: anchor it at the repository.
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not os.path.isabs(sanitize):
        config.option.nbval_sanitize_with = str(config.rootpath / sanitize)
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        # Notebook kernels inherit this environment: Jupyter, IPython and matplotlib write to scratch
        # folders instead of $HOME, and a notebook's meshlab.lab.up() starts its own lab there, never the
        # learner's.
        scratch = Path(tempfile.mkdtemp(prefix="meshlab-notebooks-"))
        config.stash[_NOTEBOOK_SCRATCH] = scratch
        for var in ("JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR", "MESHLAB_HOME"):
            os.environ[var] = str(scratch / var.lower())


def pytest_unconfigure(config: pytest.Config) -> None:
    scratch = config.stash.get(_NOTEBOOK_SCRATCH, None)
    if scratch is not None:
        # A kernel stops the lab it started when it exits; this catches one that was killed instead.
        supervisor.down(LabDir.named("default", scratch / "meshlab_home"))
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class RunningLab:
    lab: LabDir
    port: int
    pid: int

    @property
    def kubeconfig(self) -> Path:
        return self.lab.kubeconfig

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.lab.pki / "admin.token").read_text().strip()

    @property
    def ca(self) -> str:
        return str(self.lab.pki / "ca.crt")

    def clients(self) -> kube.Clients:
        return kube.clients(self.kubeconfig)


@pytest.fixture(scope="session")
def meshlab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("meshlab-home")
    old = os.environ.get("MESHLAB_HOME")
    os.environ["MESHLAB_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MESHLAB_HOME", None)
    else:
        os.environ["MESHLAB_HOME"] = old


@pytest.fixture(scope="session")
def lab(meshlab_home: Path) -> Iterator[RunningLab]:
    """One embedded lab for the session (tests isolate themselves with namespaces)."""
    labdir = LabDir.named("test", meshlab_home)
    info = supervisor.up(labdir, port=0)
    yield RunningLab(labdir, int(info["port"]), int(info["pid"]))
    supervisor.down(labdir)


@pytest.fixture()
def clients(lab: RunningLab) -> Iterator[kube.Clients]:
    c = lab.clients()
    yield c
    c.close()


@pytest.fixture()
def namespace(clients: kube.Clients, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    import re

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + os.urandom(2).hex()
    clients.core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        clients.core.delete_namespace(name)
    except Exception:
        pass


def kubectl_path() -> str | None:
    return shutil.which("kubectl")
