"""The embedded lab's kubelet: one node (``lab-node``) whose containers are local processes.

See :mod:`meshlab.cluster.kubelet.kubelet` for the node agent, :mod:`~.lifecycle` and :mod:`~.podstatus`
for the pure decisions, and :mod:`~.processes` / :mod:`~.reaping` for how processes are run and never
orphaned.
"""

from __future__ import annotations

from meshlab.cluster.kubelet.kubelet import Kubelet, isolation_report
from meshlab.cluster.kubelet.lifecycle import BackOffPolicy

__all__ = ["BackOffPolicy", "Kubelet", "isolation_report"]
