"""What the apiserver does to every write before storing it: decode, default, validate.

The real apiserver runs a request body through four steps (``k8s.io/apiserver`` ``handlers/create.go``):
*decode* it into the typed object (wrong JSON types are a 400; unknown fields are rejected, warned about or
dropped according to the ``fieldValidation`` query parameter, see KEP-2885 "Server Side Unknown Field
Validation"), apply the kind's *defaults* (``SetDefaults_*``), generate a name from ``generateName``, and
*validate* it (``pkg/apis/*/validation``; a 422 ``Invalid`` Status with one cause per bad field). Custom
resources are pruned, defaulted and validated against their CRD's structural ``openAPIV3Schema`` instead.
:func:`prepare` does the same with the schemas that ``kubernetes-validate`` ships for Kubernetes 1.33
(``"$defs"`` keyed by ``io.k8s.api.apps.v1.Deployment``-style names), so that what is stored is exactly
what the official Python client's strict models and ``kubectl`` expect to read back.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshlab.cluster import validation
from meshlab.cluster.decoding import _REF, DROP, Decoder
from meshlab.cluster.defaulting import default_in_place
from meshlab.cluster.resources import ResourceType
from meshlab.errors import BadRequest, Cause, InternalError, Invalid

FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
_META_PREFIX = "io.k8s.apimachinery.pkg.apis.meta.v1."


class Schemas:
    """The Kubernetes JSON schema definitions of one minor version, loaded on first use."""

    def __init__(self, k8s_minor: str = "1.33") -> None:
        self.k8s_minor = k8s_minor
        self._defs: dict[str, dict[str, Any]] | None = None
        self._by_gvk: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    @property
    def defs(self) -> Mapping[str, Mapping[str, Any]]:
        if self._defs is None:
            with self._lock:
                if self._defs is None:
                    self._load()
        assert self._defs is not None
        return self._defs

    def _load(self) -> None:
        defs: dict[str, dict[str, Any]] = json.loads(_definitions_file(self.k8s_minor).read_bytes())["$defs"]
        by_gvk: dict[tuple[str, str, str], str] = {}
        for name, schema in defs.items():
            for gvk in schema.get("x-kubernetes-group-version-kind") or ():
                key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
                # meta/v1 types (DeleteOptions, WatchEvent) claim a GVK in every group; a real kind wins.
                if key not in by_gvk or by_gvk[key].startswith(_META_PREFIX):
                    by_gvk[key] = name
        self._by_gvk = by_gvk
        self._defs = defs

    def definition_name(self, group: str, version: str, kind: str) -> str | None:
        """``("apps", "v1", "Deployment")`` -> ``"io.k8s.api.apps.v1.Deployment"``."""
        _ = self.defs
        return self._by_gvk.get((group, version, kind))

    def root_schema(self, rt: ResourceType) -> Mapping[str, Any] | None:
        """The schema a kind's objects are checked against: the CRD's for custom resources."""
        if rt.is_custom:
            return rt.crd_schema
        name = self.definition_name(rt.group, rt.version, rt.kind)
        return self.defs[name] if name else None


def _definitions_file(k8s_minor: str) -> Path:
    # find_spec locates the package without importing it: importing kubernetes_validate pulls in jsonschema
    # and costs ~150 ms, ten times the parse of the file itself.
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise InternalError("the kubernetes-validate package (Kubernetes JSON schemas) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"
    path = folder / f"v{k8s_minor}.0-local" / "_definitions.json"
    if not path.is_file():
        raise InternalError(f"kubernetes-validate ships no schemas for Kubernetes {k8s_minor}")
    return path


def prepare(schemas: Schemas, rt: ResourceType, obj: dict[str, Any], *,
            field_validation: str = "Strict") -> tuple[dict[str, Any], list[str]]:
    """Decode, default and validate one object about to be stored; return it and any warnings.

    Raises :class:`~meshlab.errors.BadRequest` for a body that is not an object, a mismatched
    ``apiVersion``/``kind`` or unknown fields under ``Strict``, and :class:`~meshlab.errors.Invalid` (422)
    for everything else, one cause per bad field.
    """
    if field_validation not in FIELD_VALIDATION:
        raise BadRequest(f'invalid fieldValidation directive "{field_validation}": '
                         "must be one of Ignore, Warn or Strict")
    if not isinstance(obj, dict):
        raise BadRequest(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: "
                         f"json: cannot unmarshal {type(obj).__name__} into Go value of type {rt.kind}")
    _check_type_meta(rt, obj)
    decoder = Decoder(schemas.defs)
    root = schemas.root_schema(rt)
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if root is None or (rt.is_custom and not root):
        out = body  # no schema to hold it against (a CRD version without one): stored as sent
        out["metadata"] = _decoded_metadata(decoder, body.get("metadata"))
    elif rt.is_custom:
        out = decoder.structural(body, root, root=True)
    else:
        out = decoder.decode(body, {**root, "properties": {
            k: v for k, v in root.get("properties", {}).items() if k not in ("apiVersion", "kind")}})
    if out is DROP or not isinstance(out, dict):
        out = {}
    warnings = [f'unknown field "{path}"' for path in decoder.unknown]
    if warnings and field_validation == "Strict":
        raise BadRequest("strict decoding error: " + ", ".join(warnings))
    if field_validation == "Ignore":
        warnings = []
    result: dict[str, Any] = {"apiVersion": rt.api_version, "kind": rt.kind, **out}
    result.setdefault("metadata", {})
    if not rt.namespaced:
        result["metadata"].pop("namespace", None)  # the real BeforeCreate clears it too
    if rt.kind == "Secret" and rt.group == "":
        _merge_string_data(result)
    default_in_place(rt, result)
    causes = _unique(validation.validate(rt, result) + decoder.causes)
    if causes:
        meta = result["metadata"]
        raise Invalid(rt.kind, meta.get("name") or meta.get("generateName") or "", causes, rt.group)
    return result, warnings


def _check_type_meta(rt: ResourceType, obj: Mapping[str, Any]) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version not in (None, "") and api_version != rt.api_version:
        raise BadRequest(f"the API version in the data ({api_version}) does not match the expected API "
                         f"version ({rt.api_version})")
    if kind not in (None, "") and kind != rt.kind:
        raise BadRequest(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")


def _decoded_metadata(decoder: Decoder, metadata: Any) -> Any:
    got = decoder.decode(metadata, {"$ref": _REF + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                         "metadata")
    return {} if got is DROP else got


def _merge_string_data(secret: dict[str, Any]) -> None:
    """``stringData`` is write-only: its entries are base64-encoded into ``data`` (and win over it)."""
    string_data = secret.pop("stringData", None)
    if not string_data:
        return
    data = secret.setdefault("data", {})
    for key, value in string_data.items():
        data[key] = base64.b64encode(value.encode()).decode()


def _unique(causes: list[Cause]) -> list[Cause]:
    seen: set[tuple[str, str]] = set()
    out = []
    for cause in causes:
        if (cause.field, cause.message) not in seen:
            seen.add((cause.field, cause.message))
            out.append(cause)
    return out
