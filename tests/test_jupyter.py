"""`meshlab lab`: the JupyterLab command line, and a real run that starts and stops everything it owns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import meshlab.lab
from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir
from meshlab.jupyter import jupyter_command, lab_url
from tests.conftest import RunningLab


@pytest.mark.parametrize(("as_root", "expected_extra"), [(False, []), (True, ["--allow-root"])],
                         ids=["user", "root"])
def test_jupyter_command(as_root: bool, expected_extra: list[str]) -> None:
    command = jupyter_command(notebooks=Path("/nb"), port=8899, token="t0k", state=Path("/state"), as_root=as_root)
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert {"--ip=127.0.0.1", "--port=8899", "--no-browser", "--IdentityProvider.token=t0k",
            "--ServerApp.root_dir=/nb", "--LabApp.user_settings_dir=/state/settings",
            "--LabApp.workspaces_dir=/state/workspaces"} <= set(command)
    assert [a for a in command if a == "--allow-root"] == expected_extra


def test_lab_url_carries_the_token() -> None:
    assert lab_url(8899, "t0k") == "http://127.0.0.1:8899/lab?token=t0k"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_meshlab_lab_serves_jupyterlab_and_stops_what_it_started(tmp_path: Path) -> None:
    # (A lab that was already running is left running: the same code path with started_lab False; one real
    # JupyterLab start per test run is enough on a 2-core machine.)
    labdir = LabDir.named("default", tmp_path)
    env = {**os.environ, "MESHLAB_HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    proc = subprocess.Popen([sys.executable, "-m", "meshlab.cli", "lab", "--no-browser", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        while not any("?token=" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "meshlab lab exited early:\n" + "".join(lines)
            lines.append(line)
        url = next(line.strip() for line in lines if "?token=" in line)
        base, token = url.split("/lab?token=")
        assert supervisor.running(labdir) is not None
        assert _status(f"{base}/api/status?token={token}") == 200
        assert _status(f"{base}/api/status") == 403  # the token is what lets a browser in
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
        assert supervisor.running(labdir) is None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # also closes the pipe when the test failed early
        supervisor.down(labdir)


def test_lessons_use_the_cluster_meshlab_lab_was_given(lab: RunningLab, meshlab_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # `meshlab lab --kubeconfig PATH` hands the path to kernels as MESHLAB_KUBECONFIG; their up() connects to it.
    monkeypatch.setenv("MESHLAB_KUBECONFIG", str(lab.kubeconfig))
    handle = meshlab.lab.up()
    try:
        assert handle.kubeconfig == lab.kubeconfig
        assert {ns.metadata.name for ns in handle.core.list_namespace().items} >= {"default", "kube-system"}
        assert not (meshlab_home / "labs" / "default").exists()  # no embedded lab was started
    finally:
        handle.close()
