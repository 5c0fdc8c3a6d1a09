"""The echo app: the answer it builds, and the real process a meshlab/echo image runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from meshlab.mesh.apps.echo import Identity, Seen, answer, log_line

POD_ENV = {"POD_NAME": "echo-7d4b9-x2x", "POD_NAMESPACE": "shop", "POD_IP": "127.30.0.4", "NODE_NAME": "lab-node"}
GET = Seen("GET", "/hello", "a=1", (("Host", "echo.shop"), ("Accept", "*/*")), "127.0.0.1", 0)


@pytest.mark.parametrize(("seen", "env", "message", "expected"), [
    (GET, POD_ENV, "", {
        "pod": {"name": "echo-7d4b9-x2x", "namespace": "shop", "ip": "127.30.0.4", "node": "lab-node"},
        "hostname": "box",
        "request": {"method": "GET", "path": "/hello", "query": "a=1",
                    "headers": {"Host": "echo.shop", "Accept": "*/*"}, "client": "127.0.0.1", "bodyBytes": 0}}),
    (GET, {"POD_NAME": "p", "POD_NAMESPACE": ""}, "v2", {
        "message": "v2", "pod": {"name": "p"}, "hostname": "box", "request": answer(GET, Identity({}, ""))["request"]}),
    (Seen("POST", "/", "", (("X-A", "1"), ("X-A", "2")), "127.0.0.1", 12), {}, "", {
        "pod": {}, "hostname": "box",
        "request": {"method": "POST", "path": "/", "query": "", "headers": {"X-A": "1, 2"}, "client": "127.0.0.1",
                    "bodyBytes": 12}}),
], ids=["pod from the downward API", "message, empty variables left out", "repeated header fields merged"])
def test_answer(seen: Seen, env: dict[str, str], message: str, expected: dict[str, Any]) -> None:
    assert answer(seen, Identity.from_env(env, "box", message)) == expected


@pytest.mark.parametrize(("seen", "status", "line"), [
    (GET, 200, '127.0.0.1 "GET /hello?a=1" 200'),
    (Seen("DELETE", "/x", "", (), "127.9.0.1", 0), 200, '127.9.0.1 "DELETE /x" 200'),
], ids=["with query", "without query"])
def test_log_line(seen: Seen, status: int, line: str) -> None:
    assert log_line(seen, status) == line


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def test_meshlab_app_echo_serves_on_the_pod_ip_and_logs_requests() -> None:
    pod_ip = f"127.{200 + os.getpid() % 54}.0.4"  # far above the networks lab kubelets claim first
    port = _free_port(pod_ip)
    env = {**os.environ, **POD_ENV, "POD_IP": pod_ip, "ECHO_MESSAGE": "hello from v1"}
    proc = subprocess.Popen([sys.executable, "-m", "meshlab.cli", "app", "echo", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"echo listening on http://{pod_ip}:{port} as pod shop/echo-7d4b9-x2x\n"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 10
        while True:
            try:
                with opener.open(f"http://{pod_ip}:{port}/healthz", timeout=2) as resp:
                    assert resp.read() == b"ok\n"
                break
            except OSError:
                assert time.monotonic() < deadline, "echo did not start listening"
                time.sleep(0.05)
        request = urllib.request.Request(f"http://{pod_ip}:{port}/orders/7?x=1", data=b"abc", method="PUT")
        with opener.open(request, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            got = json.loads(resp.read())
        assert got["message"] == "hello from v1"
        assert got["pod"] == {"name": "echo-7d4b9-x2x", "namespace": "shop", "ip": pod_ip, "node": "lab-node"}
        assert (got["request"]["method"], got["request"]["path"], got["request"]["query"],
                got["request"]["bodyBytes"]) == ("PUT", "/orders/7", "x=1", 3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert out.splitlines() == ['127.0.0.1 "PUT /orders/7?x=1" 200']  # /healthz is not logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
