"""``configMap``, ``secret``, ``downwardAPI`` and ``projected`` volumes: API data shown as files.

Each builds a *payload* (relative path -> bytes and mode) the way the kubelet's plugins do
(kubernetes.io/docs/concepts/storage/volumes/#configmap, …/projected-volumes/) and writes it with the
``..data`` swap of :mod:`atomic_writer`, so the kubelet's periodic refresh makes updates visible atomically.
Without ``items`` every key becomes a file; with ``items`` only those keys, at their ``path`` and ``mode``
(default ``defaultMode``, 0644). A missing object or key fails the mount with the kubelet's words
(``configmap "x" not found``, ``configmap references non-existent config key: k``) unless ``optional``.
``downwardAPI`` files hold pod metadata (``metadata.labels`` as sorted ``key="value"`` lines) or a
container's resources (``limits.cpu`` rounded up in units of ``divisor``; an unset limit is the node's
allocatable amount). A ``serviceAccountToken`` source holds a token bound to the pod
(``TokenSigner.issue(pod=(name, uid))``) for its ``audience`` and ``expirationSeconds``; a refresh re-issues
it once 80% of its life has passed or it is older than 24 h, as the kubelet's token manager does.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

from meshlab.cluster.decoding import QuantityError, parse_quantity
from meshlab.cluster.kubelet.volume_plugins import VolumeContext, VolumeError
from meshlab.cluster.kubelet.volume_plugins import atomic_writer as writer
from meshlab.cluster.kubelet.volume_plugins.atomic_writer import FileProjection, PayloadError

DEFAULT_MODE = 0o644
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROTATE_AT = 0.8
ROTATE_AGE = 24 * 3600

Payload = dict[str, FileProjection]


def _mode(value: Any, default: int) -> int:
    return int(value) & 0o777 if value is not None else default


def _select(ctx: VolumeContext, volume: dict[str, Any], data: dict[str, bytes], source: dict[str, Any],
            default_mode: int, missing_key: str) -> Payload:
    items = source.get("items")
    if not items:
        return {key: FileProjection(value, default_mode) for key, value in data.items()}
    payload: Payload = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if source.get("optional"):
                continue
            raise ctx.failed(volume, f"{missing_key}: {key}")
        payload[str(item.get("path") or key)] = FileProjection(data[key], _mode(item.get("mode"), default_mode))
    return payload


def configmap_payload(ctx: VolumeContext, volume: dict[str, Any], source: dict[str, Any],
                      default_mode: int) -> Payload:
    name = str(source.get("name") or "")
    obj = ctx.lookup("configmaps", name)
    if obj is None and name == ROOT_CA_CONFIGMAP and ctx.ca_pem is not None:
        # Real clusters publish the cluster CA in every namespace under this name (the root-ca-cert-publisher
        # controller); the lab serves the same bytes even when no controller has published it yet.
        obj = {"data": {"ca.crt": ctx.ca_pem.decode()}}
    if obj is None:
        if source.get("optional"):
            return {}
        raise ctx.failed(volume, f'configmap "{name}" not found')
    data = {key: str(value).encode() for key, value in (obj.get("data") or {}).items()}
    try:
        data.update({key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    except (binascii.Error, TypeError) as err:
        raise ctx.failed(volume, f'configmap "{name}": binaryData is not base64: {err}') from err
    return _select(ctx, volume, data, source, default_mode, "configmap references non-existent config key")


def secret_payload(ctx: VolumeContext, volume: dict[str, Any], source: dict[str, Any], name: str,
                   default_mode: int) -> Payload:
    obj = ctx.lookup("secrets", name)
    if obj is None:
        if source.get("optional"):
            return {}
        raise ctx.failed(volume, f'secret "{name}" not found')
    try:
        data = {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
    except (binascii.Error, TypeError) as err:
        raise ctx.failed(volume, f'secret "{name}": data is not base64: {err}') from err
    data.update({key: str(value).encode() for key, value in (obj.get("stringData") or {}).items()})
    return _select(ctx, volume, data, source, default_mode, "secret references non-existent secret key")


# -- downward API ----------------------------------------------------------------------------------------------


def _quoted_map(values: dict[str, Any]) -> str:
    # Go's %q of each value; JSON string quoting agrees with it for the characters labels can hold.
    return "\n".join(f"{key}={json.dumps(str(values[key]), ensure_ascii=False)}" for key in sorted(values))


def field_value(pod: dict[str, Any], field_path: str) -> str | None:
    """The text of a downward-API volume ``fieldRef`` (``None``: not allowed in a volume)."""
    meta = pod.get("metadata") or {}
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if field_path in simple:
        return str(meta.get(simple[field_path]) or "")
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if field_path == f"metadata.{field}":
            return _quoted_map(values)
        prefix = f"metadata.{field}['"
        if field_path.startswith(prefix) and field_path.endswith("']"):
            return str(values.get(field_path[len(prefix):-2], ""))
    return None


def node_allocatable(resource: str, lab_dir: Path) -> Fraction:
    """What the lab node offers when a container sets no limit (a real kubelet uses node allocatable)."""
    if resource == "cpu":
        return Fraction(os.cpu_count() or 1)
    if resource == "memory":
        return Fraction(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if resource == "ephemeral-storage":
        return Fraction(shutil.disk_usage(lab_dir).total)
    return Fraction(0)


def resource_value(ctx: VolumeContext, volume: dict[str, Any], ref: dict[str, Any]) -> str:
    spec = ctx.pod.get("spec") or {}
    wanted = ref.get("containerName")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    container = next((c for c in containers if c.get("name") == wanted), None)
    if container is None:
        raise ctx.failed(volume, f'resourceFieldRef: container "{wanted}" not found in the pod')
    kind, _, resource = str(ref.get("resource") or "").partition(".")
    if kind not in ("limits", "requests") or not resource:
        raise ctx.failed(volume, f"resourceFieldRef: unsupported resource {ref.get('resource')!r}")
    resources = container.get("resources") or {}
    text = (resources.get(kind) or {}).get(resource)
    if text is None and kind == "requests":
        text = (resources.get("limits") or {}).get(resource, "0")
    try:
        amount = parse_quantity(str(text))[0] if text is not None else node_allocatable(resource, ctx.lab_dir)
        divisor = parse_quantity(str(ref.get("divisor") or "1"))[0]
    except QuantityError as err:
        raise ctx.failed(volume, f"resourceFieldRef: {err}") from err
    if divisor <= 0:
        raise ctx.failed(volume, "resourceFieldRef: divisor must be positive")
    return str(math.ceil(amount / divisor))


def downward_payload(ctx: VolumeContext, volume: dict[str, Any], items: list[dict[str, Any]],
                     default_mode: int) -> Payload:
    payload: Payload = {}
    for item in items:
        if item.get("fieldRef"):
            field_path = str(item["fieldRef"].get("fieldPath") or "")
            value = field_value(ctx.pod, field_path)
            if value is None:
                raise ctx.failed(volume, f'downwardAPI: fieldPath "{field_path}" is not supported in a volume '
                                         "(metadata.name, .namespace, .uid, .labels, .annotations are)")
        elif item.get("resourceFieldRef"):
            value = resource_value(ctx, volume, item["resourceFieldRef"])
        else:
            raise ctx.failed(volume, f"downwardAPI item {item.get('path')!r} has neither fieldRef nor "
                                     "resourceFieldRef")
        payload[str(item.get("path") or "")] = FileProjection(value.encode(), _mode(item.get("mode"), default_mode))
    return payload


# -- service-account tokens ------------------------------------------------------------------------------------


def token_claims(token: bytes) -> dict[str, Any] | None:
    """The claims of a token this kubelet wrote (not verified: only to decide when to rotate it)."""
    try:
        body = token.split(b".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _still_good(current: bytes | None, *, now: float, audiences: list[str] | None, pod_uid: str,
                sa_uid: str) -> bool:
    claims = token_claims(current) if current else None
    if claims is None:
        return False
    k8s = claims.get("kubernetes.io") or {}
    issued, expires = float(claims.get("iat", 0)), float(claims.get("exp", 0))
    if now >= issued + ROTATE_AT * (expires - issued) or now - issued > ROTATE_AGE:
        return False
    if audiences is not None and claims.get("aud") != audiences:
        return False
    return bool((k8s.get("pod") or {}).get("uid") == pod_uid
                and (k8s.get("serviceaccount") or {}).get("uid") == sa_uid)


def token_bytes(ctx: VolumeContext, volume: dict[str, Any], source: dict[str, Any],
                current: bytes | None) -> bytes:
    seconds = int(source.get("expirationSeconds") or 3600)
    if seconds < 600:
        raise ctx.failed(volume, "serviceAccountToken: expirationSeconds may not specify a duration less than "
                                 "10 minutes")
    account = str((ctx.pod.get("spec") or {}).get("serviceAccountName") or "default")
    sa = ctx.lookup("serviceaccounts", account)
    if sa is None:
        raise ctx.failed(volume, f'failed to fetch token: serviceaccounts "{account}" not found')
    sa_uid = str(sa["metadata"].get("uid") or "")
    audiences = [str(source["audience"])] if source.get("audience") else None
    now = ctx.clock()
    if current and _still_good(current, now=now, audiences=audiences, pod_uid=ctx.pod_uid, sa_uid=sa_uid):
        return current
    token, _ = ctx.signer.issue(namespace=ctx.namespace, service_account=account, sa_uid=sa_uid,
                                audiences=audiences, expiration_seconds=seconds, pod=(ctx.pod_name, ctx.pod_uid),
                                now=now)
    return token.encode()


# -- the plugins -----------------------------------------------------------------------------------------------


class _ApiDataPlugin(abc.ABC):
    name = ""
    kind = ""
    refreshable = True

    @abc.abstractmethod
    def payload(self, ctx: VolumeContext, volume: dict[str, Any], target: Path) -> Payload:
        """The files this volume holds now (each subclass reads its API objects)."""

    async def setup(self, ctx: VolumeContext, volume: dict[str, Any]) -> Path:
        target = ctx.volume_dir(self.kind, str(volume["name"]))
        payload = self.payload(ctx, volume, target)
        try:
            writer.write(target, payload, now=ctx.clock())
        except PayloadError as err:
            raise ctx.failed(volume, str(err)) from err
        return target

    async def teardown(self, ctx: VolumeContext, volume: dict[str, Any], path: Path) -> None:
        if not path.is_relative_to(ctx.pod_dir / "volumes"):
            raise VolumeError("FailedUnmount", f"refusing to delete {path}: not a volume of this pod")
        shutil.rmtree(path, ignore_errors=True)


class ConfigMapPlugin(_ApiDataPlugin):
    name = "configMap"
    kind = "kubernetes.io~configmap"

    def payload(self, ctx: VolumeContext, volume: dict[str, Any], target: Path) -> Payload:
        source = volume.get(self.name) or {}
        return configmap_payload(ctx, volume, source, _mode(source.get("defaultMode"), DEFAULT_MODE))


class SecretPlugin(_ApiDataPlugin):
    name = "secret"
    kind = "kubernetes.io~secret"

    def payload(self, ctx: VolumeContext, volume: dict[str, Any], target: Path) -> Payload:
        source = volume.get(self.name) or {}
        return secret_payload(ctx, volume, source, str(source.get("secretName") or ""),
                              _mode(source.get("defaultMode"), DEFAULT_MODE))


class DownwardAPIPlugin(_ApiDataPlugin):
    name = "downwardAPI"
    kind = "kubernetes.io~downward-api"

    def payload(self, ctx: VolumeContext, volume: dict[str, Any], target: Path) -> Payload:
        source = volume.get(self.name) or {}
        return downward_payload(ctx, volume, source.get("items") or [],
                                _mode(source.get("defaultMode"), DEFAULT_MODE))


class ProjectedPlugin(_ApiDataPlugin):
    name = "projected"
    kind = "kubernetes.io~projected"

    def payload(self, ctx: VolumeContext, volume: dict[str, Any], target: Path) -> Payload:
        source = volume.get(self.name) or {}
        mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
        payload: Payload = {}
        for item in source.get("sources") or []:
            if item.get("configMap") is not None:
                payload.update(configmap_payload(ctx, volume, item["configMap"], mode))
            elif item.get("secret") is not None:
                secret = item["secret"]
                payload.update(secret_payload(ctx, volume, secret, str(secret.get("name") or ""), mode))
            elif item.get("downwardAPI") is not None:
                payload.update(downward_payload(ctx, volume, item["downwardAPI"].get("items") or [], mode))
            elif item.get("serviceAccountToken") is not None:
                token = item["serviceAccountToken"]
                path = str(token.get("path") or "")
                current = writer.read_file(target, path) if path else None
                payload[path] = FileProjection(token_bytes(ctx, volume, token, current), mode)
            else:
                kinds = ", ".join(sorted(item)) or "an empty source"
                raise ctx.failed(volume, f"projected source {kinds} is not supported by the embedded lab "
                                         "(configMap, secret, downwardAPI and serviceAccountToken are)")
        return payload
