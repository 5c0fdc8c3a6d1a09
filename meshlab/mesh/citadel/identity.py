"""Workload identity: one service account, written the way each mesh writes it.

Istio names a workload by its Kubernetes service account in a SPIFFE ID (https://github.com/spiffe/spiffe,
``standards/SPIFFE-ID.md``): ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``, carried as the
certificate's only URI SAN; AuthorizationPolicy ``principals`` drop the scheme (``cluster.local/ns/x/sa/y``).
Linkerd puts a DNS-like name in a DNS SAN (``<sa>.<ns>.serviceaccount.identity.linkerd.cluster.local``) and
Consul names a *service* in a datacenter (``spiffe://<cluster-id>.consul/ns/<ns>/dc/<dc>/svc/<svc>``, agent
``connect.SpiffeIDService``). The API server authenticates a pod's token as the user
``system:serviceaccount:<ns>:<sa>``, which is where Citadel learns whom it is talking to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshlab.errors import CaError

DEFAULT_TRUST_DOMAIN = "cluster.local"
# A trust domain is a DNS-like name (SPIFFE-ID.md §2.1: lowercase letters, digits, '.', '-', '_').
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
# Kubernetes names: namespaces are DNS labels, service accounts DNS subdomains.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SERVICE_ACCOUNT_USER = "system:serviceaccount:"


@dataclass(frozen=True, order=True)
class WorkloadIdentity:
    """A service account in a namespace, within a trust domain."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        if not _NAMESPACE.match(self.namespace) or len(self.namespace) > 63:
            raise CaError(f"invalid namespace {self.namespace!r} in a workload identity")
        if not _SERVICE_ACCOUNT.match(self.service_account) or len(self.service_account) > 253:
            raise CaError(f"invalid service account {self.service_account!r} in a workload identity")

    @property
    def spiffe_id(self) -> str:
        return spiffe_id(self.trust_domain, self.namespace, self.service_account)

    @property
    def principal(self) -> str:
        return istio_principal(self.trust_domain, self.namespace, self.service_account)

    def __str__(self) -> str:
        return self.spiffe_id


def check_trust_domain(trust_domain: str) -> str:
    if not trust_domain or len(trust_domain) > 255 or not _TRUST_DOMAIN.match(trust_domain):
        raise CaError(f"invalid trust domain {trust_domain!r}: lowercase letters, digits, '.', '-' and '_' only")
    return trust_domain


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's SPIFFE ID for a service account: ``spiffe://cluster.local/ns/default/sa/bookinfo-reviews``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def parse_spiffe_id(uri: str) -> tuple[str, str, str]:
    """``(trust_domain, namespace, service_account)`` of an Istio-form SPIFFE ID; ``CaError`` says what is wrong."""
    scheme, sep, rest = uri.partition("://")
    if scheme != "spiffe" or not sep:
        raise CaError(f"not a SPIFFE ID (expected spiffe://...): {uri!r}")
    trust_domain, _, path = rest.partition("/")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa" or not parts[1] or not parts[3]:
        raise CaError(f"not an Istio workload SPIFFE ID (expected spiffe://<td>/ns/<ns>/sa/<sa>): {uri!r}")
    identity = WorkloadIdentity(trust_domain, parts[1], parts[3])  # validates each part
    return identity.trust_domain, identity.namespace, identity.service_account


def istio_principal(trust_domain: str, namespace: str, service_account: str) -> str:
    """The principal AuthorizationPolicy ``source.principals`` match: the SPIFFE ID without ``spiffe://``."""
    return f"{trust_domain}/ns/{namespace}/sa/{service_account}"


def linkerd_identity(namespace: str, service_account: str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """Linkerd's name for the same workload (a DNS SAN in its proxy certificate)."""
    return f"{service_account}.{namespace}.serviceaccount.identity.linkerd.{trust_domain}"


def consul_spiffe_id(cluster_id: str, namespace: str, datacenter: str, service: str) -> str:
    """Consul's service identity: ``spiffe://<cluster-id>.consul/ns/<ns>/dc/<dc>/svc/<service>`` (Consul names
    the service, not an account; its namespace is ``default`` outside Consul Enterprise)."""
    return f"spiffe://{cluster_id}.consul/ns/{namespace}/dc/{datacenter}/svc/{service}"


def identity_from_username(username: str, trust_domain: str) -> WorkloadIdentity:
    """The identity of an authenticated Kubernetes user ``system:serviceaccount:<ns>:<sa>``; anything else
    (a person, a node) is not a workload and gets no workload certificate."""
    if not username.startswith(SERVICE_ACCOUNT_USER):
        raise CaError(f"{username!r} is not a service account: only workloads get certificates")
    namespace, sep, service_account = username[len(SERVICE_ACCOUNT_USER):].partition(":")
    if not sep:
        raise CaError(f"malformed service account user name {username!r}")
    return WorkloadIdentity(trust_domain, namespace, service_account)
