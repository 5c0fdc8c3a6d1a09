"""The mesh's security settings, kept in the mesh config ConfigMap ``istio-system/meshlab-mesh``.

Three fields, named after Istio's: ``trustDomain`` (MeshConfig ``trustDomain``, default ``cluster.local``),
``workloadCertTTL`` (the lifetime proxies ask for, istio-agent's ``SECRET_TTL``, default ``24h``; a lesson
lowers it to ``60s`` to watch rotation) and ``caAddress`` (MeshConfig ``caAddress``, where proxies send
CSRs; default ``istio-citadel.istio-system.svc:15012``). Durations use Go's notation (``24h``, ``1h30m``,
``60s``, ``500ms``), as Istio's settings do. ``meshlab mesh install`` writes them; Citadel and the proxies
read them with :func:`settings_from_mesh`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from meshlab.errors import CaError
from meshlab.mesh.citadel.identity import DEFAULT_TRUST_DOMAIN, check_trust_domain

DEFAULT_CA_ADDRESS = "istio-citadel.istio-system.svc:15012"
DEFAULT_WORKLOAD_CERT_TTL = dt.timedelta(hours=24)
TRUST_DOMAIN, WORKLOAD_CERT_TTL, CA_ADDRESS = "trustDomain", "workloadCertTTL", "caAddress"

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> dt.timedelta:
    """A Go duration (``24h``, ``1h30m``, ``60s``, ``1.5s``, ``500ms``); a bare number means seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return dt.timedelta(seconds=float(text))
    parts = _PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise CaError(f"invalid duration {text!r}: use Go's notation, e.g. 24h, 90m, 60s")
    return dt.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def format_duration(value: dt.timedelta) -> str:
    """The shortest Go notation for whole seconds (``24h``, ``1h30m``, ``60s`` stays ``1m``)."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


@dataclass(frozen=True)
class SecuritySettings:
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    workload_cert_ttl: dt.timedelta = DEFAULT_WORKLOAD_CERT_TTL
    ca_address: str = DEFAULT_CA_ADDRESS

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        if self.workload_cert_ttl <= dt.timedelta(0):
            raise CaError(f"{WORKLOAD_CERT_TTL} must be positive")
        host, _, port = self.ca_address.rpartition(":")
        if not host or not port.isdigit():
            raise CaError(f"{CA_ADDRESS} must be host:port, not {self.ca_address!r}")


def settings_from_mesh(data: Mapping[str, str] | None) -> SecuritySettings:
    """The security settings in the mesh ConfigMap's ``data`` (defaults where absent)."""
    data = data or {}
    default = SecuritySettings()
    ttl = data.get(WORKLOAD_CERT_TTL)
    return SecuritySettings(trust_domain=str(data.get(TRUST_DOMAIN) or default.trust_domain),
                            workload_cert_ttl=parse_duration(ttl) if ttl else default.workload_cert_ttl,
                            ca_address=str(data.get(CA_ADDRESS) or default.ca_address))


def mesh_data(settings: SecuritySettings) -> dict[str, str]:
    """The ConfigMap ``data`` entries recording ``settings``."""
    return {TRUST_DOMAIN: settings.trust_domain, WORKLOAD_CERT_TTL: format_duration(settings.workload_cert_ttl),
            CA_ADDRESS: settings.ca_address}
