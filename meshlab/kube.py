"""The one place that builds ``kubernetes`` clients from a kubeconfig: the embedded lab's or a real cluster's.

Everything in meshlab that talks to a cluster — the notebooks' facade, the mesh, the storage drivers —
gets its clients here, so the embedded lab and a real cluster are reached the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from meshlab.errors import LabError


@dataclass
class Clients:
    """Typed API clients sharing one configured ``ApiClient``."""

    api_client: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    @property
    def storage(self) -> client.StorageV1Api:
        return client.StorageV1Api(self.api_client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    @property
    def apiextensions(self) -> client.ApiextensionsV1Api:
        return client.ApiextensionsV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()


def load_configuration(kubeconfig: str | Path | None = None, context: str | None = None) -> client.Configuration:
    """A client Configuration from a kubeconfig file, or the in-cluster service account when inside a pod."""
    configuration = client.Configuration()
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG")
    try:
        if path or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError, TypeError) as err:
        where = path or "~/.kube/config"
        raise LabError(f"cannot load a Kubernetes configuration from {where}: {err}") from err
    return configuration


def clients(kubeconfig: str | Path | None = None, context: str | None = None) -> Clients:
    return Clients(client.ApiClient(load_configuration(kubeconfig, context)))
