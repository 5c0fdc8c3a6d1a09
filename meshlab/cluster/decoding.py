"""Decoding a request body against its schema: types checked, values normalised, unknown fields found.

Built-in kinds are held against the Kubernetes JSON schema the way a typed Go struct holds a JSON body:
``null`` leaves a field at its zero value (so it is omitted), integers must be whole and fit ``int32`` /
``int64`` (``3.0`` becomes ``3``), ``format: byte`` must be base64, quantities are parsed and re-printed in
canonical form (``cpu: 0.5`` -> ``"500m"``, ``1024Mi`` -> ``"1Gi"``), times are re-printed in UTC, and
fields the struct lacks are *unknown fields* (``fieldValidation`` decides whether that is an error, a
warning or silent; they are never stored). Custom resources are held against their CRD's structural
schema as ``apiextensions-apiserver`` does: unknown fields are pruned unless
``x-kubernetes-preserve-unknown-fields``, non-nullable ``null`` s are pruned, ``default`` s are applied, and
type, enum, pattern, bounds and list-type violations become causes worded like ``kube-openapi``'s
validator (``spec.replicas in body must be of type integer: "string"``). Wrong types are reported the same
way for built-ins (the real apiserver answers those with a 400 from its Go decoder instead). See
"Structural schema", "Pruning" and "Defaulting" in the CustomResourceDefinition documentation.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from meshlab.cluster import fielderrors as fe
from meshlab.errors import Cause

_REF = "#/$defs/"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
MICRO_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class _Drop:
    """Marks a value the decoder leaves out (``null`` on an omitempty field, a pruned field)."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()

# --- quantities (k8s.io/apimachinery/pkg/api/resource) ---------------------------------------------------

QUANTITY_REGEX = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {v: k for k, v in _DECIMAL.items()}


class QuantityError(ValueError):
    pass


def parse_quantity(text: str) -> tuple[Fraction, str]:
    """A quantity's exact value and its format: ``"binary"``, ``"decimal"`` or ``"exponent"``."""
    m = re.fullmatch(QUANTITY_REGEX[1:-1], text.strip())
    if not m:
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_REGEX}'")
    number, suffix = m.groups()
    try:
        amount = Fraction(Decimal(number))
    except (InvalidOperation, ValueError) as err:
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_REGEX}'") from err
    if suffix in _BINARY:
        return amount * 1024 ** _BINARY[suffix], "binary"
    if suffix in _DECIMAL:
        return amount * Fraction(10) ** _DECIMAL[suffix], "decimal"
    if re.fullmatch(r"[eE][-+]?[0-9]+", suffix) and abs(int(suffix[1:])) < 64:
        return amount * Fraction(10) ** int(suffix[1:]), "exponent"
    raise QuantityError("unable to parse quantity's suffix")


def canonical_quantity(text: str) -> str:
    """Re-print a quantity the way the apiserver stores it (``1000m`` -> ``1``, ``1024Mi`` -> ``1Gi``)."""
    value, fmt = parse_quantity(text)
    sign, value = ("-" if value < 0 else ""), abs(value)
    if fmt == "binary" and value >= 1024 and value.denominator == 1:
        n, power = int(value), 0
        while power < 6 and n % 1024 == 0:
            n, power = n // 1024, power + 1
        return f"{sign}{n}{['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'][power]}"
    # Decimal forms keep nano precision, rounding up, then use the largest exponent (multiple of 3) that
    # keeps the mantissa whole.
    n, exp = math.ceil(value * 10**9), -9
    if n == 0:
        return "0"
    while exp < 18 and n % 1000 == 0:
        n, exp = n // 1000, exp + 3
    if fmt == "exponent":
        return f"{sign}{n}" + (f"e{exp}" if exp else "")
    return f"{sign}{n}{_DECIMAL_SUFFIX[exp]}"


# --- the decoder ----------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _schema_kind(value: Any) -> str:
    """The OpenAPI type name kube-openapi reports for a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else {x for x in t if x != "null"}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class Decoder:
    """One body's trip through a schema: returns the normalised value and collects what went wrong.

    ``unknown`` lists unknown-field paths (``spec.template.spec.containers[0].foo``) and ``causes`` the 422
    causes, with field paths as Kubernetes writes them.
    """

    def __init__(self, defs: Mapping[str, Mapping[str, Any]]) -> None:
        self.defs = defs
        self.unknown: list[str] = []
        self.causes: list[Cause] = []

    # built-in kinds: what a typed Go struct accepts ---------------------------------------------------------

    def decode(self, value: Any, schema: Mapping[str, Any], path: str = "") -> Any:
        if isinstance(value, date):
            value = _yaml_time(value)  # YAML timestamps reach JSON as RFC 3339 strings
        ref = schema.get("$ref")
        if ref:
            name = ref[len(_REF):]
            if name in _SPECIAL:
                return _SPECIAL[name](self, value, path)
            schema = self.defs[name]
        if value is None:
            return DROP
        types = _types(schema)
        if "object" in types:
            return self._decode_object(value, schema, path)
        if "array" in types:
            if not isinstance(value, list):
                return self._schema_type_error(value, "array", path)
            items = schema.get("items") or {}
            out = []
            for i, item in enumerate(value):
                got = self.decode(item, items, f"{path}[{i}]")
                out.append(self._zero(items) if got is DROP else got)
            return out
        if "string" in types:
            if not isinstance(value, str):
                return self._schema_type_error(value, "string", path)
            if schema.get("format") == "byte":
                self._check_base64(value, path)
            return value
        if "integer" in types:
            number = _as_int(value)
            if number is None:
                return self._schema_type_error(value, "integer", path)
            low, high = _INT_RANGE.get(schema.get("format", "int64"), _INT_RANGE["int64"])
            if not low <= number <= high:
                word, bound = ("greater than or equal to", low) if number < low else \
                    ("less than or equal to", high)
                self.causes.append(fe.invalid(path, number, f"{path} in body should be {word} {bound}"))
                return DROP
            return number
        if "number" in types:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return self._schema_type_error(value, "number", path)
            return value
        if "boolean" in types:
            return value if isinstance(value, bool) else self._schema_type_error(value, "boolean", path)
        return value  # free-form JSON (apiextensions JSON, JSONSchemaPropsOrArray, ...)

    def _decode_object(self, value: Any, schema: Mapping[str, Any], path: str) -> Any:
        if not isinstance(value, dict):
            return self._schema_type_error(value, "object", path)
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is not None:
            out = {}
            for key, item in value.items():
                key = str(key)
                sub = props.get(key)
                if sub is None:
                    self.unknown.append(fe.child(path, key))
                    continue
                got = self.decode(item, sub, fe.child(path, key))
                if got is not DROP:
                    out[key] = got
            self._required(schema, value, out, path)
            return out
        if isinstance(extra, Mapping):
            # A Go map: a null value becomes the element's zero value; the key stays.
            out = {}
            for key, item in value.items():
                got = self.decode(item, extra, f"{path}[{key}]")
                out[str(key)] = self._zero(extra) if got is DROP else got
            return out
        return value  # map[string]interface{} / RawExtension / FieldsV1: stored as sent

    def _required(self, schema: Mapping[str, Any], sent: Mapping[str, Any], out: Mapping[str, Any],
                  path: str) -> None:
        # A field sent with the wrong type has its own cause already; it is not missing as well.
        for key in schema.get("required") or ():
            if key not in out and sent.get(key) is None:
                self.causes.append(fe.required(fe.child(path, key)))

    def _zero(self, schema: Mapping[str, Any]) -> Any:
        ref = schema.get("$ref")
        if ref:
            name = ref[len(_REF):]
            if name in (QUANTITY, INT_OR_STRING):
                return "0" if name == QUANTITY else 0
            schema = self.defs.get(name, {})
        types = _types(schema)
        for t, zero in (("object", {}), ("array", []), ("string", ""), ("integer", 0), ("number", 0),
                        ("boolean", False)):
            if t in types:
                return copy.copy(zero)
        return None

    def _check_base64(self, value: str, path: str) -> None:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
            bad = next((i for i, ch in enumerate(value) if ch not in alphabet), len(value) - len(value) % 4)
            self.causes.append(fe.invalid(path, value, f"illegal base64 data at input byte {bad}"))

    def _quantity(self, value: Any, path: str) -> Any:
        if value is None:
            return DROP
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return self._schema_type_error(value, "string", path)
        text = value if isinstance(value, str) else _number_text(value)
        try:
            return canonical_quantity(text)
        except QuantityError as err:
            self.causes.append(fe.invalid(path, value, str(err)))
            return DROP

    def _int_or_string(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, str):
            return DROP if value is None else value
        number = _as_int(value)
        if number is None:
            return self._schema_type_error(value, "integer,string", path)
        if not -(2**31) <= number < 2**31:
            self.causes.append(fe.invalid(path, number, f"{path} in body should fit in an int32"))
            return DROP
        return number

    def _time(self, value: Any, path: str, micro: bool = False) -> Any:
        if isinstance(value, date):
            value = _yaml_time(value)
        if value is None:
            return DROP
        if not isinstance(value, str):
            return self._schema_type_error(value, "string", path)
        if _RFC3339.fullmatch(value):
            try:
                when = datetime.fromisoformat(value.upper()).astimezone(UTC)
                return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                pass
        detail = f"{path} in body must be of type date-time: {fe.go_value(value)}"
        self.causes.append(fe.invalid(path, value, detail))
        return DROP

    # custom resources: structural schemas -------------------------------------------------------------------

    def structural(self, value: Any, schema: Mapping[str, Any], path: str = "", *, root: bool = False,
                   check_only: bool = False) -> Any:
        """Prune, default and validate ``value`` against a CRD's OpenAPI v3 (structural) schema."""
        if value is None:
            return None if schema.get("nullable") else DROP
        t = schema.get("type")
        if schema.get("x-kubernetes-int-or-string"):
            number = _as_int(value)
            if number is None and not isinstance(value, str):
                return self._schema_type_error(value, "integer,string", path)
            value = value if isinstance(value, str) else number
        elif t == "object" or (t is None and isinstance(value, dict) and "properties" in schema):
            if not isinstance(value, dict):
                return self._schema_type_error(value, "object", path)
            value = self._structural_object(value, schema, path, root=root, check_only=check_only)
        elif t == "array":
            if not isinstance(value, list):
                return self._schema_type_error(value, "array", path)
            value = self._structural_array(value, schema, path, check_only)
        elif t in ("string", "integer", "number", "boolean"):
            value = self._structural_scalar(value, t, path)
            if value is DROP:
                return DROP
        self._value_checks(value, schema, path)
        return value

    def _structural_object(self, value: dict[str, Any], schema: Mapping[str, Any], path: str, *, root: bool,
                           check_only: bool) -> dict[str, Any]:
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or extra is True
        resource = root or bool(schema.get("x-kubernetes-embedded-resource"))
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = fe.child(path, key)
            if resource and key in ("apiVersion", "kind") and key not in props:
                got = item if isinstance(item, str) else self._schema_type_error(item, "string", where)
            elif resource and key == "metadata":
                got = self.decode(item, {"$ref": _REF + OBJECT_META}, where)
            elif key in props:
                got = self.structural(item, props[key], where, check_only=check_only)
            elif isinstance(extra, Mapping):
                got = self.structural(item, extra, where, check_only=check_only)
            elif keep_unknown:
                got = item
            else:
                if not check_only:
                    self.unknown.append(where)
                continue
            if got is not DROP:
                out[key] = got
        for key, sub in props.items():
            if key not in out and "default" in sub:
                default = copy.deepcopy(sub["default"])
                got = self.structural(default, sub, fe.child(path, key), check_only=True)
                if got is not DROP:
                    out[key] = got
        self._required(schema, value, out, path)
        if schema.get("x-kubernetes-embedded-resource"):
            for key in ("apiVersion", "kind"):
                if not out.get(key):
                    self.causes.append(fe.required(fe.child(path, key), "must not be empty"))
        count = len(out)
        if "maxProperties" in schema and count > schema["maxProperties"]:
            self.causes.append(fe.too_many(path, count, schema["maxProperties"]))
        if "minProperties" in schema and count < schema["minProperties"]:
            self.causes.append(fe.invalid(
                path, count, f"{path} in body should have at least {schema['minProperties']} properties"))
        return out

    def _structural_array(self, value: list[Any], schema: Mapping[str, Any], path: str,
                          check_only: bool) -> list[Any]:
        items = schema.get("items") or {}
        out = []
        for i, item in enumerate(value):
            got = self.structural(item, items, f"{path}[{i}]", check_only=check_only)
            if got is DROP:
                self._schema_type_error(None, items.get("type", "object"), f"{path}[{i}]")
                continue
            out.append(got)
        if "maxItems" in schema and len(out) > schema["maxItems"]:
            self.causes.append(fe.too_many(path, len(out), schema["maxItems"]))
        if "minItems" in schema and len(out) < schema["minItems"]:
            self.causes.append(fe.invalid(
                path, len(out), f"{path} in body should have at least {schema['minItems']} items"))
        list_type = schema.get("x-kubernetes-list-type")
        if list_type in ("set", "map"):
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen: set[str] = set()
            for i, item in enumerate(out):
                ident = item if list_type == "set" or not isinstance(item, dict) else \
                    {k: item.get(k) for k in keys}
                marker = repr(ident)
                if marker in seen:
                    self.causes.append(fe.duplicate(f"{path}[{i}]", ident))
                seen.add(marker)
        return out

    def _structural_scalar(self, value: Any, t: str, path: str) -> Any:
        if t == "string" and isinstance(value, str):
            return value
        if t == "integer" and _as_int(value) is not None:
            return _as_int(value)
        if t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if t == "boolean" and isinstance(value, bool):
            return value
        return self._schema_type_error(value, t, path)

    def _schema_type_error(self, value: Any, expected: str, path: str) -> Any:
        actual = _schema_kind(value)
        detail = f'{path} in body must be of type {expected}: "{actual}"'
        self.causes.append(fe.type_invalid(path, actual, detail))
        return DROP

    def _value_checks(self, value: Any, schema: Mapping[str, Any], path: str) -> None:
        causes = self.causes
        if "enum" in schema and value not in schema["enum"]:
            causes.append(fe.not_supported(path, value, schema["enum"]))
        if isinstance(value, str):
            pattern = schema.get("pattern")
            if pattern and not _search(pattern, value):
                causes.append(fe.invalid(path, value, f"{path} in body should match '{pattern}'"))
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                causes.append(fe.too_long(path, schema["maxLength"]))
            if "minLength" in schema and len(value) < schema["minLength"]:
                causes.append(fe.invalid(
                    path, value, f"{path} in body should be at least {schema['minLength']} chars long"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            causes.extend(_bound_checks(value, schema, path))
        elif isinstance(value, dict) and schema.get("type") is None and "properties" not in schema:
            # A bare ``{required: [...]}`` (the usual oneOf/anyOf branch: "exactly one of exact, prefix, regex")
            # has no object schema of its own to check its keys with.
            causes.extend(fe.required(fe.child(path, key)) for key in schema.get("required") or () if key not in value)
        for sub in schema.get("allOf") or ():
            causes.extend(self._check(value, sub, path))
        if schema.get("anyOf") and all(self._check(value, s, path) for s in schema["anyOf"]):
            causes.append(fe.invalid(
                path, value, f"{path} in body must validate at least one schema (anyOf)"))
        if schema.get("oneOf") and sum(not self._check(value, s, path) for s in schema["oneOf"]) != 1:
            causes.append(fe.invalid(
                path, value, f"{path} in body must validate one and only one schema (oneOf)"))
        if "not" in schema and not self._check(value, schema["not"], path):
            causes.append(fe.invalid(path, value, f"{path} in body must not validate the schema (not)"))

    def _check(self, value: Any, schema: Mapping[str, Any], path: str) -> list[Cause]:
        probe = Decoder(self.defs)
        probe.structural(copy.deepcopy(value), schema, path, check_only=True)
        return probe.causes


def _bound_checks(value: float, schema: Mapping[str, Any], path: str) -> list[Cause]:
    out = []
    if "minimum" in schema:
        low, strict = schema["minimum"], bool(schema.get("exclusiveMinimum"))
        if value < low or (strict and value == low):
            word = "greater than" if strict else "greater than or equal to"
            out.append(fe.invalid(path, value, f"{path} in body should be {word} {fe.go_value(low)}"))
    if "maximum" in schema:
        high, strict = schema["maximum"], bool(schema.get("exclusiveMaximum"))
        if value > high or (strict and value == high):
            word = "less than" if strict else "less than or equal to"
            out.append(fe.invalid(path, value, f"{path} in body should be {word} {fe.go_value(high)}"))
    step = schema.get("multipleOf")
    if step and Fraction(str(value)) % Fraction(str(step)) != 0:
        out.append(fe.invalid(path, value, f"{path} in body should be a multiple of {fe.go_value(step)}"))
    return out


def _search(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return True  # a pattern Python cannot compile is the CRD author's problem, not the object's


def _number_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).lower() if isinstance(value, bool) else repr(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _yaml_time(value: date) -> str:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


_SPECIAL: dict[str, Any] = {
    QUANTITY: Decoder._quantity,
    INT_OR_STRING: Decoder._int_or_string,
    TIME: Decoder._time,
    MICRO_TIME: lambda self, value, path: Decoder._time(self, value, path, micro=True),
}
