"""Publishing the trust bundle: ConfigMap ``istio-ca-root-cert`` (key ``root-cert.pem``) in every namespace.

This is Istio's namespace controller (``pilot/pkg/keycertbundle`` + ``namespacecontroller``): each namespace gets
the mesh's root certificate(s) in a ConfigMap that sidecars mount at ``/var/run/secrets/istio``, so a proxy
can check Citadel's certificate before it has one of its own, and peers' certificates after. The publisher
lists namespaces, writes any ConfigMap whose bundle differs, then watches for new namespaces (and relists
periodically, which also repairs a ConfigMap someone edited or deleted). During a root rotation the bundle
is the old and new roots concatenated; Kubernetes' own ``kube-root-ca.crt`` publisher works the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("meshlab.citadel")

CONFIGMAP = "istio-ca-root-cert"
KEY = "root-cert.pem"

Obj = dict[str, Any]


def root_configmap(namespace: str, bundle_pem: bytes) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": namespace,
                         "labels": {"istio.io/config": "true", "app.kubernetes.io/part-of": "meshlab"}},
            "data": {KEY: bundle_pem.decode()}}


def up_to_date(existing: Obj | None, bundle_pem: bytes) -> bool:
    return existing is not None and (existing.get("data") or {}).get(KEY) == bundle_pem.decode()


class RootPublisher:
    """Keeps ``istio-ca-root-cert`` equal to ``bundle()`` in every active namespace (kubernetes client, threads)."""

    def __init__(self, api_client: Any, bundle: Callable[[], bytes], *, resync: float = 30.0) -> None:
        self._api = api_client
        self._bundle = bundle
        self._resync = resync
        self._stopping = threading.Event()
        self.published: set[str] = set()  # namespaces holding the current bundle
        self.listed = False

    def publish(self, namespace: str) -> bool:
        """Write the ConfigMap in ``namespace`` if it differs; True when it now holds the bundle."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core: Any = client.CoreV1Api(self._api)  # plain dicts in and out
        bundle = self._bundle()
        try:
            try:
                existing = self._api.sanitize_for_serialization(core.read_namespaced_config_map(CONFIGMAP, namespace))
            except ApiException as err:
                if err.status != 404:
                    raise
                existing = None
            if up_to_date(existing, bundle):
                self.published.add(namespace)
                return True
            if existing is None:
                core.create_namespaced_config_map(namespace, root_configmap(namespace, bundle))
            else:
                core.replace_namespaced_config_map(CONFIGMAP, namespace, root_configmap(namespace, bundle))
            log.info("published the trust bundle to %s/%s", namespace, CONFIGMAP)
            self.published.add(namespace)
            return True
        except ApiException as err:
            self.published.discard(namespace)
            if err.status not in (403, 404, 409):  # 404/403: namespace terminating or gone; 409: raced, next pass
                log.warning("publishing %s/%s failed: %s %s", namespace, CONFIGMAP, err.status, err.reason)
            return False

    def publish_all(self) -> str:
        """One pass over every active namespace; returns the list's resourceVersion to watch from."""
        from kubernetes import client

        listed = self._api.sanitize_for_serialization(client.CoreV1Api(self._api).list_namespace())
        for ns in listed.get("items") or []:
            if (ns.get("status") or {}).get("phase") != "Terminating":
                self.publish(str(ns["metadata"]["name"]))
        self.listed = True
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def run_blocking(self) -> None:
        """List, watch new namespaces, relist every ``resync`` seconds; until :meth:`stop`."""
        from kubernetes import client, watch

        while not self._stopping.is_set():
            try:
                version = self.publish_all()
                stream = watch.Watch()
                for event in stream.stream(client.CoreV1Api(self._api).list_namespace, resource_version=version,
                                           timeout_seconds=max(1, int(self._resync))):
                    if self._stopping.is_set():
                        stream.stop()
                        break
                    if event["type"] == "ADDED":
                        self.publish(str(event["raw_object"]["metadata"]["name"]))
            except Exception as err:  # the API server restarted or a watch expired (410): relist shortly
                log.warning("namespace watch: %s; relisting", err)
                self._stopping.wait(1.0)

    def start(self) -> threading.Thread:
        """Run in a daemon thread (a blocking watch must not hold the process up at exit)."""
        thread = threading.Thread(target=self.run_blocking, name="root-publisher", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stopping.set()
