"""The one error tree of meshlab.

Every layer raises these; each edge maps them once (apiserver -> ``metav1.Status``, CSI server ->
``context.abort(code, ...)``, CLI -> one line and an exit code)::

    MeshlabError
    ├── ApiError            an HTTP status + Kubernetes ``reason`` (``metav1.Status``)
    │   ├── BadRequest          400 BadRequest
    │   ├── Unauthorized        401 Unauthorized
    │   ├── Forbidden           403 Forbidden
    │   ├── NotFound            404 NotFound
    │   ├── MethodNotAllowed    405 MethodNotAllowed
    │   ├── AlreadyExists       409 AlreadyExists
    │   ├── Conflict            409 Conflict
    │   ├── Gone                410 Expired
    │   ├── UnsupportedMediaType 415 UnsupportedMediaType
    │   ├── Invalid             422 Invalid (with ``causes``)
    │   └── InternalError       500 InternalError
    ├── CsiError            a gRPC status code
    ├── XdsError
    ├── CaError
    └── LabError            the lab cannot start / is not running / a command failed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MeshlabError(Exception):
    """Base of every error meshlab raises on purpose."""


@dataclass(frozen=True)
class Cause:
    """One reason a write was refused: ``field`` is a dotted path such as ``spec.replicas``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class ApiError(MeshlabError):
    """An error with a Kubernetes ``Status``: HTTP code, machine ``reason`` and human ``message``."""

    message: str
    code: int = 500
    reason: str = "InternalError"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


class _StatusError(ApiError):
    """An ApiError whose code and reason are fixed by its class."""

    CODE = 500
    REASON = "InternalError"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, self.CODE, self.REASON, details or {})


class BadRequest(_StatusError):
    CODE, REASON = 400, "BadRequest"


class Unauthorized(_StatusError):
    CODE, REASON = 401, "Unauthorized"


class Forbidden(_StatusError):
    CODE, REASON = 403, "Forbidden"


class NotFound(_StatusError):
    CODE, REASON = 404, "NotFound"


class MethodNotAllowed(_StatusError):
    CODE, REASON = 405, "MethodNotAllowed"


class AlreadyExists(_StatusError):
    CODE, REASON = 409, "AlreadyExists"


class Conflict(_StatusError):
    CODE, REASON = 409, "Conflict"


class Gone(_StatusError):
    CODE, REASON = 410, "Expired"


class UnsupportedMediaType(_StatusError):
    CODE, REASON = 415, "UnsupportedMediaType"


class InternalError(_StatusError):
    CODE, REASON = 500, "InternalError"


class Invalid(ApiError):
    """HTTP 422: the object failed validation; ``causes`` names each bad field."""

    def __init__(self, kind: str, name: str, causes: list[Cause], group: str = "") -> None:
        summary = ", ".join(f"{c.field}: {c.message}" for c in causes) or "invalid object"
        details: dict[str, Any] = {"name": name, "kind": kind, "causes": [c.to_dict() for c in causes]}
        if group:
            details["group"] = group
        super().__init__(f'{kind} "{name}" is invalid: {summary}', 422, "Invalid", details)
        self.causes = causes


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return NotFound(
        f'{qualified} "{name}" not found', {"name": name, "group": group, "kind": resource}
    )


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return AlreadyExists(
        f'{qualified} "{name}" already exists', {"name": name, "group": group, "kind": resource}
    )


def conflict(resource: str, name: str, group: str = "", why: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return Conflict(
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        {"name": name, "group": group, "kind": resource},
    )


class CsiError(MeshlabError):
    """A CSI failure carrying the gRPC status code name (e.g. ``INVALID_ARGUMENT``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class XdsError(MeshlabError):
    """An xDS protocol or translation failure."""


class CaError(MeshlabError):
    """A certificate authority failure (bad CSR, unauthenticated caller, expired chain)."""


class StorageError(MeshlabError):
    """A storage failure: NFS, mounting, FlexVolume; the message says what happened and what to do next."""


class NfsError(StorageError):
    """An NFS call failed; ``status`` is the protocol's own name for it (e.g. ``NFS3ERR_NOENT``)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class MountError(StorageError):
    """A volume could not be mounted (or unmounted) on this node; the message says why and what to install."""


class LabError(MeshlabError):
    """The lab cannot do what was asked; the message says what to do next."""
