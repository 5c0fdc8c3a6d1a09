"""Kind-specific behaviour of the apiserver that is not validation: what its registries do on write.

- Services get a ClusterIP from the service range (``10.96.0.0/12``, as kubeadm's default), kept on update.
- CustomResourceDefinitions become served kinds the moment they are stored, and report the
  ``NamesAccepted`` and ``Established`` conditions (so ``kubectl wait --for condition=established`` works);
  deleting one deletes its custom resources, as the apiextensions finalizer does.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from meshlab.cluster.objectmeta import now_rfc3339
from meshlab.cluster.resources import ResourceType, from_crd
from meshlab.cluster.rest import RestStorage, kind_key
from meshlab.errors import Cause, Invalid

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")


class ClusterIPs:
    def __init__(self, rest: RestStorage) -> None:
        self.rest = rest

    def _used(self) -> set[str]:
        used = set()
        for svc, _ in self.rest.store.scan("/services"):
            ip = (svc.get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                used.add(ip)
        return used

    def allocate(self) -> str:
        used = self._used()
        for offset in range(1, SERVICE_CIDR.num_addresses - 1):
            ip = str(SERVICE_CIDR.network_address + offset)
            if ip not in used:
                return ip
        raise Invalid("Service", "", [Cause("spec.clusterIP", "the service range is full")])

    def __call__(self, operation: str, rt: ResourceType, old: dict[str, Any] | None,
                 new: dict[str, Any] | None) -> None:
        if rt.plural != "services" or new is None:
            return
        spec = new.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return
        if old is not None:
            old_spec = old.get("spec") or {}
            if old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
                spec["clusterIPs"] = old_spec.get("clusterIPs") or [old_spec["clusterIP"]]
                return
        ip = spec.get("clusterIP")
        if ip == "None":
            spec["clusterIPs"] = ["None"]
            return
        if ip:
            try:
                if ipaddress.ip_address(ip) not in SERVICE_CIDR:
                    raise ValueError
            except ValueError as err:
                raise Invalid("Service", new["metadata"]["name"], [Cause(
                    "spec.clusterIPs[0]", f"Invalid value: \"{ip}\": provided IP is not in the valid range. "
                    f"The range of valid IPs is {SERVICE_CIDR}")]) from err
            if ip in self._used():
                raise Invalid("Service", new["metadata"]["name"], [Cause(
                    "spec.clusterIPs", f"Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: "
                    "provided IP is already allocated")])
        else:
            ip = self.allocate()
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]


def establish_crd(operation: str, rt: ResourceType, old: dict[str, Any] | None,
                  new: dict[str, Any] | None) -> None:
    """Before a CRD is stored: accept its names and mark it established."""
    if rt.plural != "customresourcedefinitions" or new is None:
        return
    names = (new.get("spec") or {}).get("names") or {}
    accepted = dict(names)
    accepted.setdefault("singular", str(names.get("kind", "")).lower())
    accepted.setdefault("listKind", f"{names.get('kind', '')}List")
    now = now_rfc3339()
    status = new.setdefault("status", {})
    status["acceptedNames"] = accepted
    status["storedVersions"] = sorted({v["name"] for v in (new.get("spec") or {}).get("versions") or []
                                       if v.get("storage")} | set(status.get("storedVersions") or []))
    status["conditions"] = [
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
         "message": "no conflicts found", "lastTransitionTime": now},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted", "lastTransitionTime": now},
    ]


class CrdServing:
    """After a CRD is stored or removed: serve (or stop serving) its kinds."""

    def __init__(self, rest: RestStorage) -> None:
        self.rest = rest

    def __call__(self, operation: str, rt: ResourceType, old: dict[str, Any] | None,
                 new: dict[str, Any] | None) -> None:
        if rt.plural != "customresourcedefinitions":
            return
        if new is not None:
            self.rest.registry.set_crd(new["metadata"]["name"], from_crd(new))
            return
        if old is None:
            return
        name = old["metadata"]["name"]
        kinds = from_crd(old)
        self.rest.registry.remove_crd(name)
        if kinds:
            key = kind_key(kinds[0])
            for obj, _ in list(self.rest.store.scan(key)):
                meta = obj["metadata"]
                self.rest.store.delete((key, meta.get("namespace", ""), meta["name"]), obj)
