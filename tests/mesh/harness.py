"""Test harness for the sample apps: run ``meshlab app ...`` as real processes, and a tiny forward proxy.

The forward proxy stands in for the lab's kube-proxy (or a sidecar) so the apps can be tested without a lab:
it takes absolute-form requests (``GET http://details:9080/x``, what a client sends to its ``HTTP_PROXY``),
looks the host up in a table the test controls (round-robin over several backends, an optional delay), records
what it forwarded, and answers 502 when a name has no route or the backend refuses.
"""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
              "all_proxy")
_hosts = itertools.count(1)


def pod_address() -> str:
    """A fresh 127.x.y.z address, far above the networks lab kubelets claim first (one per test process)."""
    n = next(_hosts)
    return f"127.{200 + os.getpid() % 54}.{n // 250}.{n % 250 + 2}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.endswith("_URL")}
    return {**env, **extra}


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class App:
    proc: subprocess.Popen[str]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> str:
        """Stop the process (SIGTERM) and return what it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def start_app(*args: str, env: Mapping[str, str]) -> App:
    """``meshlab app ARGS`` on a fresh pod address, once it answers ``health``."""
    host = pod_address()
    port = free_port(host)
    proc = subprocess.Popen([sys.executable, "-m", "meshlab.cli", "app", *args, "--host", host, "--port", str(port)],
                            env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return App(proc, host, port)


def wait_healthy(apps: list[App], health: str = "/health", timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    for app in apps:
        while True:
            try:
                with DIRECT.open(f"{app.url}{health}", timeout=2):
                    break
            except OSError:
                assert app.proc.poll() is None, f"{app.proc.args!r} exited: {app.stop()}"
                assert time.monotonic() < deadline, f"{app.proc.args!r} did not start listening"
                time.sleep(0.05)


@dataclass
class Route:
    backends: list[tuple[str, int]]
    delay: float = 0.0
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def pick(self) -> tuple[str, int]:
        return self.backends[next(self._turn) % len(self.backends)]


@dataclass(frozen=True)
class Forwarded:
    host: str  # the name the client asked for, e.g. "details"
    path: str
    headers: dict[str, str]  # lower-cased names


class ForwardProxy:
    """A threaded HTTP forward proxy routing service names by :attr:`routes` (``"details" -> Route``)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Forwarded] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.forward(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        target = urllib.parse.urlsplit(handler.path)
        name = target.hostname or ""
        path = target.path + (f"?{target.query}" if target.query else "")
        self.seen.append(Forwarded(name, path, {k.lower(): v for k, v in handler.headers.items()}))
        route = self.routes.get(name)
        try:
            if route is None:
                raise ConnectionRefusedError(f"no route to {name}")
            if route.delay:
                time.sleep(route.delay)
            host, port = route.pick()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("proxy-authorization",
                                                                                      "proxy-connection")}
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            status, body, ctype = resp.status, resp.read(), resp.getheader("Content-Type", "text/plain")
            conn.close()
        except OSError as err:
            status, body, ctype = 502, f"proxy: {err}\n".encode(), "text/plain"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting (a timeout lesson): nothing to answer

    def requests_to(self, name: str) -> list[Forwarded]:
        return [f for f in self.seen if f.host == name]
