"""Where a meshlab program running in a pod should listen.

On a real cluster each pod has its own network namespace, so listening on every address (``0.0.0.0``) is
right. In the embedded lab all pods share the node's loopback range, each with its own 127.x.y.z address:
two replicas listening on ``0.0.0.0:8080`` would collide. The lab's kubelet therefore tells meshlab's own
programs their pod address in ``MESHLAB_POD_IP`` (manifests can also pass ``POD_IP`` through the downward
API, which works the same on both).
"""

from __future__ import annotations

import os


def listen_address() -> str:
    return os.environ.get("POD_IP") or os.environ.get("MESHLAB_POD_IP") or "0.0.0.0"
