"""Pilot's view of the cluster: list-then-watch eight kinds, rebuild ``MeshState``, debounce, publish.

A controller keeps a cache in step with the API server by the list-watch protocol
(https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes): LIST returns
the collection and its ``resourceVersion``; WATCH from that version streams ADDED / MODIFIED / DELETED events
(and BOOKMARKs that only advance the version); when the server has compacted past the version, the watch
ends with ``410 Gone`` and the client must LIST again and replace its cache. Pilot watches Services,
EndpointSlices (which pod IPs serve a Service, on which target ports, ready or not), Pods (their labels, which
DestinationRule subsets select, their service account and sidecar), ``networking.istio.io/v1``
VirtualServices and DestinationRules, and ``security.istio.io/v1`` PeerAuthentications and
AuthorizationPolicies (absent CRDs count as empty), and the mesh config ConfigMap (its telemetry profile), as
istiod's kube registry and config controller do.
Changes come in bursts (a rollout touches pods, slices and endpoints within milliseconds), so, like
istiod's ``PILOT_DEBOUNCE_AFTER`` (100 ms) and ``PILOT_DEBOUNCE_MAX`` (10 s here 1 s), Pilot waits
for a quiet moment before translating and pushing. The core is pure — :class:`Cache` applies list results
and events, :func:`state_from` turns raw API objects into a ``MeshState`` — and :class:`Watcher` is the
thin shell: one thread per kind running the official client's ``watch.Watch().stream`` (it is
synchronous), handing events to the asyncio loop that owns the cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from meshlab.mesh.injection import MESH_CONFIGMAP
from meshlab.mesh.pilot.model import (
    AuthorizationPolicy,
    DestinationRule,
    Endpoint,
    MeshState,
    PeerAuthentication,
    Service,
    ServicePort,
    VirtualService,
    telemetry_from_mesh,
)

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Kind:
    """A watched resource, described as data (as lightkube does): its API group, version and plural."""

    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


SERVICES = Kind("Service", "", "v1", "services")
ENDPOINT_SLICES = Kind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices")
PODS = Kind("Pod", "", "v1", "pods")
VIRTUAL_SERVICES = Kind("VirtualService", "networking.istio.io", "v1", "virtualservices")
DESTINATION_RULES = Kind("DestinationRule", "networking.istio.io", "v1", "destinationrules")
PEER_AUTHENTICATIONS = Kind("PeerAuthentication", "security.istio.io", "v1", "peerauthentications")
AUTHORIZATION_POLICIES = Kind("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies")
#: Only ``istio-system/meshlab-mesh`` (the mesh config: its telemetry profile changes what Pilot pushes).
MESH_CONFIG = Kind("ConfigMap", "", "v1", "configmaps")
WATCHED: tuple[Kind, ...] = (SERVICES, ENDPOINT_SLICES, PODS, VIRTUAL_SERVICES, DESTINATION_RULES,
                             PEER_AUTHENTICATIONS, AUTHORIZATION_POLICIES, MESH_CONFIG)
#: Kinds whose CRD may not be installed: a 404 on LIST counts as "none of them" (istiod skips absent CRDs too).
OPTIONAL: frozenset[Kind] = frozenset({PEER_AUTHENTICATIONS, AUTHORIZATION_POLICIES})

#: The label Istio's injector puts on every pod with a sidecar; Pilot marks its endpoints for auto mTLS.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
SIDECAR_CONTAINER = "istio-proxy"
SIDECAR_STATUS = "sidecar.istio.io/status"

MESH_NAMESPACE = "istio-system"

#: The label the EndpointSlice controller puts on every slice: the Service it belongs to.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Objects = Mapping[Kind, Mapping[Key, Obj]]


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


# -- pure: raw API objects -> MeshState ------------------------------------------------------------------------


def state_from(objects: Objects, *, trust_domain: str = "cluster.local") -> MeshState:
    """The mesh as translation needs it, from raw API objects (JSON dicts, camelCase) keyed by kind.

    ExternalName Services have no endpoints and are left out. An endpoint's labels are its pod's (looked up
    through the slice's ``targetRef``); a slice's ``ready`` condition left unset means ready, as the
    EndpointSlice API documents. Everything is sorted, so the same objects always give an equal state.
    """
    services = tuple(_service(o) for _, o in sorted(objects.get(SERVICES, {}).items())
                     if (o.get("spec") or {}).get("type") != "ExternalName")
    known = {s.key for s in services}
    pods = objects.get(PODS, {})
    endpoints: dict[Key, dict[str, Endpoint]] = {}
    for _, slice_ in sorted(objects.get(ENDPOINT_SLICES, {}).items()):
        namespace = _key(slice_)[0]
        service = str(((slice_.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) or "")
        if (namespace, service) not in known:
            continue
        by_ip = endpoints.setdefault((namespace, service), {})
        for endpoint in _slice_endpoints(slice_, pods):
            # A pod listed by two slices (during a slice split) is one endpoint; its ports are merged.
            seen = by_ip.get(endpoint.ip)
            if seen is not None:
                endpoint = Endpoint(endpoint.ip, {**seen.port_by_name, **endpoint.port_by_name}, endpoint.labels,
                                    endpoint.ready and seen.ready, endpoint.pod, endpoint.namespace,
                                    endpoint.service_account, endpoint.sidecar)
            by_ip[endpoint.ip] = endpoint
    return MeshState(
        services=services,
        endpoints={key: tuple(by_ip[ip] for ip in sorted(by_ip)) for key, by_ip in sorted(endpoints.items())},
        virtual_services=tuple(VirtualService(name, ns, dict(o.get("spec") or {}))
                               for (ns, name), o in sorted(objects.get(VIRTUAL_SERVICES, {}).items())),
        destination_rules=tuple(DestinationRule(name, ns, dict(o.get("spec") or {}))
                                for (ns, name), o in sorted(objects.get(DESTINATION_RULES, {}).items())),
        peer_authentications=tuple(PeerAuthentication(name, ns, dict(o.get("spec") or {}))
                                   for (ns, name), o in sorted(objects.get(PEER_AUTHENTICATIONS, {}).items())),
        authorization_policies=tuple(AuthorizationPolicy(name, ns, dict(o.get("spec") or {}))
                                     for (ns, name), o in sorted(objects.get(AUTHORIZATION_POLICIES, {}).items())),
        trust_domain=trust_domain,
        telemetry=telemetry_from_mesh(
            (objects.get(MESH_CONFIG, {}).get((MESH_NAMESPACE, MESH_CONFIGMAP)) or {}).get("data")),
    )


def _service(obj: Obj) -> Service:
    namespace, name = _key(obj)
    spec = obj.get("spec") or {}
    ports = tuple(ServicePort(str(p.get("name") or ""), int(p["port"]), str(p.get("protocol") or "TCP"))
                  for p in spec.get("ports") or () if p.get("port"))
    cluster_ip = spec.get("clusterIP")
    return Service(name, namespace, str(cluster_ip) if cluster_ip and cluster_ip != "None" else None, ports)


def _slice_endpoints(slice_: Obj, pods: Mapping[Key, Obj]) -> Iterable[Endpoint]:
    ports = {str(p.get("name") or ""): int(p["port"]) for p in slice_.get("ports") or () if p.get("port")}
    for entry in slice_.get("endpoints") or ():
        ref = entry.get("targetRef") or {}
        pod_key = (str(ref.get("namespace") or _key(slice_)[0]), str(ref.get("name") or ""))
        pod = pods.get(pod_key) if ref.get("kind", "Pod") == "Pod" else None
        labels = {str(k): str(v) for k, v in (((pod or {}).get("metadata") or {}).get("labels") or {}).items()}
        ready = (entry.get("conditions") or {}).get("ready")
        account = str(((pod or {}).get("spec") or {}).get("serviceAccountName") or "")
        for ip in entry.get("addresses") or ():
            yield Endpoint(str(ip), dict(ports), labels, ready is not False, pod_key[1] if ref else "", pod_key[0],
                           account, has_sidecar(pod or {}))


def has_sidecar(pod: Obj) -> bool:
    """Whether a pod runs Istio's sidecar: the injector's label or status annotation, or an istio-proxy."""
    meta = pod.get("metadata") or {}
    if (meta.get("labels") or {}).get(TLS_MODE_LABEL) == "istio" or SIDECAR_STATUS in (meta.get("annotations") or {}):
        return True
    return any(c.get("name") == SIDECAR_CONTAINER for c in (pod.get("spec") or {}).get("containers") or ())


# -- pure: the cache that list results and watch events update -------------------------------------------------


class Cache:
    """The objects of every watched kind, as the last LIST and the watch events since say."""

    def __init__(self, kinds: Iterable[Kind] = WATCHED) -> None:
        self._objects: dict[Kind, dict[Key, Obj]] = {k: {} for k in kinds}
        self._synced: set[Kind] = set()

    @property
    def synced(self) -> bool:
        """Every kind has been listed at least once (istiod's ``HasSynced``): only then is a state complete."""
        return self._synced == set(self._objects)

    def replace(self, kind: Kind, items: Iterable[Obj]) -> bool:
        """A fresh LIST (first sync, or after ``410 Gone``); True when anything differs from before."""
        fresh = {_key(o): o for o in items}
        changed = fresh != self._objects[kind] or kind not in self._synced
        self._objects[kind] = fresh
        self._synced.add(kind)
        return changed

    def apply(self, kind: Kind, event_type: str, obj: Obj) -> bool:
        """One watch event; True when the cache changed (BOOKMARKs and repeats do not change it)."""
        objects, key = self._objects[kind], _key(obj)
        if event_type == "DELETED":
            return objects.pop(key, None) is not None
        if event_type in ("ADDED", "MODIFIED"):
            if objects.get(key) == obj:
                return False
            objects[key] = obj
            return True
        return False

    def objects(self) -> Objects:
        return {k: dict(v) for k, v in self._objects.items()}


# -- the shell: list-watch threads feeding an asyncio loop -------------------------------------------------------


@dataclass(frozen=True)
class _Listed:
    kind: Kind
    items: list[Obj]


@dataclass(frozen=True)
class _Event:
    kind: Kind
    type: str
    obj: Obj


class Watcher:
    """Keeps ``publish`` fed with the current ``MeshState``: after every burst of changes, once all kinds
    have synced, and only when the state differs from the last one published."""

    def __init__(self, api_client: client.ApiClient, publish: Callable[[MeshState], object], *,
                 debounce: float = 0.1, debounce_max: float = 1.0, watch_timeout: int = 300,
                 trust_domain: str | Callable[[], str] = "cluster.local") -> None:
        self._api = api_client
        self._trust_domain = trust_domain
        self._publish = publish
        self._debounce, self._debounce_max = debounce, debounce_max
        self._watch_timeout = watch_timeout
        self.cache = Cache()
        self.published: MeshState | None = None
        self._stopping = threading.Event()
        self._watches: list[watch.Watch] = []

    @property
    def ready(self) -> bool:
        return self.published is not None

    async def run(self) -> None:
        """List-watch every kind until cancelled."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Listed | _Event] = asyncio.Queue()
        threads = [threading.Thread(target=self._list_watch, args=(kind, loop, queue), daemon=True,
                                    name=f"watch-{kind.plural}") for kind in WATCHED]
        for thread in threads:
            thread.start()
        try:
            while True:
                dirty = self._take(await queue.get())
                first = last = time.monotonic()
                # Debounce: keep absorbing events until quiet for ``debounce`` or ``debounce_max`` has passed.
                while True:
                    wait = min(last + self._debounce, first + self._debounce_max) - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), wait)
                    except TimeoutError:
                        break
                    dirty = self._take(item) or dirty
                    last = time.monotonic()
                if dirty and self.cache.synced:
                    self._publish_if_changed()
        finally:
            self.stop()

    def stop(self) -> None:
        self._stopping.set()
        for w in list(self._watches):
            w.stop()

    def _take(self, item: _Listed | _Event) -> bool:
        if isinstance(item, _Listed):
            return self.cache.replace(item.kind, item.items)
        return self.cache.apply(item.kind, item.type, item.obj)

    def _publish_if_changed(self) -> None:
        trust_domain = self._trust_domain() if callable(self._trust_domain) else self._trust_domain
        state = state_from(self.cache.objects(), trust_domain=trust_domain)
        if state == self.published:
            return
        self.published = state
        pushed = self._publish(state)
        log.info("mesh state: %d services, %d VirtualServices, %d DestinationRules; pushed %s",
                 len(state.services), len(state.virtual_services), len(state.destination_rules), pushed or "nothing")

    def _lister(self, kind: Kind) -> Callable[..., Any]:
        if kind is SERVICES:
            return client.CoreV1Api(self._api).list_service_for_all_namespaces
        if kind is PODS:
            return client.CoreV1Api(self._api).list_pod_for_all_namespaces
        if kind is ENDPOINT_SLICES:
            return client.DiscoveryV1Api(self._api).list_endpoint_slice_for_all_namespaces
        if kind is MESH_CONFIG:
            core = client.CoreV1Api(self._api)

            def list_mesh_config(**kwargs: Any) -> Any:
                return core.list_namespaced_config_map(MESH_NAMESPACE, field_selector=f"metadata.name={MESH_CONFIGMAP}",
                                                       **kwargs)

            list_mesh_config.__doc__ = core.list_namespaced_config_map.__doc__
            return list_mesh_config
        custom = client.CustomObjectsApi(self._api)

        def list_custom(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(kind.group, kind.version, kind.plural, **kwargs)

        list_custom.__doc__ = custom.list_cluster_custom_object.__doc__  # watch.stream reads the return type here
        return list_custom

    def _list_watch(self, kind: Kind, loop: asyncio.AbstractEventLoop,
                    queue: asyncio.Queue[_Listed | _Event]) -> None:
        lister, failures = self._lister(kind), 0

        def post(item: _Listed | _Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        while not self._stopping.is_set():
            try:
                response = lister(_preload_content=False)
                body = _json(response.data)
                post(_Listed(kind, list(body.get("items") or ())))
                version = str((body.get("metadata") or {}).get("resourceVersion") or "")
                failures = 0
                while not self._stopping.is_set():
                    version = self._watch_once(kind, lister, version, post)
            except ApiException as err:
                if err.status == 404 and kind in OPTIONAL:
                    # The CRD is not installed (yet): nothing of this kind exists. Look again later.
                    post(_Listed(kind, []))
                    self._stopping.wait(5.0)
                    continue
                if err.status == 410:
                    log.info("watch of %s expired (410 Gone): listing again", kind.plural)
                    continue
                failures += 1
                log.warning("list/watch of %s failed (%s %s)", kind.plural, err.status, err.reason)
            except Exception as err:  # the connection: apiserver restarting, network down
                failures += 1
                log.warning("list/watch of %s failed: %s", kind.plural, err)
            # Back off (jittered, capped at 5 s) so a missing CRD or a down apiserver is not hammered.
            self._stopping.wait(min(5.0, 0.2 * 2 ** min(failures, 5)) * random.uniform(0.5, 1.0))

    def _watch_once(self, kind: Kind, lister: Callable[..., Any], version: str,
                    post: Callable[[_Listed | _Event], None]) -> str:
        """One WATCH request from ``version``; returns the version to continue from."""
        w = watch.Watch()
        self._watches.append(w)
        try:
            # timeout_seconds makes the client raise 410 instead of retrying by itself: we relist instead.
            for event in w.stream(lister, resource_version=version, allow_watch_bookmarks=True,
                                  timeout_seconds=self._watch_timeout):
                raw = event["raw_object"]
                version = str((raw.get("metadata") or {}).get("resourceVersion") or version)
                if event["type"] != "BOOKMARK":
                    post(_Event(kind, str(event["type"]), raw))
        finally:
            self._watches.remove(w)
        return version


def _json(data: bytes | str) -> dict[str, Any]:
    parsed = json.loads(data)
    return parsed if isinstance(parsed, dict) else {}
