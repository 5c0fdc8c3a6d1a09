"""The gRPC shell around the CSI services: unix socket, method table, error mapping, call log.

CSI plugins serve gRPC on a unix socket named by ``CSI_ENDPOINT`` (``unix:///csi/csi.sock``; CSI spec
v1, "Transport"). The services here are plain objects whose methods are named like the RPCs and take and
return ``csi_pb2`` messages; :func:`build_server` reads the method list from ``csi.proto``'s service
descriptors, so an RPC the object lacks answers ``12 UNIMPLEMENTED`` with no code written for it.
:class:`CsiError` becomes a status with an empty ``details`` payload and a human-readable message, as the
spec asks (and csi-sanity's ``ExpectErrorCode`` checks: no response, the exact code). The
:class:`LoggingInterceptor` logs one line per call — method, duration, code, the request with every field
marked ``(csi_secret)`` in the proto redacted — and can hand each call to a recorder (the lessons' trace).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from meshlab.csiproto import csi_pb2
from meshlab.errors import CsiError

__all__ = ["CallRecord", "LoggingInterceptor", "build_server", "redacted", "socket_path"]

log = logging.getLogger("meshlab.csi")
REDACTED = "***stripped***"


@dataclass(frozen=True)
class CallRecord:
    """One CSI call as the driver saw it (the request already redacted)."""

    time: float          # wall clock at the start
    method: str          # e.g. "/csi.v1.Controller/CreateVolume"
    request: dict[str, Any]
    code: str            # "OK", "INVALID_ARGUMENT", ...
    message: str
    duration_s: float


def redacted(message: Message) -> dict[str, Any]:
    """``message`` as a JSON-able dict with the values of every ``(csi_secret)`` field replaced."""
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _redact(message, data)
    return data


def _redact(message: Message, data: dict[str, Any]) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.name not in data:
            continue
        if descriptor.GetOptions().Extensions[csi_pb2.csi_secret]:
            data[descriptor.name] = ({key: REDACTED for key in data[descriptor.name]}
                                     if isinstance(data[descriptor.name], dict) else REDACTED)
        elif descriptor.message_type is not None and not descriptor.message_type.GetOptions().map_entry:
            if isinstance(data[descriptor.name], list):   # a repeated message field
                for item, item_data in zip(value, data[descriptor.name], strict=False):
                    _redact(item, item_data)
            else:
                _redact(value, data[descriptor.name])


class LoggingInterceptor(grpc.ServerInterceptor):
    """Log (and optionally record) every unary CSI call: method, duration, status code, redacted request."""

    def __init__(self, record: Callable[[CallRecord], None] | None = None) -> None:
        self._record = record

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        behaviour = handler.unary_unary

        def logged(request: Message, context: grpc.ServicerContext) -> Message:
            start, wall = time.perf_counter(), time.time()
            failed = False
            try:
                return behaviour(request, context)
            except BaseException:
                failed = True   # a bug rather than a CsiError leaves no code set: gRPC answers UNKNOWN
                raise
            finally:
                unset = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
                code = context.code() or unset
                details = context.details() or b""
                message = details.decode(errors="replace") if isinstance(details, bytes) else str(details)
                call = CallRecord(wall, method, redacted(request), code.name, message, time.perf_counter() - start)
                log.info("%s %s %.1f ms %s%s", method, call.code, call.duration_s * 1000,
                         json.dumps(call.request, sort_keys=True) if call.request else "{}",
                         f" ({message})" if message else "")
                if self._record is not None:
                    self._record(call)

        return grpc.unary_unary_rpc_method_handler(logged, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def _handler(service: object | None, name: str) -> Callable[[Message, grpc.ServicerContext], Message]:
    implementation = getattr(service, name, None) if service is not None else None

    def handle(request: Message, context: grpc.ServicerContext) -> Message:
        if implementation is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by this driver")
        try:
            return implementation(request)  # type: ignore[misc]
        except CsiError as err:
            context.abort(grpc.StatusCode[err.code], err.message)
            raise  # unreachable: abort raises

    return handle


def build_server(services: Mapping[str, object], endpoint: str, *,
                 record: Callable[[CallRecord], None] | None = None, workers: int = 8) -> grpc.Server:
    """A started-to-be gRPC server for ``services`` (``{"Identity": obj, "Controller": obj, ...}``) on ``endpoint``.

    Every RPC of each named service in ``csi.proto`` is routed to the object's method of the same name.
    The caller calls ``.start()`` and ``.stop(grace)``; a stale socket file from a previous run is removed.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="csi"),
                         interceptors=[LoggingInterceptor(record)])
    for service_name, service in services.items():
        descriptor = csi_pb2.DESCRIPTOR.services_by_name[service_name]
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(
                _handler(service, method.name),
                request_deserializer=getattr(csi_pb2, method.input_type.name).FromString,
                response_serializer=getattr(csi_pb2, method.output_type.name).SerializeToString,
            )
            for method in descriptor.methods
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    path = socket_path(endpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()   # left by a killed predecessor; binding would fail with "address in use"
    if server.add_insecure_port(f"unix://{path}") == 0:
        raise CsiError("UNAVAILABLE", f"cannot listen on {endpoint}")
    return server


def socket_path(endpoint: str) -> Path:
    """The socket file of a ``unix:///path`` endpoint (``unix:/path`` and a bare path are accepted too)."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:"):]
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise CsiError("INVALID_ARGUMENT", f"CSI endpoint {endpoint!r} is not unix:///path.sock")
    return Path(os.path.abspath(path))
