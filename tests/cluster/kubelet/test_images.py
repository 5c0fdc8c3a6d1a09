"""Which images the lab runs, and what a container runs when it names no command."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.cluster.kubelet import images


@pytest.mark.parametrize(("reference", "repository", "tag", "app"), [
    ("meshlab/echo", "meshlab/echo", "latest", "echo"),
    ("meshlab/echo:1", "meshlab/echo", "1", "echo"),
    ("ghcr.io/meshlab/meshlab:0.1", "meshlab/meshlab", "0.1", "meshlab"),
    ("localhost:5000/meshlab/pilot:dev", "meshlab/pilot", "dev", "pilot"),
    ("meshlab/echo@sha256:abc", "meshlab/echo", "latest", "echo"),
])
def test_meshlab_images(reference: str, repository: str, tag: str, app: str) -> None:
    image = images.parse(reference)
    assert (image.repository, image.tag, image.app) == (repository, tag, app)
    assert "@sha256:" in image.image_id


@pytest.mark.parametrize("reference", ["nginx", "nginx:1.27", "docker.io/library/nginx", "ghcr.io/other/meshlab",
                                       "meshlabs/echo", "meshlab", ""])
def test_other_images_cannot_run(reference: str) -> None:
    with pytest.raises(images.ImageError) as caught:
        images.parse(reference)
    assert "only runs meshlab images (meshlab/" in str(caught.value)


@pytest.mark.parametrize(("container", "image", "argv"), [
    ({}, "meshlab/echo:1", ["meshlab", "app", "echo"]),
    ({}, "meshlab/meshlab", ["meshlab", "--help"]),
    ({"command": ["python", "-c", "pass"]}, "meshlab/echo", ["python", "-c", "pass"]),
    ({"command": ["python"], "args": ["-V"]}, "meshlab/echo", ["python", "-V"]),
    ({"args": ["meshlab", "app", "echo", "--port", "9000"]}, "meshlab/meshlab",
     ["meshlab", "app", "echo", "--port", "9000"]),
], ids=["app-default", "meshlab-default", "command", "command-args", "args-only"])
def test_command_line(container: dict[str, Any], image: str, argv: list[str]) -> None:
    assert images.command_line(container, images.parse(image)) == argv
