"""Formatting one table cell the way the apiserver's printers do, from objects that may be odd.

Kubernetes' printers (``pkg/printers/internalversion/printers.go`` and the apimachinery helpers they call)
fix the text of every cell: ages use ``duration.HumanDuration`` -- about two significant figures, ``45s``,
``5m2s``, ``3h4m``, ``2d3h``, ``45d``, ``2y10d`` -- computed from ``now - timestamp``; label maps print as
``a=1,b=2`` (``<none>`` when empty); label selectors as ``app=web,tier in (a,b),!canary``; quantities in
their canonical form (``1024Mi`` is ``1Gi``); access modes as ``RWO,ROX,RWX,RWOP`` in that fixed order.
Objects come in as plain dicts and may have missing fields or wrong types: every accessor here returns a
neutral value instead of raising, because a printer must always print something.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from math import ceil
from typing import Any

Cells = list[Any]
Obj = dict[str, Any]

# --- tolerant accessors: stored objects are validated, but a printer must never raise -------------------

def as_dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def dicts(value: Any) -> list[Obj]:
    return [item for item in as_list(value) if isinstance(item, dict)]


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_bool(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def meta(obj: Obj) -> Obj:
    return as_dict(obj.get("metadata"))


def name_of(obj: Obj) -> str:
    return as_str(meta(obj).get("name"))


# --- time ---------------------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 ``metav1.Time`` or ``MicroTime``; ``None`` when absent, bad or Go's zero time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return None if parsed.year <= 1 else parsed


def human_duration(delta: timedelta) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration``: ~2-3 significant figures."""
    micros = delta // timedelta(microseconds=1)
    # Go truncates toward zero; up to one second in the future still reads "0s" (clock skew).
    seconds = micros // 1_000_000 if micros >= 0 else -(-micros // 1_000_000)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 10:
        return _two_units(minutes, "m", seconds % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return _two_units(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _two_units(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _two_units(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _two_units(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}" if small == 0 else f"{big}{big_unit}{small}{small_unit}"


def since(value: Any, now: datetime) -> str:
    """``translateTimestampSince``: the age of a timestamp, ``<unknown>`` when it is unset."""
    then = parse_time(value)
    return "<unknown>" if then is None else human_duration(now - then)


def age(obj: Obj, now: datetime) -> str:
    return since(meta(obj).get("creationTimestamp"), now)


# --- shared formatting ----------------------------------------------------------------------------------

def format_labels(labels: Any) -> str:
    """``labels.FormatLabels``: ``a=1,b=2`` sorted by key, ``<none>`` when empty."""
    pairs = [f"{k}={as_str(v)}" for k, v in sorted(as_dict(labels).items())]
    return ",".join(pairs) or "<none>"


def selector_string(selector: Any) -> str | None:
    """A ``metav1.LabelSelector`` as ``LabelSelectorAsSelector(...).String()``; ``None`` when invalid."""
    sel = as_dict(selector)
    requirements = [(k, f"{k}={as_str(v)}") for k, v in as_dict(sel.get("matchLabels")).items()]
    for expr in as_list(sel.get("matchExpressions")):
        if not isinstance(expr, dict):
            return None
        key, op = as_str(expr.get("key")), expr.get("operator")
        values = sorted(as_str(v) for v in as_list(expr.get("values")))
        if op in ("In", "NotIn") and values:
            requirements.append((key, f"{key} {op.lower()} ({','.join(values)})"))
        elif op == "Exists" and not values:
            requirements.append((key, key))
        elif op == "DoesNotExist" and not values:
            requirements.append((key, "!" + key))
        else:
            return None
    requirements.sort(key=lambda r: r[0])
    return ",".join(text for _, text in requirements)


def format_label_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: as above, with ``<none>`` for empty and ``<error>`` for invalid."""
    text = selector_string(selector)
    return "<error>" if text is None else (text or "<none>")


def list_with_more(items: list[str], total: int, limit: int = 3) -> str:
    """The first ``limit`` items, then `` + N more...`` (ENDPOINTS, PORTS)."""
    text = ",".join(items[:limit])
    return f"{text} + {total - limit} more..." if total > limit else text


def host_port(ip: str, port: int) -> str:
    """``net.JoinHostPort``: IPv6 addresses get brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def or_unset(value: Any) -> str:
    """An optional string field: ``<unset>`` when the field is absent."""
    return as_str(value) if value is not None else "<unset>"


def container_cells(pod_spec: Any) -> Cells:
    """The wide CONTAINERS and IMAGES cells: names and images joined by commas."""
    containers = dicts(as_dict(pod_spec).get("containers"))
    return [",".join(as_str(c.get("name")) for c in containers),
            ",".join(as_str(c.get("image")) for c in containers)]


def template_spec(obj: Obj) -> Obj:
    return as_dict(as_dict(as_dict(obj.get("spec")).get("template")).get("spec"))


_ACCESS_MODES = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
                 ("ReadWriteOncePod", "RWOP"))


def access_modes(modes: Any) -> str:
    """Always in the order RWO,ROX,RWX,RWOP whatever order the object lists them in."""
    present = set(as_str(m) for m in as_list(modes))
    return ",".join(short for mode, short in _ACCESS_MODES if mode in present)


_QUANTITY = re.compile(r"([+-]?)(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exp: suffix for suffix, exp in _DECIMAL.items()}


def quantity(value: Any) -> str:
    """A ``resource.Quantity`` in canonical form, as ``Quantity.String()`` prints it.

    ``1024Mi`` -> ``1Gi``, ``1536Mi`` stays, ``0.5Gi`` -> ``512Mi``, ``1000`` -> ``1k``, ``0.1`` -> ``100m``.
    Binary suffixes are kept for whole numbers of at least 1024; everything else becomes decimal SI with an
    exponent that is a multiple of three. Unset is ``0``; unparsable text is shown as it is.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return "0"
    match = _QUANTITY.fullmatch(value.strip())
    if not match:
        return value
    sign, number, suffix = match.group(1), match.group(2), match.group(3) or ""
    try:
        amount = Fraction(Decimal(number))
    except (InvalidOperation, ValueError):
        return value
    if suffix[:1] in ("e", "E"):
        exponent = int(suffix[1:])
        if abs(exponent) > 60:  # far beyond any real size; don't build enormous integers
            return value
        amount *= Fraction(10) ** exponent
    elif suffix in _BINARY:
        amount *= 1024 ** _BINARY.index(suffix)
    else:
        amount *= Fraction(10) ** _DECIMAL[suffix]
    if amount == 0:
        return "0"
    prefix = "-" if sign == "-" else ""
    if suffix in _BINARY[1:] and amount >= 1024 and amount.denominator == 1:
        whole, power = int(amount), 0
        while power < 6 and whole % 1024 == 0:
            whole, power = whole // 1024, power + 1
        return f"{prefix}{whole}{_BINARY[power]}"
    nanos = ceil(amount * 10**9)  # Go rounds anything finer than a nano up to 1n
    exponent = -9
    while nanos % 10 == 0:
        nanos, exponent = nanos // 10, exponent + 1
    aligned = exponent // 3 * 3
    scientific = suffix[:1] in ("e", "E")
    if not scientific:
        aligned = min(aligned, 18)
    mantissa = nanos * 10 ** (exponent - aligned)
    unit = (f"e{aligned}" if aligned else "") if scientific else _DECIMAL_SUFFIX[aligned]
    return f"{prefix}{mantissa}{unit}"
