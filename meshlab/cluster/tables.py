"""Server-side printing: answering ``kubectl get`` with a ``meta.k8s.io/v1`` ``Table``.

kubectl asks for a table in its ``Accept`` header (``application/json;as=Table;v=v1;g=meta.k8s.io,
application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json``) and prints whatever columns the
server returns (Kubernetes API concepts, "Receiving resources as Tables"). The answer is ``{kind: Table,
apiVersion: meta.k8s.io/v1, metadata: {resourceVersion, continue}, columnDefinitions: [{name, type, format,
description, priority}], rows: [{cells, conditions?, object}]}``. Built-in kinds use the columns of
:mod:`meshlab.cluster.printers`; custom resources use their CRD's ``additionalPrinterColumns`` after a NAME
column, each cell the first match of a simple JSONPath converted to the column's type (a ``date`` becomes an
age), or a lone AGE column when the CRD declares none (apiextensions-apiserver's ``tableconvertor``). Each
row embeds the object as the ``includeObject`` query parameter asks: ``Metadata`` (kubectl's default) sends a
``PartialObjectMetadata`` -- enough for ``--show-labels`` and the NAMESPACE column of ``-A`` -- ``Object``
the full object, ``None`` nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from meshlab.cluster.cells import Cells, Obj, age, as_dict, as_int, human_duration, meta, name_of, parse_time
from meshlab.cluster.printers import AGE, BUILTIN_PRINTERS, NAME, Column, Printer, pod_status_reason
from meshlab.cluster.resources import ResourceType
from meshlab.errors import BadRequest

__all__ = ["parse_json_path", "parse_table_accept", "pod_status_reason", "printer_for", "to_table"]

TABLE_GROUP_VERSION = "meta.k8s.io/v1"
_TABLE_VERSIONS = ("v1", "v1beta1")
_SERVABLE = ("application/json", "application/yaml", "application/*", "*/*")


def parse_table_accept(accept: str | None) -> bool:
    """True when the most preferred media range we can serve asks for ``as=Table`` (v1 or v1beta1).

    Ranges are ordered as the apiserver's negotiation does: by ``q`` (highest first), then concrete types
    before wildcards, otherwise in the client's order. A range with another ``as=`` (or a Table of another
    group/version) is skipped, as the server skips options it does not support.
    """
    clauses: list[tuple[float, int, int, str, dict[str, str]]] = []
    for index, part in enumerate((accept or "").split(",")):
        media, *raw_params = (piece.strip() for piece in part.split(";"))
        params = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        media = media.lower()
        if q <= 0 or media not in _SERVABLE:
            continue
        wildcards = media.count("*")
        clauses.append((-q, wildcards, index, media, params))
    for _, _, _, media, params in sorted(clauses):
        wanted = params.get("as")
        if wanted is None:
            return False
        if (wanted == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in _TABLE_VERSIONS
                and media != "application/yaml"):
            return True
    return False


def to_table(rt: ResourceType, objects: list[dict[str, Any]], *, now: datetime,
             include_object: str = "Metadata", resource_version: str = "",
             continue_token: str = "") -> dict[str, Any]:
    """The ``Table`` kubectl prints for ``objects`` of kind ``rt`` (a list, or one object for a get)."""
    if include_object not in ("", "Metadata", "Object", "None"):
        raise BadRequest(f'unrecognized includeObject value: "{include_object}"')
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    printer = printer_for(rt)
    rows = []
    for obj in objects:
        obj = obj if isinstance(obj, dict) else {}
        row: dict[str, Any] = {"cells": printer.cells(obj, now)}
        conditions = printer.conditions(obj) if printer.conditions else []
        if conditions:
            row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = {"apiVersion": rt.api_version, "kind": rt.kind, **obj}
        elif include_object != "None":
            row["object"] = {"apiVersion": TABLE_GROUP_VERSION, "kind": "PartialObjectMetadata",
                             "metadata": meta(obj)}
        rows.append(row)
    metadata: dict[str, str] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    return {"kind": "Table", "apiVersion": TABLE_GROUP_VERSION, "metadata": metadata,
            "columnDefinitions": [c.definition() for c in printer.columns], "rows": rows}


def printer_for(rt: ResourceType) -> Printer:
    """The built-in printer of ``rt``'s kind, else one made from its printer columns (or NAME, AGE)."""
    if not rt.is_custom:
        builtin = BUILTIN_PRINTERS.get((rt.group, rt.kind))
        if builtin is not None:
            return builtin
    if not rt.printer_columns:
        # What a CRD without additionalPrinterColumns serves; also used for kinds with no printer.
        return Printer((NAME, Column("Age", "date", description=AGE.description)), _name_and_age)
    columns, readers = [NAME], []
    for spec in rt.printer_columns:
        column = _custom_column(spec if isinstance(spec, dict) else {})
        columns.append(column)
        readers.append(_column_reader(column.type, as_dict(spec).get("jsonPath")))

    def cells(obj: Obj, now: datetime) -> Cells:
        return [name_of(obj), *(read(obj, now) for read in readers)]

    return Printer(tuple(columns), cells)


def _name_and_age(obj: Obj, now: datetime) -> Cells:
    return [name_of(obj), age(obj, now)]


def _custom_column(spec: Obj) -> Column:
    path = spec.get("jsonPath")
    description = spec.get("description") or f"Custom resource definition column (in JSONPath format): {path}"
    return Column(str(spec.get("name", "")), str(spec.get("type", "string")),
                  priority=as_int(spec.get("priority")), format=str(spec.get("format") or ""),
                  description=str(description))


def _column_reader(kind: str, path: Any) -> Callable[[Obj, datetime], Any]:
    steps = parse_json_path(path) if isinstance(path, str) else None

    def read(obj: Obj, now: datetime) -> Any:
        if steps is None:
            return None
        found = _evaluate(steps, [obj])
        return _typed_cell(kind, found[0], now) if found else None

    return read


# --- the JSONPath subset printer columns use -----------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """``field`` (``.name``/``['name']``), ``index`` (``[0]``), ``all`` (``[*]``/``.*``), ``filter``."""

    kind: str
    key: str | int = ""
    path: tuple[Step, ...] = ()  # a filter's ``@...`` path
    op: str = ""  # a filter's operator; "" tests existence
    literal: Any = None


_FILTER = re.compile(r"@(?P<path>[^=!<>]*?)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<literal>.+?))?\s*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")


def parse_json_path(text: str) -> tuple[Step, ...] | None:
    """Parse ``.spec.x``, ``.items[0]``, ``.a['b.c']``, ``.conds[?(@.type=="Ready")].status``; else None."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[Step] = []
    i = 0
    while i < len(text):
        if text[i] == ".":
            i += 1
            if text[i:i + 1] == "*":
                steps.append(Step("all"))
                i += 1
                continue
            name = []
            while i < len(text) and text[i] not in ".[":
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1  # "\." keeps a dot inside a key such as app\.kubernetes\.io/name
                name.append(text[i])
                i += 1
            if not name:
                return None
            steps.append(Step("field", "".join(name)))
        elif text[i] == "[":
            end = _closing_bracket(text, i)
            if end < 0:
                return None
            step = _bracket_step(text[i + 1:end].strip())
            if step is None:
                return None
            steps.append(step)
            i = end + 1
        else:
            return None
    return tuple(steps)


def _closing_bracket(text: str, start: int) -> int:
    quote = ""
    for i in range(start + 1, len(text)):
        char = text[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "]":
            return i
    return -1


def _bracket_step(inner: str) -> Step | None:
    if inner == "*":
        return Step("all")
    if re.fullmatch(r"-?\d+", inner):
        return Step("index", int(inner))
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return Step("field", inner[1:-1])
    if not (inner.startswith("?(") and inner.endswith(")")):
        return None
    match = _FILTER.fullmatch(inner[2:-1].strip())
    path = parse_json_path(match.group("path")) if match else None
    if match is None or path is None:
        return None
    literal: Any = None
    raw = match.group("literal")
    if raw is not None:
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            literal = raw[1:-1]
        elif raw in ("true", "false"):
            literal = raw == "true"
        elif _NUMBER.fullmatch(raw):
            literal = float(raw) if any(c in raw for c in ".eE") else int(raw)
        else:
            return None
    return Step("filter", path=path, op=match.group("op") or "", literal=literal)


def _evaluate(steps: tuple[Step, ...], values: list[Any]) -> list[Any]:
    for step in steps:
        found: list[Any] = []
        for value in values:
            if step.kind == "field" and isinstance(value, dict) and step.key in value:
                found.append(value[step.key])
            elif step.kind == "index" and isinstance(value, list) and isinstance(step.key, int):
                if -len(value) <= step.key < len(value):
                    found.append(value[step.key])
            elif step.kind == "all" and isinstance(value, dict):
                found += [value[k] for k in sorted(value, key=str)]
            elif step.kind == "all" and isinstance(value, list):
                found += value
            elif step.kind == "filter" and isinstance(value, list):
                found += [item for item in value if _passes(step, item)]
        values = found
    return values


def _passes(step: Step, item: Any) -> bool:
    lefts = _evaluate(step.path, [item])
    if not step.op or not lefts:
        return bool(lefts) if not step.op else False
    left, right = lefts[0], step.literal
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
    if not numbers and type(left) is not type(right):
        return False  # Go refuses to compare different types; such an item never matches
    if step.op in ("==", "!="):
        return (left == right) == (step.op == "==")
    if not (numbers or isinstance(left, str)):
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[step.op]


def _typed_cell(kind: str, value: Any, now: datetime) -> Any:
    """Convert one JSONPath result to the column's type, as ``cellForJSONValue`` does; None otherwise."""
    if value is None:
        # A JSON null: client-go's JSONPath prints an invalid value as text/template does.
        return "<no value>" if kind == "string" else None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return _go_text(value)
    if kind == "integer" and is_number and math.isfinite(value):
        return int(value)
    if kind == "number" and is_number:
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        then = parse_time(value)
        if then is None:
            return "<unknown>" if value.startswith("0001-01-01") else "<invalid>"
        return human_duration(now - then)
    return None


def _go_text(value: Any) -> str:
    """How client-go's JSONPath prints a value: strings raw, numbers like Go's %v, objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent form below 1e-4 and from 1e6 up (``1e+06``)."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = "".join(map(str, digits))
    point = len(mantissa) + exponent  # position of the decimal point after the first digit run
    prefix = "-" if sign else ""
    if -4 <= point - 1 < 6:
        if point <= 0:
            return f"{prefix}0.{'0' * -point}{mantissa}"
        if point >= len(mantissa):
            return f"{prefix}{mantissa}{'0' * (point - len(mantissa))}"
        return f"{prefix}{mantissa[:point]}.{mantissa[point:]}"
    head = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    power = point - 1
    return f"{prefix}{head}e{'-' if power < 0 else '+'}{abs(power):02d}"
