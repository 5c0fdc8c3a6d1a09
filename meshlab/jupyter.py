"""``meshlab lab``: JupyterLab on the lessons, with a lab cluster running behind it.

The command starts the embedded lab (unless ``--kubeconfig`` names a real cluster), then a JupyterLab server
on ``notebooks/`` bound to 127.0.0.1 and protected by a fresh random token (Jupyter Server's
``IdentityProvider.token``: a URL carrying ``?token=`` logs the browser in), and prints that URL. Notebooks'
kernels inherit the environment, so their ``meshlab.lab.up()`` finds the same lab (or, with
``--kubeconfig``, ``MESHLAB_KUBECONFIG`` names the cluster). JupyterLab runs in its own session so that
Ctrl-C reaches only this command, which then stops JupyterLab with SIGTERM (Jupyter Server stops its kernels
on it) and, if it started the lab, the lab too. JupyterLab's settings and workspaces live in the lab's state
directory, so a learner's real JupyterLab profile is left alone.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from types import FrameType

from meshlab.cluster import supervisor
from meshlab.cluster.labdir import LabDir, meshlab_home
from meshlab.errors import LabError

DEFAULT_PORT = 8888
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def jupyter_command(*, notebooks: Path, port: int, token: str, state: Path, as_root: bool) -> list[str]:
    """The JupyterLab command line ``meshlab lab`` runs."""
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0",  # the port printed is the port served, or a clear failure
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.news_url=None",  # no feed to fetch: the lab works offline
    ]
    if as_root:
        command.append("--allow-root")  # Jupyter refuses root otherwise; containers and CI often are root
    return command


def lab_url(port: int, token: str) -> str:
    return f"http://127.0.0.1:{port}/lab?token={token}"


def find_notebooks() -> Path:
    """``notebooks/`` of the source tree meshlab runs from, else of the current directory."""
    for candidate in (Path(__file__).resolve().parent.parent / "notebooks", Path.cwd() / "notebooks"):
        if candidate.is_dir():
            return candidate
    raise LabError("no notebooks/ folder found: run `meshlab lab` from a meshlab checkout")


def _serving(port: int, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(*, kubeconfig: Path | None = None, port: int | None = None, open_browser: bool = True,
        name: str = "default") -> int:
    """Start the lab (unless ``kubeconfig``) and JupyterLab; return when JupyterLab exits or on Ctrl-C."""
    notebooks = find_notebooks()
    env = dict(os.environ)
    if kubeconfig is not None:
        kubeconfig = kubeconfig.expanduser().resolve()
        if not kubeconfig.is_file():
            raise LabError(f"no kubeconfig at {kubeconfig}")
        env["MESHLAB_KUBECONFIG"] = str(kubeconfig)
    labdir = LabDir.named(name) if kubeconfig is None else None
    started_lab = labdir is not None and supervisor.running(labdir) is None
    proc: subprocess.Popen[bytes] | None = None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C does
    try:
        if labdir is not None:
            info = supervisor.up(labdir)
            print(f"lab {name!r} {'started' if started_lab else 'already running'} on "
                  f"https://127.0.0.1:{info['port']} (kubeconfig {labdir.kubeconfig})")
            state = labdir.path / "jupyter"
        else:
            print(f"using the cluster of {kubeconfig}")
            state = meshlab_home() / "jupyter"
        state.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        port = supervisor.free_port(port if port is not None else DEFAULT_PORT)
        log_path = state / "jupyterlab.log"
        command = jupyter_command(notebooks=notebooks, port=port, token=token, state=state,
                                  as_root=hasattr(os, "geteuid") and os.geteuid() == 0)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _serving(port, token):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise LabError(f"JupyterLab did not start (see {log_path}):\n" + "\n".join(tail))
            time.sleep(0.1)
        url = lab_url(port, token)
        stops = "JupyterLab and the lab" if started_lab else "JupyterLab"
        print(f"JupyterLab is serving {notebooks}:\n\n    {url}\n\nlog: {log_path}\nCtrl-C stops {stops}.",
              flush=True)
        if open_browser:
            webbrowser.open(url)
        return proc.wait()
    except KeyboardInterrupt:
        print("\nstopping " + ("JupyterLab and the lab" if started_lab else "JupyterLab"), flush=True)
        return 0
    finally:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave things running
        if proc is not None:
            _stop(proc)
        if started_lab and labdir is not None:
            supervisor.down(labdir)
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, previous)
