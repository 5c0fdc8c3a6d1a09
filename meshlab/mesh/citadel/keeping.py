"""Where Citadel's CA lives between restarts: Kubernetes Secrets in ``istio-system``, as Istio keeps it.

At start Citadel looks for the plug-in Secret ``cacerts`` (an operator's root and intermediate — Istio's
"plug in CA certificates" task) and otherwise for its own ``istio-ca-secret`` (type ``istio.io/ca-root``),
creating that one with a fresh self-signed root the first time. Why a Secret and not a file: every workload
certificate and every proxy's trust bundle depends on the root, so the root must survive the Citadel pod being
rescheduled; a Secret is the cluster's place for exactly that, readable (with RBAC) only by the CA's service
account and cluster admins, and this Secret is the only place the CA key is ever written. A root rotation is
recorded in the same Secret: ``root-cert.pem`` then holds the old and new roots, and the annotation
``meshlab.io/roots-overlap-until`` says when the old ones may be dropped.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any

from meshlab.errors import CaError
from meshlab.mesh.citadel.ca import (
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    ROOT_VALIDITY,
    CertificateAuthority,
    KeyAlgorithm,
)

log = logging.getLogger("meshlab.citadel")

PLUGIN_SECRET = "cacerts"
SELF_SIGNED_SECRET = "istio-ca-secret"
SECRET_TYPE = "istio.io/ca-root"
OVERLAP_ANNOTATION = "meshlab.io/roots-overlap-until"

Obj = dict[str, Any]


def secret_files(secret: Obj) -> dict[str, bytes]:
    """A Secret's files, decoded (``data`` is base64; ``stringData`` plain, as written by hand)."""
    files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items() if v is not None}
    files.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return files


def authority_from_secret(secret: Obj) -> CertificateAuthority:
    """The CA an Istio CA Secret holds (``CaError`` names the missing or inconsistent file)."""
    files = secret_files(secret)
    name = (secret.get("metadata") or {}).get("name", "?")
    missing = [f for f in (CA_CERT, CA_KEY) if not files.get(f)]
    if missing:
        raise CaError(f"secret {name} lacks {', '.join(missing)}")
    authority = CertificateAuthority.from_pem(ca_cert=files[CA_CERT], ca_key=files[CA_KEY],
                                              cert_chain=files.get(CERT_CHAIN, b""),
                                              root_cert=files.get(ROOT_CERT, b""))
    until = ((secret.get("metadata") or {}).get("annotations") or {}).get(OVERLAP_ANNOTATION)
    if until:
        try:
            overlap = dt.datetime.fromisoformat(until)
        except ValueError as err:
            raise CaError(f"secret {name}: annotation {OVERLAP_ANNOTATION} is not an ISO time: {until!r}") from err
        authority = CertificateAuthority(key=authority.key, certificate=authority.certificate, chain=authority.chain,
                                         trusted_roots=authority.trusted_roots, self_signed=authority.self_signed,
                                         overlap_until=overlap, algorithm=authority.algorithm)
    return authority


def self_signed_secret(authority: CertificateAuthority, namespace: str) -> Obj:
    """The ``istio-ca-secret`` object recording ``authority`` (and a rotation's overlap, if one is running)."""
    annotations = {OVERLAP_ANNOTATION: authority.overlap_until.isoformat()} if authority.overlap_until else {}
    return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": SELF_SIGNED_SECRET, "namespace": namespace, "annotations": annotations,
                         "labels": {"app": "istio-citadel", "app.kubernetes.io/part-of": "meshlab"}},
            "data": {k: base64.b64encode(v).decode() for k, v in authority.secret_data().items()}}


# -- I/O: the kubernetes client -------------------------------------------------------------------------------


def read_secret(core: Any, name: str, namespace: str) -> Obj | None:
    from kubernetes.client.rest import ApiException

    try:
        return dict(core.api_client.sanitize_for_serialization(core.read_namespaced_secret(name, namespace)))
    except ApiException as err:
        if err.status == 404:
            return None
        raise CaError(f"reading secret {namespace}/{name} failed: {err.status} {err.reason}") from err


def load_authority(core: Any, namespace: str, *, trust_domain: str, algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA_P256,
                   validity: dt.timedelta | None = None) -> tuple[CertificateAuthority, str]:
    """The plug-in CA, else the stored self-signed one, else a new self-signed one (stored); and its Secret."""
    from kubernetes.client.rest import ApiException

    plugin = read_secret(core, PLUGIN_SECRET, namespace)
    if plugin is not None:
        log.info("using the plug-in CA from secret %s/%s", namespace, PLUGIN_SECRET)
        return authority_from_secret(plugin), PLUGIN_SECRET
    stored = read_secret(core, SELF_SIGNED_SECRET, namespace)
    if stored is not None:
        log.info("using the self-signed CA from secret %s/%s", namespace, SELF_SIGNED_SECRET)
        return authority_from_secret(stored), SELF_SIGNED_SECRET
    authority = CertificateAuthority.create_self_signed(trust_domain, algorithm=algorithm,
                                                        validity=validity or ROOT_VALIDITY)
    try:
        core.create_namespaced_secret(namespace, self_signed_secret(authority, namespace))
        log.info("generated a self-signed root (%s) and stored it in secret %s/%s", algorithm.value, namespace,
                 SELF_SIGNED_SECRET)
    except ApiException as err:
        if err.status != 409:
            raise CaError(f"storing secret {namespace}/{SELF_SIGNED_SECRET} failed: {err.status} {err.reason}") from err
        stored = read_secret(core, SELF_SIGNED_SECRET, namespace)  # another replica won the race: use its root
        if stored is None:
            raise CaError(f"secret {namespace}/{SELF_SIGNED_SECRET} vanished while starting") from err
        return authority_from_secret(stored), SELF_SIGNED_SECRET
    return authority, SELF_SIGNED_SECRET


def read_authority(core: Any, namespace: str, secret: str) -> CertificateAuthority | None:
    """The CA in ``secret`` (None when the Secret is gone)."""
    stored = read_secret(core, secret, namespace)
    return None if stored is None else authority_from_secret(stored)


def store_authority(core: Any, namespace: str, authority: CertificateAuthority) -> None:
    """Replace ``istio-ca-secret`` with ``authority`` (after a rotation, or when its overlap ends)."""
    from kubernetes.client.rest import ApiException

    try:
        core.replace_namespaced_secret(SELF_SIGNED_SECRET, namespace, self_signed_secret(authority, namespace))
    except ApiException as err:
        raise CaError(f"storing secret {namespace}/{SELF_SIGNED_SECRET} failed: {err.status} {err.reason}") from err
