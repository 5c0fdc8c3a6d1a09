"""Controllers of the embedded lab: loops that make the stored state true, as kube-controller-manager's do.

:func:`lab_controllers` builds the lab's set, in the order they should start: the scheduler and the
namespace and garbage collectors first (they unblock everything else), then the workload controllers from
the top down (Deployment → ReplicaSet, DaemonSet), then those that follow pods (Endpoints, EndpointSlices),
then the per-namespace defaults and volume binding. Each runs on its own; the order only decides who acts
first after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlab.cluster.controllers.base import Controller
from meshlab.cluster.controllers.daemonsets import DaemonSetController
from meshlab.cluster.controllers.deployments import DeploymentController
from meshlab.cluster.controllers.endpoints import EndpointController, EndpointSliceController
from meshlab.cluster.controllers.garbagecollector import GarbageCollector
from meshlab.cluster.controllers.namespaces import NamespaceController
from meshlab.cluster.controllers.replicasets import ReplicaSetController
from meshlab.cluster.controllers.scheduling import Scheduler
from meshlab.cluster.controllers.serviceaccounts import ServiceAccountController
from meshlab.cluster.controllers.volumebinding import Provisioner, VolumeBindingController
from meshlab.cluster.rest import RestStorage

__all__ = ["Controller", "Provisioner", "VolumeBindingController", "lab_controllers"]


def lab_controllers(rest: RestStorage, *, ca_pem: bytes, provisioners: Sequence[Provisioner] = ()
                    ) -> list[Controller]:
    """Every controller the lab runs (not yet started), in start order.

    ``ca_pem`` is the lab CA certificate published in each namespace's ``kube-root-ca.crt``;
    ``provisioners`` provision PersistentVolumeClaims in-process (more can be added later with
    :meth:`VolumeBindingController.register`).
    """
    return [
        Scheduler(rest),
        NamespaceController(rest),
        GarbageCollector(rest),
        DeploymentController(rest),
        ReplicaSetController(rest),
        DaemonSetController(rest),
        EndpointController(rest),
        EndpointSliceController(rest),
        ServiceAccountController(rest, ca_pem=ca_pem),
        VolumeBindingController(rest, provisioners=tuple(provisioners)),
    ]
