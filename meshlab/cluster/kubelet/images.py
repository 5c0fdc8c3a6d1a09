"""Which images the process kubelet can run, and what command a container runs.

An image reference is ``[registry-host/]path[:tag][@digest]`` (the Docker reference grammar that
containerd and the kubelet use: the first component is a registry host when it contains ``.`` or ``:`` or
is ``localhost``). The embedded lab has no image store: every ``meshlab/<app>`` image *is* meshlab's own
Python environment, so it is always "already present on machine"; anything else cannot be pulled.

What runs follows Kubernetes' rules for ``command``/``args`` over an image's ENTRYPOINT/CMD
(kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container): ``command``
replaces the ENTRYPOINT, ``args`` the CMD. meshlab images have no ENTRYPOINT (as ``lab-env/Dockerfile``),
so ``args`` alone are the command line. Their CMD is, by decision of this lab:

* ``meshlab/meshlab``  → ``meshlab --help`` (what the real image's CMD is);
* ``meshlab/<app>``    → ``meshlab app <app>`` (the app of that name, e.g. ``meshlab/echo:1``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MESHLAB_NAMESPACE = "meshlab"


@functools.cache
def meshlab_version() -> str:
    try:
        return importlib.metadata.version("meshlab")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class ImageError(Exception):
    """The image cannot run in the embedded lab (the kubelet reports it as ``ErrImagePull``)."""


@dataclass(frozen=True)
class Image:
    reference: str  # as written in the pod spec
    registry: str  # "" when none was given
    repository: str  # "meshlab/echo"
    tag: str  # "latest" when none was given
    app: str  # "echo"

    @property
    def image_id(self) -> str:
        """What ``containerStatuses[].imageID`` shows: the repository at the digest of the environment."""
        digest = hashlib.sha256(f"meshlab {meshlab_version()} {self.repository}".encode()).hexdigest()
        name = f"{self.registry}/{self.repository}" if self.registry else self.repository
        return f"{name}@sha256:{digest}"

    @property
    def default_command(self) -> list[str]:
        if self.app == MESHLAB_NAMESPACE:
            return ["meshlab", "--help"]
        return ["meshlab", "app", self.app]


def not_runnable_message(reference: str) -> str:
    return (f'the embedded meshlab lab only runs meshlab images (meshlab/<app>[:tag], as local processes in '
            f'meshlab\'s Python environment); "{reference}" is not one: use a meshlab/... image here, or run '
            f'this manifest on a real cluster')


def parse(reference: str) -> Image:
    """Parse an image reference; raises :class:`ImageError` unless it names a meshlab image."""
    rest = reference.strip()
    if not rest or any(c.isspace() for c in rest):
        raise ImageError(not_runnable_message(reference))
    rest = rest.split("@", 1)[0]
    parts = rest.split("/")
    registry = ""
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, parts = parts[0], parts[1:]
    last = parts[-1]
    tag = "latest"
    if ":" in last:
        last, tag = last.split(":", 1)
        parts = [*parts[:-1], last]
    if len(parts) < 2 or parts[0] != MESHLAB_NAMESPACE or not all(parts):
        raise ImageError(not_runnable_message(reference))
    return Image(reference=reference, registry=registry, repository="/".join(parts), tag=tag,
                 app="/".join(parts[1:]))


def command_line(container: dict[str, Any], image: Image) -> list[str]:
    """The argv a container runs, before ``$(VAR)`` expansion."""
    command: Sequence[str] = container.get("command") or []
    args: Sequence[str] = container.get("args") or []
    if command:
        return [*command, *args]
    if args:
        return list(args)  # no ENTRYPOINT: the args replace the CMD and are the whole command line
    return image.default_command
