"""Per-namespace defaults: the ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap.

Every active namespace of a real cluster gets a ServiceAccount named ``default`` (the ``serviceaccount``
controller; pods that name no account run as it) and a ConfigMap ``kube-root-ca.crt`` whose ``ca.crt``
holds the cluster CA (the ``root-ca-cert-publisher`` controller), which the projected service-account
volume mounts next to the token so that a pod can verify the apiserver. Both are recreated when deleted and
the ConfigMap is corrected when edited. Terminating namespaces are left alone.
"""

from __future__ import annotations

import copy
from typing import Any

from meshlab.cluster.controllers import ownership
from meshlab.cluster.controllers.reconciling import Reconciler
from meshlab.cluster.rest import RestStorage

Obj = dict[str, Any]

ROOT_CA = "kube-root-ca.crt"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


def root_ca_configmap(ca_pem: str) -> Obj:
    return {"metadata": {"name": ROOT_CA, "annotations": {"kubernetes.io/description": DESCRIPTION}},
            "data": {"ca.crt": ca_pem}}


def root_ca_outdated(found: Obj, ca_pem: str) -> bool:
    return (found.get("data") or {}) != {"ca.crt": ca_pem} or bool(found.get("binaryData"))


class ServiceAccountController(Reconciler):
    watches = ("/namespaces", "/serviceaccounts", "/configmaps")
    user = "system:serviceaccount:kube-system:service-account-controller"

    def __init__(self, rest: RestStorage, *, ca_pem: bytes) -> None:
        super().__init__(rest)
        self.ca_pem = ca_pem.decode()

    async def sync(self) -> None:
        for ns in self.objects("/namespaces"):
            if not ownership.being_deleted(ns):
                name = ns["metadata"]["name"]
                await self.guard(f"namespace {name} defaults", self.sync_namespace(name))

    async def sync_namespace(self, namespace: str) -> None:
        sa_rt = self.kind("", "v1", "serviceaccounts")
        cm_rt = self.kind("", "v1", "configmaps")
        if self.rest.store.get(self.rest.key(sa_rt, namespace, "default")) is None:
            await self.rest.create(sa_rt, namespace, {"metadata": {"name": "default"}}, self.opts)
        found = self.rest.store.get(self.rest.key(cm_rt, namespace, ROOT_CA))
        if found is None:
            await self.rest.create(cm_rt, namespace, root_ca_configmap(self.ca_pem), self.opts)
        elif root_ca_outdated(found[1], self.ca_pem):
            updated = copy.deepcopy(found[1])
            updated["data"] = {"ca.crt": self.ca_pem}
            updated.pop("binaryData", None)
            await self.rest.update(cm_rt, namespace, ROOT_CA, updated, self.opts)
