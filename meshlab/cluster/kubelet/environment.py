"""A container's environment, built the way the kubelet's ``makeEnvironmentVariables`` builds it.

Order and precedence (``pkg/kubelet/kubelet_pods.go``): Service variables first (``<SVC>_SERVICE_HOST``,
``<SVC>_SERVICE_PORT``, the Docker-link ``<SVC>_PORT_...`` family; for every Service of the pod's namespace
when ``enableServiceLinks``, and always for the ``kubernetes`` Service of ``default``), then ``envFrom``
sources in order, then ``env`` entries in order, each overriding what came before. ``$(VAR)`` in a value
refers to a variable defined earlier in the list or to a Service variable; ``$$`` escapes a ``$``; an
unknown reference stays as written (``third_party/forked/golang/expansion``). ``command`` and ``args``
are expanded against the final environment. A missing ConfigMap, Secret or key that is not ``optional``
makes the container wait with ``CreateContainerConfigError`` and Kubernetes' own message.

The lab's differences are small and deliberate: the ``KUBERNETES_SERVICE_*`` variables point at the lab
apiserver itself (so the client's in-cluster configuration reaches it), and the node's kube-proxy is
offered through ``HTTP_PROXY`` — the lab's stand-in for the iptables rules that make ClusterIPs work.
The kubelet also passes *pod variables* (``MESHLAB_POD_IP``, the pod's address, and
``MESHLAB_POD_LOCALHOST``, its private stand-in for ``127.0.0.1``; see ``podnet.py``), which count as
defined just before the container's own list: ``$(MESHLAB_POD_LOCALHOST)`` expands in ``env`` values,
``command`` and ``args``, and an ``envFrom`` or ``env`` entry of the same name overrides them (later
references then see the override). The image's variables (``PATH``, ``HOME``...) stay out of expansion, as
they do in Kubernetes.
No I/O here: the shell passes lookups for ConfigMaps, Secrets and Services.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]


class ConfigError(Exception):
    """The container cannot be configured (``CreateContainerConfigError``); the message is Kubernetes'."""


# -- $(VAR) expansion ----------------------------------------------------------------------------------------


def expand(text: str, *lookups: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references; the first mapping that defines VAR wins."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":  # "$$" is an escaped "$"
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:  # an unterminated reference is left as written
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:end]
            out.append(next((m[name] for m in lookups if name in m), f"$({name})"))
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


# -- Service variables ---------------------------------------------------------------------------------------


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_variables(service: Obj, *, host: str | None = None, port_override: int | None = None) -> dict[str, str]:
    """The variables one Service contributes (``pkg/kubelet/envvars``); ``host``/``port_override`` replace
    the ClusterIP and first port (the lab points ``kubernetes`` at its apiserver)."""
    spec = service.get("spec") or {}
    ip = host or spec.get("clusterIP") or ""
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    if not ip or ip == "None" or not ports:
        return {}
    prefix = _env_name(service["metadata"]["name"])
    out: dict[str, str] = {f"{prefix}_SERVICE_HOST": ip}
    for index, port in enumerate(ports):
        number = str(port_override if port_override is not None and index == 0 else port.get("port"))
        if index == 0:
            out[f"{prefix}_SERVICE_PORT"] = number
        if port.get("name"):
            out[f"{prefix}_SERVICE_PORT_{_env_name(port['name'])}"] = number
        proto = str(port.get("protocol") or "TCP")
        url = f"{proto.lower()}://{ip}:{number}"
        if index == 0:
            out[f"{prefix}_PORT"] = url
        link = f"{prefix}_PORT_{number}_{proto.upper()}"
        out.update({link: url, f"{link}_PROTO": proto.lower(), f"{link}_PORT": number, f"{link}_ADDR": ip})
    return out


def service_environment(services: Iterable[Obj], namespace: str, *, enable_links: bool,
                        apiserver: tuple[str, int]) -> dict[str, str]:
    out: dict[str, str] = {}
    master: Obj | None = None
    for svc in services:
        meta = svc.get("metadata") or {}
        if meta.get("namespace") == "default" and meta.get("name") == "kubernetes":
            master = svc
        elif enable_links and meta.get("namespace") == namespace:
            out.update(service_variables(svc))
    if master is None:
        master = {"metadata": {"name": "kubernetes"}, "spec": {"ports": [{"name": "https", "port": 443}]}}
    out.update(service_variables(master, host=apiserver[0], port_override=apiserver[1]))
    return out


# -- downward API ----------------------------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _format_map(values: Mapping[str, str]) -> str:
    return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))


def field_value(pod: Obj, path: str, *, pod_ip: str, host_ip: str) -> str:
    """``valueFrom.fieldRef`` (``podFieldSelectorRuntimeValue`` + ``fieldpath.ExtractFieldPathAsString``)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""), "status.podIP": pod_ip,
        "status.podIPs": pod_ip, "status.hostIP": host_ip, "status.hostIPs": host_ip,
        "spec.terminationGracePeriodSeconds": str(spec.get("terminationGracePeriodSeconds", 30)),
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        return _format_map(meta.get(path.split(".")[1]) or {})
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldPath: {path}")


_SUFFIXES: dict[str, Decimal | int] = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": 10**3,
             "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "1Gi", "1e3") as a number."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ConfigError(f"quantities must match the regular expression '{_QUANTITY.pattern}'")
    try:
        return Decimal(match.group(1)) * Decimal(_SUFFIXES[match.group(2) or ""])
    except InvalidOperation as err:
        raise ConfigError(f"invalid quantity {text!r}") from err


def resource_value(pod: Obj, container: Obj, ref: Obj, allocatable: Mapping[str, str]) -> str:
    """``valueFrom.resourceFieldRef``: a limit (the node's allocatable when unset) or request, divided by the
    divisor and rounded up, as ``resource.ExtractContainerResourceValue`` does."""
    target = container
    if ref.get("containerName"):
        everything = (pod.get("spec") or {}).get("containers", []) + (pod.get("spec") or {}).get(
            "initContainers", [])
        found = [c for c in everything if c.get("name") == ref["containerName"]]
        if not found:
            raise ConfigError(f"container {ref['containerName']} not found")
        target = found[0]
    kind, _, name = str(ref.get("resource", "")).partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ConfigError(f"unsupported container resource : {ref.get('resource')}")
    resources = target.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        value = allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    return str(math.ceil(quantity(value) / divisor))


# -- the whole environment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """What an environment may refer to, looked up by the caller (``None`` = not found)."""

    configmap: Callable[[str], Obj | None]
    secret: Callable[[str], Obj | None]
    services: Sequence[Obj] = ()


def _source_data(kind: str, obj: Obj) -> dict[str, str]:
    if kind == "Secret":
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})  # binaryData never reaches the environment


def _fetch(kind: str, sources: Sources, name: str, optional: bool) -> dict[str, str] | None:
    obj = (sources.secret if kind == "Secret" else sources.configmap)(name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    return _source_data(kind, obj)


def container_environment(
    pod: Obj, container: Obj, *, sources: Sources, pod_ip: str, host_ip: str, apiserver: tuple[str, int],
    allocatable: Mapping[str, str] | None = None, pod_variables: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The Kubernetes-defined variables of one container (no image/runtime variables), with the lab's
    ``pod_variables`` defined first (see the module docstring)."""
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    service_env = service_environment(sources.services, namespace,
                                      enable_links=spec.get("enableServiceLinks", True) is not False,
                                      apiserver=apiserver)
    env: dict[str, str] = dict(pod_variables or {})
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, ref in (("ConfigMap", source.get("configMapRef")), ("Secret", source.get("secretRef"))):
            if ref:
                data = _fetch(kind, sources, ref.get("name", ""), bool(ref.get("optional")))
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        name = var["name"]
        value_from = var.get("valueFrom")
        if var.get("value"):
            env[name] = expand(str(var["value"]), env, service_env)
        elif value_from:
            resolved = _value_from(pod, container, value_from, sources, pod_ip, host_ip, allocatable or {})
            if resolved is None:
                continue  # an optional source that is absent defines nothing
            env[name] = resolved
        else:
            env[name] = ""
    return {**{k: v for k, v in service_env.items() if k not in env}, **env}


def _value_from(pod: Obj, container: Obj, value_from: Obj, sources: Sources, pod_ip: str, host_ip: str,
                allocatable: Mapping[str, str]) -> str | None:
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    if value_from.get("fieldRef"):
        return field_value(pod, value_from["fieldRef"].get("fieldPath", ""), pod_ip=pod_ip, host_ip=host_ip)
    if value_from.get("resourceFieldRef"):
        return resource_value(pod, container, value_from["resourceFieldRef"], allocatable)
    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = value_from.get(key)
        if ref:
            optional = bool(ref.get("optional"))
            data = _fetch(kind, sources, ref.get("name", ""), optional)
            if data is None:
                return None
            if ref.get("key") not in data:
                if optional:
                    return None
                raise ConfigError(f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')}")
            return data[ref["key"]]
    return ""


def expand_command(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(arg, env) for arg in argv]
