"""``meshlab csi-provisioner``: the external-provisioner sidecar, beside the CSI driver in its controller pod.

The I/O shell around :mod:`provisioner_plan`: it asks the driver who it is (Identity ``GetPluginInfo``, after
``Probe`` says ready, as the external-provisioner does at start), then loops — list PersistentVolumeClaims,
PersistentVolumes and StorageClasses through the ``kubernetes`` client, :func:`~provisioner_plan.plan` what to
do, and do it: ``CreateVolume`` then create the PV; ``DeleteVolume`` then delete the PV. Watches on the three
kinds only wake the loop (one thread each, the official client's watch being synchronous), so a new claim is
served within milliseconds, and a periodic resync catches anything a watch missed. Each step reports on the
claim as the real sidecar does: ``Provisioning``, ``ProvisioningSucceeded``, or ``ProvisioningFailed`` quoting
the gRPC status (``rpc error: code = INVALID_ARGUMENT desc = ...``) and retried with exponential back-off.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from meshlab.csiproto import csi_pb2, csi_pb2_grpc
from meshlab.errors import CsiError
from meshlab.storage.csi.provisioner_plan import (
    BackOff,
    CreatedVolume,
    CreateRequest,
    Delete,
    PlanError,
    Provision,
    create_request,
    persistent_volume,
    plan,
    source_volume_id,
)
from meshlab.storage.csi.registrar import QUICK_RECONNECT

log = logging.getLogger("meshlab.csi-provisioner")

Obj = dict[str, Any]


def rpc_error(err: grpc.RpcError) -> CsiError:
    """A gRPC failure as :class:`CsiError` with the status code's name (``INVALID_ARGUMENT``)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return CsiError(code.name if code is not None else "UNKNOWN", str(details or ""))


def describe(err: Exception) -> str:
    """How an event quotes a failure: gRPC errors in the Go client's ``rpc error: code = ... desc = ...``
    shape (with the spec's code names), anything else by its message."""
    if isinstance(err, CsiError):
        return f"rpc error: code = {err.code} desc = {err.message}"
    if isinstance(err, ApiException):
        return f"{err.status} {err.reason}: {err.body or ''}".strip()
    return str(err)


class CsiController:
    """A blocking client of the driver's Identity and Controller services on ``address`` (``unix://...``)."""

    def __init__(self, address: str, *, timeout: float = 30.0) -> None:
        self.address = address if "://" in address else f"unix://{address}"
        self.timeout = timeout
        self.channel = grpc.insecure_channel(self.address, options=QUICK_RECONNECT)
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)

    def wait_ready(self, *, timeout: float = 60.0) -> str:
        """Wait until the driver answers Probe ready; returns its name (GetPluginInfo)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                probe = self.identity.Probe(csi_pb2.ProbeRequest(), timeout=2.0)
                if not probe.HasField("ready") or probe.ready.value:
                    return str(self.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=2.0).name)
                last = "Probe answered ready=false"
            except grpc.RpcError as err:
                last = describe(rpc_error(err))
            time.sleep(0.2)
        raise CsiError("UNAVAILABLE", f"the CSI driver at {self.address} is not ready after {timeout:.0f}s: {last}")

    def create_volume(self, request: CreateRequest) -> CreatedVolume:
        capabilities = [csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type=request.fs_type, mount_flags=request.mount_flags),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.Mode.Value(mode)))
            for mode in request.access_modes]
        message = csi_pb2.CreateVolumeRequest(
            name=request.name, capacity_range=csi_pb2.CapacityRange(required_bytes=request.required_bytes),
            volume_capabilities=capabilities, parameters=dict(request.parameters))
        if request.source_volume_id:
            message.volume_content_source.volume.volume_id = request.source_volume_id
        try:
            answer = self.controller.CreateVolume(message, timeout=self.timeout)
        except grpc.RpcError as err:
            raise rpc_error(err) from err
        return CreatedVolume(answer.volume.volume_id, int(answer.volume.capacity_bytes),
                             dict(answer.volume.volume_context))

    def delete_volume(self, volume_id: str) -> None:
        try:
            self.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=self.timeout)
        except grpc.RpcError as err:
            raise rpc_error(err) from err

    def close(self) -> None:
        self.channel.close()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EventRecorder:
    """Events on API objects, repeated ones counted in place (client-go's recorder aggregates the same way)."""

    core: client.CoreV1Api
    component: str
    host: str = field(default_factory=socket.gethostname)

    def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        digest = hashlib.sha256(f"{meta.get('uid')}/{self.component}/{reason}/{message}".encode()).hexdigest()[:16]
        name = f"{meta.get('name', 'unknown')}.{digest}"
        now = _now()
        try:
            try:
                found = self.core.read_namespaced_event(name, namespace)
                self.core.patch_namespaced_event(name, namespace, {"count": int(found.count or 1) + 1,
                                                                   "lastTimestamp": now})
                return
            except ApiException as err:
                if err.status != 404:
                    raise
            event: Any = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", "v1"),
                                   "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                                   "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")},
                "type": type_, "reason": reason, "message": message,
                "source": {"component": self.component},
                "count": 1, "firstTimestamp": now, "lastTimestamp": now,
                "reportingComponent": self.component, "reportingInstance": self.host,
            }
            self.core.create_namespaced_event(namespace, event)
        except ApiException as err:  # an event is a courtesy: never fail provisioning over one
            log.warning("recording event %s on %s/%s failed: %s", reason, namespace, meta.get("name"), err.reason)


_KINDS: tuple[tuple[str, str], ...] = (
    ("PersistentVolumeClaim", "list_persistent_volume_claim_for_all_namespaces"),
    ("PersistentVolume", "list_persistent_volume"),
    ("StorageClass", "list_storage_class"),
)


class Provisioner:
    """Provisions and deletes the volumes of ``driver`` through ``csi`` in the cluster ``api_client`` reaches."""

    def __init__(self, api_client: client.ApiClient, csi: CsiController, driver: str, *, resync: float = 30.0,
                 backoff: BackOff | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.csi = csi
        self.driver = driver
        self.resync = resync
        self.backoff = backoff or BackOff()
        self.clock = clock
        self.events = EventRecorder(self.core, f"{driver}_{socket.gethostname()}")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.synced = threading.Event()  # set after the first complete round (readiness)
        self._watches: list[watch.Watch] = []

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Reconcile until :meth:`stop`; watches only wake the loop, the resync is the safety net."""
        threads = [threading.Thread(target=self._watch, args=(kind, lister), daemon=True, name=f"watch-{kind}")
                   for kind, lister in _KINDS]
        for thread in threads:
            thread.start()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sync_once()
                self.synced.set()
            except Exception:  # the API server restarting: try again on the next wake-up
                log.exception("provisioner sync failed")
                self._wake.wait(1.0)
            now = self.clock()
            due = self.backoff.next_due(now)
            self._wake.wait(self.resync if due is None else min(self.resync, due - now))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for w in list(self._watches):
            w.stop()

    def _plain(self, answer: Any) -> Any:
        return self.api.sanitize_for_serialization(answer)

    def _watch(self, kind: str, lister_name: str) -> None:
        api = self.storage if kind == "StorageClass" else self.core
        lister = getattr(api, lister_name)
        while not self._stop.is_set():
            w = watch.Watch()
            self._watches.append(w)
            try:
                version = self._plain(lister(limit=1)).get("metadata", {}).get("resourceVersion")
                for _ in w.stream(lister, resource_version=version, timeout_seconds=300):
                    self._wake.set()
            except Exception as err:  # reconnect after a pause; the resync covers the gap
                log.info("watch of %s ended: %s", kind, err)
                self._stop.wait(1.0)
            finally:
                self._watches.remove(w)
            self._wake.set()

    def sync_once(self) -> None:
        """One round: list, plan, act."""
        claims = [self._with_kind(c, "PersistentVolumeClaim") for c in
                  self._plain(self.core.list_persistent_volume_claim_for_all_namespaces()).get("items") or []]
        volumes = self._plain(self.core.list_persistent_volume()).get("items") or []
        classes = {c["metadata"]["name"]: c for c in self._plain(self.storage.list_storage_class()).get("items") or []}
        todo = plan(claims, volumes, classes, self.driver)
        self.backoff.forget_except({self._key(action) for action in todo})
        for action in todo:
            if self._stop.is_set():
                return
            key = self._key(action)
            if not self.backoff.ready(key, self.clock()):
                continue
            if isinstance(action, Provision):
                ok = self.provision(action, claims, volumes)
            else:
                ok = self.delete(action)
            if ok:
                self.backoff.succeeded(key)
            else:
                delay = self.backoff.failed(key, self.clock())
                log.info("%s: retrying in %.1fs", key, delay)

    @staticmethod
    def _with_kind(obj: Obj, kind: str) -> Obj:
        return {"apiVersion": "v1", "kind": kind, **obj}

    @staticmethod
    def _key(action: Provision | Delete) -> str:
        if isinstance(action, Provision):
            return f"claim/{action.claim['metadata'].get('uid')}"
        return f"volume/{action.volume['metadata'].get('uid')}"

    # -- the two actions -------------------------------------------------------------------------------------

    def provision(self, action: Provision, claims: list[Obj], volumes: list[Obj]) -> bool:
        claim, sc = action.claim, action.storage_class
        meta = claim["metadata"]
        key = f'{meta["namespace"]}/{meta["name"]}'
        self.events.record(claim, "Normal", "Provisioning",
                           f'External provisioner is provisioning volume for claim "{key}"')
        try:
            request = create_request(claim, sc, source=source_volume_id(claim, claims, volumes))
            created = self.csi.create_volume(request)
            pv: Any = persistent_volume(claim, sc, self.driver, created, request)
            try:
                self.core.create_persistent_volume(pv)
            except ApiException as err:
                if err.status != 409:  # 409: a previous round created it already
                    raise
        except (PlanError, CsiError, ApiException) as err:
            message = f'failed to provision volume with StorageClass "{sc["metadata"]["name"]}": {describe(err)}'
            log.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
            self.events.record(claim, "Warning", "ProvisioningFailed", message)
            return False
        log.info("%s/%s: provisioned %s (%s)", meta["namespace"], meta["name"], request.name, created.volume_id)
        self.events.record(claim, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {request.name}")
        return True

    def delete(self, action: Delete) -> bool:
        pv = self._with_kind(action.volume, "PersistentVolume")
        name = pv["metadata"]["name"]
        try:
            self.csi.delete_volume(action.handle)
            self.core.delete_persistent_volume(name, body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=pv["metadata"].get("uid"))))
        except ApiException as err:
            if err.status == 404:
                return True
            self.events.record(pv, "Warning", "VolumeFailedDelete", describe(err))
            return False
        except CsiError as err:
            self.events.record(pv, "Warning", "VolumeFailedDelete", describe(err))
            return False
        log.info("deleted volume %s (%s)", name, action.handle)
        return True


def serve_health(port: int, provisioner: Provisioner) -> http.server.ThreadingHTTPServer:
    """``GET /healthz``: 200 once the provisioner has synced with the API server and the driver (readiness)."""
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz" and provisioner.synced.is_set()
            body = b"ok\n" if ok else b"not synced yet\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    from meshlab import podnet

    server = http.server.ThreadingHTTPServer((podnet.listen_address(), port), Health)
    threading.Thread(target=server.serve_forever, daemon=True, name="healthz").start()
    return server


def main(*, csi_address: str, kubeconfig: str | None = None, resync: float = 30.0,
         retry_start: float = 1.0, retry_max: float = 300.0, timeout: float = 30.0, health_port: int = 0) -> int:
    """Run the provisioner until interrupted (``meshlab csi-provisioner``)."""
    from meshlab import kube

    # The API client first: its imports and TLS set-up overlap with the driver's own start.
    clients = kube.clients(kubeconfig)
    csi = CsiController(csi_address, timeout=timeout)
    driver = csi.wait_ready(timeout=120.0)
    log.info("provisioning for CSI driver %s at %s", driver, csi.address)
    provisioner = Provisioner(clients.api_client, csi, driver, resync=resync,
                              backoff=BackOff(initial=retry_start, maximum=retry_max))
    health = serve_health(health_port, provisioner) if health_port else None
    try:
        provisioner.run()
    except KeyboardInterrupt:
        pass
    finally:
        provisioner.stop()
        if health is not None:
            health.shutdown()
        csi.close()
        clients.close()
    return 0
