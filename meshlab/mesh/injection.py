"""Sidecar injection: what ``istioctl kube-inject`` and istiod's mutating webhook do to a pod template.

Istio's injector (``pkg/kube/inject``, template ``manifests/charts/istio-control/istio-discovery/files/
injection-template.yaml``) adds a container ``istio-proxy`` whose identity comes from the downward API
(``POD_NAME``, ``POD_NAMESPACE``, ``INSTANCE_IP``, ``SERVICE_ACCOUNT``) and from what the injector knows
(``ISTIO_META_WORKLOAD_NAME``, the labels as ``ISTIO_METAJSON_LABELS``), records what it added in the
annotation ``sidecar.istio.io/status``, and skips pods annotated or labelled ``sidecar.istio.io/inject:
"false"``. How traffic is made to pass through the sidecar is the *interception mode* (mesh config
``istio-system/meshlab-mesh``, key ``mode``):

- ``iptables`` (real clusters, Istio's way): an ``istio-init`` init container with NET_ADMIN rewrites the
  pod's nat table — inbound TCP is redirected to the proxy's port 15006, outbound to 15001, and the proxy's
  own traffic (UID 1337) is let through so it does not loop. The app is left untouched.
- ``address`` (the embedded lab, where pods are processes sharing the host's network and iptables is not
  available): the pod has two addresses, its IP *P* and a private pod-localhost *L* (``MESHLAB_POD_LOCALHOST``,
  set by the lab's kubelet). The sidecar owns *P* (inbound listeners on P:<port>, outbound 15001, admin 15000);
  the app is moved to *L*: ``MESHLAB_POD_IP`` and a downward-API ``POD_IP`` become ``$(MESHLAB_POD_LOCALHOST)``
  (an app that listens at ``$POD_IP`` lands on *L* unchanged), and ``HTTP_PROXY`` sends its outbound calls to
  ``$(INSTANCE_IP):15001``. Probes still target P:<port>, so they pass through the sidecar's inbound listener.

When the mesh has a CA (mesh config ``caAddress``), ``istio-proxy`` also gets istio-agent's identity inputs, as
Istio's template does: ``CA_ADDR``, ``TRUST_DOMAIN`` and ``SECRET_TTL``, the projected token ``istio-token``
(audience ``istio-ca``) at ``/var/run/secrets/tokens`` and the trust bundle ConfigMap ``istio-ca-root-cert`` at
``/var/run/secrets/istio``; and, as Istio's ``rewriteAppHTTPProbers``, the app's HTTP probes are rewritten to the
sidecar's status port 15020 (``/app-health/<container>/readyz``), which probes the app directly, so a STRICT
port does not fail the kubelet's plaintext probes.

The functions are pure: they take plain dicts (what the API returns) and return new ones.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch

from meshlab.errors import MeshlabError

Obj = dict[str, Any]
Mode = Literal["address", "iptables"]
MODES: tuple[Mode, ...] = ("address", "iptables")

SIDECAR = "istio-proxy"
INIT = "istio-init"
INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15000
PROXY_UID = 1337
LOCALHOST_VAR = "MESHLAB_POD_LOCALHOST"
MESH_CONFIGMAP = "meshlab-mesh"  # in istio-system, like Istio's ConfigMap "istio"
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job")


#: Where Istio's injector mounts the istio-ca token and the trust bundle in ``istio-proxy``.
TOKEN_DIR = "/var/run/secrets/tokens"
TOKEN_PATH = f"{TOKEN_DIR}/istio-token"
ROOTS_DIR = "/var/run/secrets/istio"
ROOTS_CONFIGMAP = "istio-ca-root-cert"
TOKEN_AUDIENCE = "istio-ca"
#: istio-agent's status port: rewritten HTTP probes reach the app through it (never through the mTLS inbound).
STATUS_PORT = 15020
REWRITE_PROBES = "sidecar.istio.io/rewriteAppHTTPProbers"
_PROBE_KINDS = {"readinessProbe": "readyz", "livenessProbe": "livez", "startupProbe": "startupz"}


@dataclass(frozen=True)
class InjectionConfig:
    mode: Mode = "address"
    image: str = "meshlab/proxyv2:1"
    xds_address: str = "istiod.istio-system.svc:15010"
    ca_address: str = ""  # Citadel (mesh config caAddress); empty: the mesh has no CA, sidecars talk plaintext
    trust_domain: str = "cluster.local"
    cert_ttl: str = ""  # mesh config workloadCertTTL (istio-agent's SECRET_TTL); empty: the CA's default


def config_from_mesh(data: Mapping[str, str] | None) -> InjectionConfig:
    """The injection settings in the ``meshlab-mesh`` ConfigMap's ``data`` (defaults where absent)."""
    data = data or {}
    mode = str(data.get("mode") or "address")
    if mode not in MODES:
        raise MeshlabError(f"mesh config: mode must be one of {', '.join(MODES)}, not {mode!r}")
    default = InjectionConfig()
    return InjectionConfig(mode="iptables" if mode == "iptables" else "address",
                           image=str(data.get("proxyImage") or default.image),
                           xds_address=str(data.get("xdsAddress") or default.xds_address),
                           ca_address=str(data.get("caAddress") or ""),
                           trust_domain=str(data.get("trustDomain") or default.trust_domain),
                           cert_ttl=str(data.get("workloadCertTTL") or ""))


def mesh_configmap(config: InjectionConfig) -> Obj:
    """The ``istio-system/meshlab-mesh`` ConfigMap that records ``config`` (written by ``meshlab mesh install``)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MESH_CONFIGMAP, "namespace": "istio-system",
                         "labels": {"app": "istiod", "app.kubernetes.io/part-of": "meshlab"}},
            "data": {"mode": config.mode, "proxyImage": config.image, "xdsAddress": config.xds_address}}


# -- deciding ---------------------------------------------------------------------------------------------------


def opted_out(metadata: Mapping[str, Any]) -> bool:
    """``sidecar.istio.io/inject: "false"`` as an annotation or a label (Istio accepts both)."""
    for where in ("annotations", "labels"):
        value = str((metadata.get(where) or {}).get(INJECT, "")).lower()
        if value in ("false", "n", "no", "off"):
            return True
    return False


def injected(pod_spec: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    return STATUS in (metadata.get("annotations") or {}) or any(
        c.get("name") == SIDECAR for c in pod_spec.get("containers") or ())


def workload_name(metadata: Mapping[str, Any]) -> str:
    """The workload a pod belongs to, as Istio names it: a ReplicaSet owner without its pod-template-hash
    suffix (the Deployment), another controller owner's name, else the pod's own (generate)name."""
    labels = metadata.get("labels") or {}
    for owner in metadata.get("ownerReferences") or ():
        if owner.get("controller"):
            name = str(owner.get("name") or "")
            suffix = f"-{labels.get('pod-template-hash', '')}"
            if owner.get("kind") == "ReplicaSet" and suffix != "-" and name.endswith(suffix):
                return name[: -len(suffix)]
            return name
    if metadata.get("name"):
        return str(metadata["name"])
    return str(metadata.get("generateName") or "").rstrip("-")


# -- the pieces -------------------------------------------------------------------------------------------------


def _field(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def sidecar_container(metadata: Mapping[str, Any], *, config: InjectionConfig, workload: str) -> Obj:
    """``istio-proxy``: identity from the downward API, config from Pilot, admin (and readiness) on P:15000."""
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    app_address = f"$({LOCALHOST_VAR})" if config.mode == "address" else "127.0.0.1"
    container: Obj = {
        "name": SIDECAR,
        "image": config.image,
        # The admin listener on the pod IP (not Envoy's 127.0.0.1): in the lab every pod shares the host's
        # loopback, and the readiness probe reaches it there.
        "command": ["meshlab", "proxy", "--xds-address", config.xds_address, "--admin-address", "$(INSTANCE_IP)"],
        "env": [
            _field("INSTANCE_IP", "status.podIP"),
            _field("POD_NAME", "metadata.name"),
            _field("POD_NAMESPACE", "metadata.namespace"),
            _field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload},
            {"name": "ISTIO_METAJSON_LABELS", "value": json.dumps(labels, sort_keys=True, separators=(",", ":"))},
            {"name": "APP_ADDRESS", "value": app_address},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT},
                           "periodSeconds": 1, "failureThreshold": 30},
    }
    if config.ca_address:
        # istio-agent's settings and mounts: the CA, the istio-ca token to authenticate with, the trust bundle.
        container["env"] += [{"name": "CA_ADDR", "value": config.ca_address},
                             {"name": "TRUST_DOMAIN", "value": config.trust_domain}]
        if config.cert_ttl:
            container["env"].append({"name": "SECRET_TTL", "value": config.cert_ttl})
        container["volumeMounts"] = [{"name": "istio-token", "mountPath": TOKEN_DIR, "readOnly": True},
                                     {"name": "istiod-ca-cert", "mountPath": ROOTS_DIR, "readOnly": True}]
    if config.mode == "iptables":
        container["securityContext"] = {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True,
                                        "allowPrivilegeEscalation": False}
    return container


def iptables_rules(*, exclude_inbound_ports: Iterable[int] = (ADMIN_PORT,)) -> list[list[str]]:
    """The nat rules ``istio-iptables`` installs (``-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*'``):
    every inbound TCP port except the excluded ones to 15006; every outbound connection to 15001 unless it is
    the proxy's own (UID/GID 1337) or to localhost."""
    def nat(*args: str | int) -> list[str]:
        return ["iptables", "-t", "nat", *(str(a) for a in args)]

    rules = [nat("-N", chain) for chain in ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT")]
    rules += [
        nat("-A", "ISTIO_IN_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", INBOUND_PORT),
        nat("-A", "ISTIO_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", OUTBOUND_PORT),
        nat("-A", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND"),
        *(nat("-A", "ISTIO_INBOUND", "-p", "tcp", "--dport", p, "-j", "RETURN")
          for p in sorted(set(exclude_inbound_ports))),
        nat("-A", "ISTIO_INBOUND", "-p", "tcp", "-j", "ISTIO_IN_REDIRECT"),
        nat("-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"),
        nat("-A", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", PROXY_UID, "-j", "RETURN"),
        nat("-A", "ISTIO_OUTPUT", "-m", "owner", "--gid-owner", PROXY_UID, "-j", "RETURN"),
        nat("-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"),
        nat("-A", "ISTIO_OUTPUT", "-j", "ISTIO_REDIRECT"),
    ]
    return rules


def init_container(*, config: InjectionConfig) -> Obj:
    """``istio-init``: runs the rules once as root with NET_ADMIN/NET_RAW, before any other container."""
    script = "set -e\n" + "\n".join(shlex.join(rule) for rule in iptables_rules()) + "\n"
    return {
        "name": INIT,
        "image": config.image,
        "command": ["sh", "-c", script],
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "privileged": False,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
    }


def _is_pod_ip(var: Mapping[str, Any]) -> bool:
    return ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "status.podIP"


def app_container(container: Mapping[str, Any]) -> Obj:
    """An app container moved to the pod-localhost address (address mode); its probes are left alone."""
    out = copy.deepcopy(dict(container))
    ours = {"MESHLAB_POD_IP", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"}
    env: list[Obj] = []
    has_instance_ip = False
    for var in out.get("env") or ():
        if var.get("name") in ours:
            continue
        if var.get("name") == "INSTANCE_IP":
            has_instance_ip = True
        if var.get("name") == "POD_IP" and _is_pod_ip(var):
            var = {"name": "POD_IP", "value": f"$({LOCALHOST_VAR})"}
        env.append(var)
    proxy = f"http://$(INSTANCE_IP):{OUTBOUND_PORT}"
    bypass = f"$({LOCALHOST_VAR}),$(INSTANCE_IP),127.0.0.1,localhost"
    # INSTANCE_IP first: $(VAR) only expands variables defined earlier in the list.
    out["env"] = ([] if has_instance_ip else [_field("INSTANCE_IP", "status.podIP")]) + env + [
        {"name": "MESHLAB_POD_IP", "value": f"$({LOCALHOST_VAR})"},
        {"name": "HTTP_PROXY", "value": proxy}, {"name": "http_proxy", "value": proxy},
        {"name": "NO_PROXY", "value": bypass}, {"name": "no_proxy", "value": bypass},
    ]
    return out


def identity_volumes() -> list[Obj]:
    """Istio's ``istio-token`` (a projected token for the audience ``istio-ca``, 12 h) and ``istiod-ca-cert``
    (the trust bundle ConfigMap Citadel publishes; optional, so a pod created before it exists still starts
    and the proxy reads it when it appears)."""
    return [{"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": TOKEN_AUDIENCE, "expirationSeconds": 43200, "path": "istio-token"}}]}},
            {"name": "istiod-ca-cert", "configMap": {"name": ROOTS_CONFIGMAP, "optional": True}}]


def rewrite_probes(container: Mapping[str, Any]) -> tuple[Obj, dict[str, Obj]]:
    """Istio's ``rewriteAppHTTPProbers``: each ``httpGet`` probe of an app container now asks the sidecar's
    status port (``/app-health/<container>/readyz``...), which probes the app directly — so a STRICT mTLS
    port does not fail the kubelet's plaintext probes. Returns the container and the original probes, by
    path (the sidecar's ``ISTIO_KUBE_APP_PROBERS``); named ports are resolved to numbers."""
    out = copy.deepcopy(dict(container))
    named = {p.get("name"): p.get("containerPort") for p in out.get("ports") or () if p.get("name")}
    probers: dict[str, Obj] = {}
    for kind, suffix in _PROBE_KINDS.items():
        probe = out.get(kind)
        if not probe or not probe.get("httpGet"):
            continue
        original = dict(probe["httpGet"])
        port = original.get("port")
        if isinstance(port, str) and not port.isdigit():
            port = named.get(port)
        if port is None:
            continue  # a named port the container does not declare: leave the probe as the kubelet will judge it
        original["port"] = int(port)
        path = f"/app-health/{out.get('name')}/{suffix}"
        probers[path] = {"httpGet": original, "timeoutSeconds": int(probe.get("timeoutSeconds") or 1)}
        probe["httpGet"] = {"path": path, "port": STATUS_PORT}
    return out, probers


def status_annotation(*, init_containers: list[str], containers: list[str], volumes: list[str] | None = None) -> str:
    """What Istio records in ``sidecar.istio.io/status`` (Go's JSON: an empty list is ``null``)."""
    return json.dumps({"initContainers": init_containers or None, "containers": containers or None,
                       "volumes": volumes or None, "imagePullSecrets": None, "revision": "default"},
                      separators=(",", ":"))


# -- injecting ----------------------------------------------------------------------------------------------------


def _inject(pod_spec: Mapping[str, Any], metadata: Mapping[str, Any], *, config: InjectionConfig,
            workload: str) -> tuple[Obj, Obj]:
    spec, meta = copy.deepcopy(dict(pod_spec)), copy.deepcopy(dict(metadata))
    if injected(spec, meta) or opted_out(meta) or spec.get("hostNetwork"):
        return spec, meta
    inits: list[str] = []
    if config.mode == "address":
        spec["containers"] = [app_container(c) for c in spec.get("containers") or ()]
    else:
        spec["initContainers"] = [init_container(config=config), *(spec.get("initContainers") or ())]
        inits = [INIT]
    probers: dict[str, Obj] = {}
    rewrite = str((meta.get("annotations") or {}).get(REWRITE_PROBES, "true")).lower() != "false"
    if config.ca_address and rewrite:  # only a mesh with a CA can make a port STRICT
        rewritten = [rewrite_probes(c) for c in spec.get("containers") or ()]
        spec["containers"] = [c for c, _ in rewritten]
        probers = {path: probe for _, found in rewritten for path, probe in found.items()}
    sidecar = sidecar_container(meta, config=config, workload=workload)
    if probers:
        sidecar["env"].append({"name": "ISTIO_KUBE_APP_PROBERS",
                               "value": json.dumps(probers, sort_keys=True, separators=(",", ":"))})
    spec["containers"] = [*(spec.get("containers") or ()), sidecar]
    volumes: list[str] = []
    if config.ca_address:
        added = [v for v in identity_volumes() if v["name"] not in {w.get("name") for w in spec.get("volumes") or ()}]
        spec["volumes"] = [*(spec.get("volumes") or ()), *added]
        volumes = [v["name"] for v in identity_volumes()]
    meta.setdefault("annotations", {})[STATUS] = status_annotation(init_containers=inits, containers=[SIDECAR],
                                                                   volumes=volumes)
    return spec, meta


def inject_pod(pod: Mapping[str, Any], *, config: InjectionConfig) -> Obj:
    """A whole Pod object, injected (unchanged if already injected or opted out)."""
    metadata = pod.get("metadata") or {}
    spec, meta = _inject(pod.get("spec") or {}, metadata, config=config, workload=workload_name(metadata))
    return {**copy.deepcopy(dict(pod)), "metadata": meta, "spec": spec}


def inject_pod_spec(pod_spec: Mapping[str, Any], metadata: Mapping[str, Any], *, config: InjectionConfig) -> Obj:
    """``pod_spec`` with the sidecar (and, in iptables mode, ``istio-init``); ``metadata`` is the pod's (or the
    template's) and decides opt-out, the labels the proxy reports and its workload name."""
    return _inject(pod_spec, metadata, config=config, workload=workload_name(metadata))[0]


def inject_manifest(docs: Iterable[Mapping[str, Any]], *, config: InjectionConfig) -> list[Obj]:
    """Every Pod and every workload's pod template in ``docs`` injected; other objects unchanged."""
    out: list[Obj] = []
    for original in docs:
        if not original:
            continue  # an empty YAML document
        doc: Obj = copy.deepcopy(dict(original or {}))
        kind = doc.get("kind")
        if kind == "Pod":
            doc = inject_pod(doc, config=config)
        elif kind in WORKLOAD_KINDS:
            template = doc.setdefault("spec", {}).setdefault("template", {})
            doc_meta = doc.get("metadata") or {}
            # A workload opted out as a whole stays out (istioctl kube-inject checks the object and the template).
            if not opted_out(doc_meta):
                spec, meta = _inject(template.get("spec") or {}, template.get("metadata") or {}, config=config,
                                     workload=str(doc_meta.get("name") or ""))
                template["spec"], template["metadata"] = spec, meta
        out.append(doc)
    return out


def jsonpatch_for(original: Any, injected_obj: Any) -> list[Obj]:
    """The RFC 6902 operations that turn ``original`` into ``injected_obj`` (what the webhook answers)."""
    ops: list[Obj] = jsonpatch.make_patch(original, injected_obj).patch
    return ops
