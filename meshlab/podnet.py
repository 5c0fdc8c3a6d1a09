"""Where a meshlab program running in a pod should listen, and how it reaches its own pod's other containers.

On a real cluster each pod has its own network namespace, so listening on every address (``0.0.0.0``) is
right, and ``127.0.0.1`` is the pod's own loopback, shared by its containers and nobody else. In the
embedded lab all pods share the node's loopback range, each with its own 127.x.y.z address: two replicas
listening on ``0.0.0.0:8080`` would collide, and so would two pods' sidecars on ``127.0.0.1``. The lab's
kubelet therefore tells meshlab's own programs their pod address in ``MESHLAB_POD_IP`` (manifests can also
pass ``POD_IP`` through the downward API, which works the same on both) and a second, private address
standing in for the pod's loopback in ``MESHLAB_POD_LOCALHOST``.
"""

from __future__ import annotations

import os


def listen_address() -> str:
    return os.environ.get("POD_IP") or os.environ.get("MESHLAB_POD_IP") or "0.0.0.0"


def pod_localhost() -> str:
    """The pod's private loopback address: where containers of one pod talk to each other (a sidecar and
    its app) without the rest of the network seeing it.

    In the lab that is ``MESHLAB_POD_LOCALHOST``, an address the kubelet gives this pod alone and does not
    report in ``status.podIP``; on a real cluster, where the variable is not set, it is ``127.0.0.1``.
    """
    return os.environ.get("MESHLAB_POD_LOCALHOST") or "127.0.0.1"
