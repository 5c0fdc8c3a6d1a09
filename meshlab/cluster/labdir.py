"""Where one embedded lab keeps its state: ``$MESHLAB_HOME/labs/<name>/`` (default ``~/.meshlab``).

::

    kubeconfig      points kubectl and the Python client at the lab (token + CA inline)
    state.db        the API objects (SQLite, WAL)
    pki/            the lab CA, the apiserver certificate, the token-signing key, the admin token (0600)
    server.json     pid and port of the running supervisor
    lab.log         the supervisor's log
    kubecache/      kubectl's discovery cache for this lab (KUBECACHEDIR)
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshlab.errors import LabError

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


def meshlab_home() -> Path:
    return Path(os.environ.get("MESHLAB_HOME") or Path.home() / ".meshlab")


@dataclass(frozen=True)
class LabDir:
    path: Path
    name: str

    @classmethod
    def named(cls, name: str = "default", home: Path | None = None) -> LabDir:
        if not _NAME.fullmatch(name):
            raise LabError(f"invalid lab name {name!r}: use lower-case letters, digits and '-'")
        return cls((home or meshlab_home()) / "labs" / name, name)

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    @property
    def database(self) -> Path:
        return self.path / "state.db"

    @property
    def pki(self) -> Path:
        return self.path / "pki"

    @property
    def server_file(self) -> Path:
        return self.path / "server.json"

    @property
    def log_file(self) -> Path:
        return self.path / "lab.log"

    @property
    def kube_cache(self) -> Path:
        return self.path / "kubecache"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    def server_info(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.server_file.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def write_server_info(self, pid: int, port: int, **extra: Any) -> None:
        tmp = self.server_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": port, **extra}))
        tmp.replace(self.server_file)

    def write_kubeconfig(self, port: int, ca_pem: bytes, token: str) -> None:
        context = f"meshlab-{self.name}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority-data": base64.b64encode(ca_pem).decode(),
            }}],
            "users": [{"name": f"{context}-admin", "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-admin",
                                                         "namespace": "default"}}],
            "current-context": context,
            "preferences": {},
        }
        tmp = self.kubeconfig.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        tmp.replace(self.kubeconfig)
