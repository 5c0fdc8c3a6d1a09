"""Switching a running mesh between the ``modern`` (in-proxy telemetry) and ``classic`` (Mixer) profiles.

One call does what an operator did by hand in Istio 1.5-1.7, when both designs could run: to go ``classic``,
deploy Mixer (``mixer.yaml``, ``mixer-rbac.yaml`` where RBAC is served, plus an empty policy ConfigMap ``istio-
mixer-policy`` if none exists), wait until it is Ready, *then* set ``telemetryProfile: classic`` in the mesh
config — in that order, so no sidecar is told to call a Mixer that is not there yet (with fail-closed it would
refuse every request). To go ``modern``, set the mesh config first, then remove Mixer. Pilot watches the mesh
config and pushes new listeners (the ``istio.stats`` or ``mixer`` HTTP filter) to every sidecar; no pod
restarts. ``policyCheckFailOpen`` is written only when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kubernetes.client.rest import ApiException

from meshlab.errors import LabError
from meshlab.mesh import manifests
from meshlab.mesh.injection import MESH_CONFIGMAP
from meshlab.mesh.pilot.model import TELEMETRY_PROFILES, telemetry_from_mesh

if TYPE_CHECKING:
    from meshlab.lab import Lab

MIXER = Path(manifests.__file__).parent / "mixer.yaml"
MIXER_RBAC = Path(manifests.__file__).parent / "mixer-rbac.yaml"
MIXER_NAME = "istio-mixer"
POLICY_CONFIGMAP = "istio-mixer-policy"
POLICY_KEY = "policy.yaml"
NAMESPACE = "istio-system"
EMPTY_POLICY = "# deny: [{source: {workload: ...}, destination: {workload: ...}}]\n" \
               "# quotas: [{destination: <service host>, maxAmount: 10, validDuration: 1s}]\n"


def current_profile(lab: Lab) -> str:
    """The mesh config's telemetry profile (``modern`` when unset); LabError when the mesh is not installed."""
    try:
        data = lab.clients.core.read_namespaced_config_map(MESH_CONFIGMAP, NAMESPACE).data
    except ApiException as err:
        raise LabError(f"no mesh config {NAMESPACE}/{MESH_CONFIGMAP} ({err.status} {err.reason}): "
                       "run `meshlab mesh install` first") from err
    return telemetry_from_mesh(data).profile


def _configure(lab: Lab, profile: str, fail_open: bool | None) -> None:
    data = {"telemetryProfile": profile}
    if fail_open is not None:
        data["policyCheckFailOpen"] = "true" if fail_open else "false"
    lab.clients.core.patch_namespaced_config_map(MESH_CONFIGMAP, NAMESPACE, {"data": data})


def set_policy(lab: Lab, policy: str) -> None:
    """Write Mixer's policy document (Mixer re-reads it within a second)."""
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": POLICY_CONFIGMAP, "namespace": NAMESPACE,
                         "labels": {"app": MIXER_NAME, "app.kubernetes.io/part-of": "meshlab"}},
            "data": {POLICY_KEY: policy}}
    lab.apply(body, namespace=NAMESPACE)


def _ensure_policy(lab: Lab) -> None:
    try:
        lab.clients.core.read_namespaced_config_map(POLICY_CONFIGMAP, NAMESPACE)
    except ApiException as err:
        if err.status != 404:
            raise LabError(f"reading configmap {NAMESPACE}/{POLICY_CONFIGMAP} failed: {err.status}") from err
        set_policy(lab, EMPTY_POLICY)


def set_profile(lab: Lab, profile: str, *, timeout: float = 60, fail_open: bool | None = None) -> list[str]:
    """Switch the mesh to ``profile``; returns what was done, one line each."""
    if profile not in TELEMETRY_PROFILES:
        raise LabError(f"telemetry profile must be one of {', '.join(TELEMETRY_PROFILES)}, not {profile!r}")
    current_profile(lab)  # the mesh is installed
    done: list[str] = []
    if profile == "classic":
        _ensure_policy(lab)
        from meshlab.mesh.installing import serves_rbac

        applied = lab.apply(MIXER.read_text()) + (lab.apply(MIXER_RBAC.read_text()) if serves_rbac(lab) else [])
        done += [f"{o['kind'].lower()}/{o['metadata']['name']} applied" for o in applied]
        lab.wait_ready("deployment", MIXER_NAME, namespace=NAMESPACE, timeout=timeout)
        _configure(lab, profile, fail_open)
        done.append(f"configmap/{MESH_CONFIGMAP}: telemetryProfile={profile}")
    else:
        _configure(lab, profile, fail_open)
        done.append(f"configmap/{MESH_CONFIGMAP}: telemetryProfile={profile}")
        from meshlab.mesh.installing import serves_rbac

        deleted = lab.delete(MIXER.read_text()) + (lab.delete(MIXER_RBAC.read_text()) if serves_rbac(lab) else [])
        done += [f"{name} deleted" for name in deleted]
    return done
