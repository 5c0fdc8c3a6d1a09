"""Real container launches through ``launch.wrap()``: volumes at their mountPaths, read-only mounts, the
host's file system untouched, and what a non-root lab gets (a user namespace, or the announced fallback)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlab.cluster.kubelet import isolation, launch
from meshlab.cluster.kubelet.isolation import IsolationMode
from meshlab.cluster.kubelet.volumes import SERVICE_ACCOUNT_PATH, Mount

ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[3]
NOBODY = 65534
ROOT_ONLY = [pytest.mark.root,
             pytest.mark.skipif(not ROOT, reason="a mount namespace without a user namespace needs root "
                                                 "(CI runs as root)")]


# Whether the kernel lets this user make a private mount namespace at all — checked without the launcher,
# so that a broken launcher fails these tests instead of skipping them.
KERNEL_CHECK = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid, user = os.geteuid(), os.getegid(), sys.argv[1] == "user"
if libc.unshare(0x00020000 | (0x10000000 if user else 0)) != 0:
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
if user:
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)
if libc.mount(None, b"/", None, 0x4000 | 0x40000, None) or libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None):
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
"""


@functools.cache
def unavailable(mode: IsolationMode) -> str | None:
    kind = "user" if mode is IsolationMode.USER_NAMESPACE else "mount"
    done = subprocess.run([sys.executable, "-c", KERNEL_CHECK, kind], capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else done.stderr.strip()


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, **(env or {})})


@pytest.fixture()
def volume(tmp_path: Path) -> Path:
    source = tmp_path / "vol"
    source.mkdir()
    (source / "x").write_text("hello from the host")
    return source


MODES = [pytest.param(IsolationMode.MOUNT_NAMESPACE, marks=ROOT_ONLY, id="mount-namespace"),
         pytest.param(IsolationMode.USER_NAMESPACE, id="user-namespace")]

# (id, mounts as (source under the volume, target, readOnly), workdir, script, stdout, host check)
LAUNCH_CASES = [
    ("reads /data/x, writes a file the host sees", [("", "/data", False)], None,
     "cat /data/x; echo written > /data/out", "hello from the host", "out"),
    ("a readOnly mount refuses writes", [("", "/data", True)], None,
     "cat /data/x; echo no > /data/out 2>/dev/null || echo refused", "hello from the hostrefused", "no out"),
    ("the service-account path, under a symlinked /var/run", [("", SERVICE_ACCOUNT_PATH, True)], None,
     f"cat {SERVICE_ACCOUNT_PATH}/x", "hello from the host", None),
    ("a file mounted into the existing /etc", [("x", "/etc/meshlab-test.conf", True)], None,
     "cat /etc/meshlab-test.conf; ls /etc/passwd", "hello from the host/etc/passwd", None),
    ("workingDir inside a volume", [("", "/data", False)], "/data", "pwd; cat x", "/datahello from the host", None),
    ("a mount point in another volume is made in it, as runc does",
     [("", "/data", False), ("inner-src", "/data/inner", False)], None, "cat /data/inner/y", "inner", "inner"),
    ("an existing host directory is covered inside only", [("", "{existing}", False)], None,
     "ls {existing}", "x", "existing"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("mounts", "workdir", "script", "stdout", "host"), [c[1:] for c in LAUNCH_CASES],
                         ids=[c[0] for c in LAUNCH_CASES])
def test_container_sees_volumes_at_their_mount_paths(
        mode: IsolationMode, volume: Path, tmp_path: Path, mounts: list[tuple[str, str, bool]],
        workdir: str | None, script: str, stdout: str, host: str | None) -> None:
    if unavailable(mode):
        pytest.skip(f"{mode.value} does not work on this machine: {unavailable(mode)}")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "hostfile").write_text("stays")
    (tmp_path / "inner-src").mkdir()
    (tmp_path / "inner-src" / "y").write_text("inner")
    root_before = sorted(os.listdir("/"))
    run_secrets_before = os.path.lexists("/run/secrets")

    def source(name: str) -> Path:
        return tmp_path / name if name == "inner-src" else volume / name if name else volume

    wanted = [Mount(source(s), t.format(existing=existing), ro) for s, t, ro in mounts]
    argv = launch.wrap(["sh", "-c", script.format(existing=existing)], mounts=wanted, workdir=workdir, mode=mode)
    done = run(argv)
    assert (done.returncode, done.stdout.replace("\n", "")) == (0, stdout), done.stderr
    assert sorted(os.listdir("/")) == root_before, "the host's / must not change"
    assert os.path.lexists("/run/secrets") == run_secrets_before
    assert not os.path.lexists("/etc/meshlab-test.conf")
    if host == "out":
        assert (volume / "out").read_text() == "written\n"
    elif host == "no out":
        assert not (volume / "out").exists()
    elif host == "inner":
        assert (volume / "inner").is_dir()
    elif host == "existing":
        assert sorted(os.listdir(existing)) == ["hostfile"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("mounts", "command", "code", "message"), [
    ([Mount(Path("/nonexistent/meshlab"), "/data", False)], ["true"], 128,
     "failed to create the container: volume source for /data: [Errno 2] No such file or directory"),
    ([], ["no-such-command-meshlab"], 127, "no-such-command-meshlab: executable file not found in $PATH"),
    ([Mount(Path("/etc/hostname"), "/tmp", False)], ["true"], 128, "cannot mount a file on /tmp"),
], ids=["missing volume source", "missing command", "file onto a directory"])
def test_launch_failures_are_reported(mode: IsolationMode, mounts: list[Mount], command: list[str], code: int,
                                      message: str) -> None:
    if unavailable(mode):
        pytest.skip(f"{mode.value} does not work on this machine: {unavailable(mode)}")
    done = run(launch.wrap(command, mounts=mounts, workdir=None, mode=mode))
    assert done.returncode == code
    assert message in done.stderr


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="the root lab's choice; a non-root lab is tested by the next test")
def test_root_detects_mount_namespaces() -> None:
    isolation.reset()
    mode, why = isolation.detect()
    assert mode is IsolationMode.MOUNT_NAMESPACE
    assert why.startswith("mount-namespace: each container gets a private mount namespace")
    assert isolation.detect() == (mode, why)


CHILD = """
import json, os, subprocess, sys
from pathlib import Path
from meshlab.cluster.kubelet import isolation, launch
from meshlab.cluster.kubelet.volumes import Mount
mode, why = isolation.detect()
mounts = [Mount(Path(sys.argv[1]), "/data", False)]
argv = launch.wrap(["sh", "-c", 'cat /data/x; echo; cat "$MESHLAB_MOUNT_DATA/x"'], mounts=mounts, workdir=None,
                   mode=mode)
env = {**os.environ, **(launch.fallback_env(mounts) if mode is isolation.IsolationMode.NONE else {})}
done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
print(json.dumps({"uid": os.getuid(), "mode": mode.value, "why": why, "lines": done.stdout.splitlines(),
                  "root_mode": isolation.probe(isolation.IsolationMode.MOUNT_NAMESPACE)}))
"""


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _python_for_nobody() -> str | None:
    """An interpreter the unprivileged user may run (a venv's python may live under root's 0700 home)."""
    for candidate in dict.fromkeys([sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]):
        try:
            if candidate and subprocess.run([candidate, "-c", "pass"], preexec_fn=_as_nobody, check=False,
                                            capture_output=True).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


@pytest.fixture()
def shared_volume() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is private to the user running the tests.
    source = Path(tempfile.mkdtemp(prefix="meshlab-nobody-"))
    source.chmod(0o777)
    (source / "x").write_text("hello from the host")
    (source / "x").chmod(0o644)
    yield source
    shutil.rmtree(source, ignore_errors=True)


def test_a_non_root_lab_uses_a_user_namespace_or_says_what_it_lost(shared_volume: Path) -> None:
    python, preexec = sys.executable, None
    if ROOT:
        found = _python_for_nobody()
        if found is None:
            pytest.skip("no Python interpreter that user nobody may execute (the venv's lives in a private home)")
        python, preexec = found, _as_nobody
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *site]), "MESHLAB_ISOLATION": "auto"}
    done = subprocess.run([python, "-c", CHILD, str(shared_volume)], env=env, preexec_fn=preexec, cwd="/",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["uid"] == (NOBODY if ROOT else os.getuid())
    assert "Operation not permitted" in seen["root_mode"], "without root, a plain mount namespace must fail"
    if seen["mode"] == "user-namespace":
        assert seen["lines"][0] == "hello from the host", seen
        assert seen["why"].startswith(f"user-namespace: each container gets an unprivileged user namespace "
                                      f"(uid {seen['uid']} mapped to itself)")
    else:
        assert seen["mode"] == "none"
        assert "does not find its volume there" in seen["why"] and "$MESHLAB_MOUNT_DATA" in seen["why"]
        assert seen["lines"][-1] == "hello from the host", "the fallback's environment must lead to the volume"


def test_fallback_without_mount_namespaces(volume: Path) -> None:
    mode, why = isolation._detect("none")
    assert mode is IsolationMode.NONE
    assert why.startswith("none: MESHLAB_ISOLATION=none turns mount namespaces off. A container that opens an "
                          "absolute mountPath (e.g. /data/x) does not find its volume there")
    mounts = [Mount(volume, "/data", False), Mount(volume / "x", "/etc/app.conf", True)]
    assert launch.wrap(["true"], mounts=mounts, workdir=None, mode=mode) == ["true"], "nothing to do: no launcher"
    env = launch.fallback_env(mounts)
    assert env["MESHLAB_MOUNT_DATA"] == str(volume) and env["MESHLAB_MOUNT_ETC_APP_CONF"] == str(volume / "x")
    argv = launch.wrap(["sh", "-c", 'pwd; cat "$MESHLAB_MOUNT_ETC_APP_CONF"'], mounts=mounts, workdir="/data",
                       mode=mode)
    done = run(argv, env)
    assert done.stdout.splitlines() == [str(volume), "hello from the host"], done.stderr
    elsewhere = run(launch.wrap(["pwd"], mounts=mounts, workdir="/no/such/dir", mode=mode))
    assert elsewhere.stdout.strip() == os.getcwd()
    assert "workingDir /no/such/dir does not exist on this host and cannot be created" in elsewhere.stderr


@pytest.mark.parametrize(("choice", "message"), [
    ("bogus", "none: MESHLAB_ISOLATION='bogus' is not one of auto, mount-namespace, user-namespace, none."),
    ("none", "none: MESHLAB_ISOLATION=none turns mount namespaces off."),
], ids=["unknown setting", "switched off"])
def test_isolation_setting(choice: str, message: str) -> None:
    mode, why = isolation._detect(choice)
    assert mode is IsolationMode.NONE and why.startswith(message)


@pytest.mark.parametrize(("path", "expected"), [
    ("/data/sub/file", "/host/vol/sub/file"),
    ("/data", "/host/vol"),
    ("/database", "/database"),
    ("/var/run/secrets/kubernetes.io/serviceaccount/token", "/host/sa/token"),
    ("relative/path", "relative/path"),
], ids=["inside a mount", "the mount itself", "a sibling with the same prefix", "longest prefix wins",
        "relative paths are left alone"])
def test_fallback_path(path: str, expected: str) -> None:
    table = {"/data": "/host/vol", "/var/run/secrets": "/host/secrets", SERVICE_ACCOUNT_PATH: "/host/sa"}
    assert launch.fallback_path(path, table) == expected
    env_table = json.loads(launch.fallback_env([Mount(Path(v), k, False) for k, v in table.items()])["MESHLAB_MOUNTS"])
    assert env_table == table
