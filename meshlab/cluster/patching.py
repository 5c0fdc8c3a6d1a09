"""The three patch formats of ``PATCH`` — JSON patch, JSON merge patch and strategic merge patch.

A JSON patch (RFC 6902, ``application/json-patch+json``) is a list of operations on JSON pointers; a merge
patch (RFC 7386, ``application/merge-patch+json``) is a partial object where ``null`` deletes. A strategic
merge patch (``application/strategic-merge-patch+json``, what ``kubectl apply`` and ``kubectl patch`` send
for built-in kinds) is a merge patch that reads the schema: lists marked ``x-kubernetes-patch-strategy:
merge`` are merged item by item on their ``x-kubernetes-patch-merge-key`` (containers by ``name``, ports by
``containerPort``) instead of being replaced, and the patch may carry directives — ``$patch: replace |
delete`` on a map or list item, ``$deleteFromPrimitiveList/<field>``, ``$setElementOrder/<field>`` and
``$retainKeys`` — as documented in "Update API Objects in Place Using kubectl patch" and implemented by
``k8s.io/apimachinery/pkg/util/strategicpatch``; failures are answered with the status codes
``k8s.io/apiserver/pkg/endpoints/handlers/patch.go`` uses. Server-side apply lives in
:mod:`meshlab.cluster.applying` and is re-exported here. Every function is pure and never mutates its
arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

from meshlab import errors
from meshlab.cluster.applying import server_side_apply, track_update

__all__ = [
    "PatchNotApplied",
    "PatchSchema",
    "json_patch",
    "merge_patch",
    "server_side_apply",
    "strategic_merge_patch",
    "track_update",
]

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER = "$setElementOrder"
# What kube-apiserver answers (NewGenericServerResponse with 422) when a patch cannot be applied.
_REJECTED = "the server rejected our request due to an error in our request"


class PatchNotApplied(errors.Invalid):
    """422 Invalid, worded as kube-apiserver words it; ``detail`` keeps the real reason for logs."""

    def __init__(self, detail: str) -> None:
        errors.ApiError.__init__(self, _REJECTED, 422, "Invalid", {})
        self.causes = []
        self.detail = detail


class PatchSchema:
    """Navigates a Kubernetes JSON schema for patch decisions.

    ``node`` is one schema (a definition, a property, a CRD's ``openAPIV3Schema``); ``defs`` maps names to
    definitions for ``{"$ref": "#/$defs/<name>"}``. ``PatchSchema(None, {})`` means "no schema": maps merge,
    lists are replaced whole.
    """

    __slots__ = ("_defs", "_node", "_root", "builtin")

    def __init__(
        self, node: Mapping[str, Any] | None, defs: Mapping[str, Mapping[str, Any]], *, _root: bool = True
    ) -> None:
        self._defs = defs
        self._root = _root
        resolved, via_ref = _resolve(node, defs)
        self._node: Mapping[str, Any] | None = resolved if isinstance(node, Mapping) else None
        # Built-in kinds come from Go structs (reached through $ref); custom resources are unstructured.
        # Server-side apply records ownership slightly differently for the two (see applying._compare).
        self.builtin = via_ref or bool(resolved and "x-kubernetes-group-version-kind" in resolved)

    def _child(self, node: Any) -> PatchSchema:
        child = PatchSchema(node if isinstance(node, Mapping) else None, self._defs, _root=False)
        child.builtin = child.builtin or self.builtin
        return child

    @property
    def node(self) -> Mapping[str, Any] | None:
        """The resolved schema (``$ref`` and ``allOf`` folded in), or None when nothing is known."""
        return self._node

    @property
    def known(self) -> bool:
        return self._node is not None

    def _get(self, key: str) -> Any:
        return self._node.get(key) if self._node is not None else None

    def declares(self, name: str) -> bool:
        """Whether ``name`` is a declared property (a struct field), not a key of a map."""
        props = self._get("properties")
        return isinstance(props, Mapping) and name in props

    def field(self, name: str) -> PatchSchema:
        props = self._get("properties")
        if isinstance(props, Mapping) and name in props:
            sub = props[name]
            # A CRD's schema rarely spells out metadata; the apiserver treats it as ObjectMeta anyway.
            if self._root and name == "metadata" and not _resolve(sub, self._defs)[0].get("properties"):
                if _OBJECT_META in self._defs:
                    sub = {"$ref": f"#/$defs/{_OBJECT_META}"}
            return self._child(sub)
        if self._root and name == "metadata" and _OBJECT_META in self._defs:
            return self._child({"$ref": f"#/$defs/{_OBJECT_META}"})
        extra = self._get("additionalProperties")
        if isinstance(extra, Mapping):
            return self._child(extra)
        return self._child(None)

    def items(self) -> PatchSchema:
        return self._child(self._get("items"))

    @property
    def merge_key(self) -> str | None:
        return self._get("x-kubernetes-patch-merge-key")

    @property
    def strategy(self) -> str | None:
        return self._get("x-kubernetes-patch-strategy")

    @property
    def list_type(self) -> str | None:
        return self._get("x-kubernetes-list-type")

    @property
    def list_map_keys(self) -> tuple[str, ...]:
        return tuple(self._get("x-kubernetes-list-map-keys") or ())

    @property
    def map_type(self) -> str | None:
        return self._get("x-kubernetes-map-type")

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self._get("required") or ())

    def strategies(self) -> tuple[str, ...]:
        return tuple(s for s in (self.strategy or "").split(",") if s)


def _resolve(node: Any, defs: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], bool]:
    """Fold ``$ref`` and ``allOf`` into one mapping; the referring node's own keys win (extensions)."""
    if not isinstance(node, Mapping):
        return {}, False
    out: dict[str, Any] = {}
    via_ref = False
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
        target, _ = _resolve(defs[ref[8:]], defs)
        out.update(target)
        via_ref = True
    for part in node.get("allOf") or ():
        sub, sub_ref = _resolve(part, defs)
        out.update(sub)
        via_ref = via_ref or sub_ref
    out.update((k, v) for k, v in node.items() if k not in ("$ref", "allOf"))
    return out, via_ref


# -- JSON patch (RFC 6902) ---------------------------------------------------------------------------


def json_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 6902 patch.

    A body that is not a list of objects is refused as kube-apiserver's strict decoder refuses it
    (:class:`~meshlab.errors.BadRequest`); an operation that cannot be applied — a failed ``test``, a
    missing path, an unknown ``op`` — gets kube-apiserver's generic 422 (:class:`PatchNotApplied`).
    """
    if not isinstance(patch, list):
        raise errors.BadRequest(
            f"error decoding patch: json: cannot unmarshal {_json_kind(patch)} into Go value of type "
            "[]handlers.jsonPatchOp"
        )
    for op in patch:
        if not isinstance(op, dict):
            raise errors.BadRequest(
                f"error decoding patch: json: cannot unmarshal {_json_kind(op)} into Go value of type "
                "handlers.jsonPatchOp"
            )
    try:
        result = jsonpatch.JsonPatch(patch).apply(obj, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
        raise PatchNotApplied(str(err)) from err
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        # An operation with a non-string path or similar nonsense: still the patch's fault, not ours.
        raise PatchNotApplied(f"invalid operation: {err}") from err
    if not isinstance(result, dict):
        raise errors.Invalid("", "", [errors.Cause(
            "patch", f"Invalid value: {json.dumps(result)}: json: cannot unmarshal {_json_kind(result)} "
                     "into Go value of type map[string]interface {}")])
    return result


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    return "number"


# -- JSON merge patch (RFC 7386) ---------------------------------------------------------------------


def merge_patch(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch: objects merge, ``null`` deletes, anything else replaces.

    Only an object is a patch for an object: ``null`` or any other JSON value raises
    :class:`~meshlab.errors.BadRequest`, as kube-apiserver answers.
    """
    if patch is None:
        raise errors.BadRequest("Invalid JSON Patch")
    if not isinstance(patch, dict):
        raise errors.BadRequest(
            f"error decoding patch: json: cannot unmarshal {_json_kind(patch)} into Go value of type "
            "map[string]interface {}"
        )
    result = _merge_value(obj, patch)
    assert isinstance(result, dict)
    return result


def _merge_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return _copy(patch)
    out = {k: _copy(v) for k, v in target.items()} if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_value(out.get(key), value)
    return out


def _copy(value: Any) -> Any:
    """A deep copy of plain JSON, much faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# -- strategic merge patch ---------------------------------------------------------------------------


def strategic_merge_patch(obj: dict[str, Any], patch: Any, schema: PatchSchema) -> dict[str, Any]:
    """Apply a strategic merge patch, reading list merge keys and strategies from ``schema``.

    Errors carry the status kube-apiserver gives them: a malformed directive (``$retainKeys`` not a list,
    a directive key without ``/<field>``) is :class:`~meshlab.errors.BadRequest`; a list of lists is
    :class:`PatchNotApplied` (422); anything else the strategicpatch package rejects — an unknown or
    ``merge`` ``$patch`` value, a list item without its merge key, ``$setElementOrder`` disagreeing with the
    patch — is passed through by kube-apiserver as a plain error, so it is
    :class:`~meshlab.errors.InternalError` (500) here too.
    """
    if not isinstance(patch, dict):
        raise errors.BadRequest(
            f"json: cannot unmarshal {_json_kind(patch)} into Go value of type map[string]interface {{}}"
        )
    merged = _merge_map(_copy(obj), _copy(patch), schema)
    return _without_directives(merged)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: PatchSchema) -> dict[str, Any]:
    """Merge ``patch`` into ``original`` (both private copies, consumed)."""
    if _DIRECTIVE in patch:
        directive = patch.pop(_DIRECTIVE)
        if directive == "replace":
            return _merge_map({}, patch, schema)  # the patch minus the directive; nested nulls dropped
        if directive == "delete":
            return {}
        raise _internal(f"unknown patch type: {directive} in map: {_show(patch)}")
    _apply_retain_keys(original, patch)
    _apply_set_element_order(original, patch, schema)
    # Deletion lists go last so that a list both added to and pruned ends up pruned.
    keys = sorted(patch, key=lambda k: k.startswith(_DELETE_FROM_PRIMITIVE_LIST))
    for key in keys:
        value = patch[key]
        is_delete_list = key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
        if is_delete_list:
            key = _directive_field(key, _DELETE_FROM_PRIMITIVE_LIST)
        field_schema = schema.field(key)
        if value is None:
            original.pop(key, None)
            continue
        if key not in original or _kind(original[key]) != _kind(value):
            if not is_delete_list:
                original[key] = _fresh(value, field_schema)
            continue
        current = original[key]
        if isinstance(current, dict):
            if "replace" in field_schema.strategies():
                original[key] = _fresh(value, field_schema)
            else:
                original[key] = _merge_map(current, value, field_schema)
        elif isinstance(current, list):
            original[key] = _merge_list(current, value, field_schema, is_delete_list)
        else:
            original[key] = value
    return original


def _fresh(value: Any, schema: PatchSchema) -> Any:
    """A patch value with nothing to merge into: directives still apply and nulls in maps vanish."""
    if isinstance(value, dict):
        return _merge_map({}, value, schema)
    if isinstance(value, list):
        return _merge_list([], value, schema, False)
    return value


def _merge_list(
    original: list[Any], patch: list[Any], schema: PatchSchema, is_delete_list: bool
) -> list[Any]:
    if "merge" not in schema.strategies():
        return patch  # lists without a merge strategy are replaced
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    merge_key = schema.merge_key or ""
    if kind != "object":
        if is_delete_list:
            doomed = {_scalar_id(v) for v in patch}
            return [v for v in original if _scalar_id(v) not in doomed]
        merged = _dedupe(original + patch)
    else:
        if not merge_key:
            raise _internal("cannot merge lists without merge key for type map")
        original, patch, replace = _special_items(original, patch, merge_key)
        if replace:
            original, patch = [_merge_map({}, item, schema.items()) for item in patch], []
        merged = _merge_items(original, patch, merge_key, schema.items())
    patch_items, server_only = _partition(merged, patch, merge_key if kind == "object" else "")
    return _normalize_order(patch_items, server_only, patch, original, merge_key if kind == "object" else "")


def _special_items(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any], bool]:
    """Handle list items carrying ``$patch``: return the new original, the ordinary patch items and
    whether ``$patch: replace`` asked for those items to replace the list."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if _DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            doomed = item[merge_key]
            original = [o for o in original if not (isinstance(o, dict) and _same(o.get(merge_key), doomed))]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise _internal("merging lists cannot yet be specified in the patch")
        else:
            raise _internal(f"unknown patch type: {directive} in map: {_show(item)}")
    return original, plain, replace


def _merge_items(
    original: list[Any], patch: list[Any], merge_key: str, item_schema: PatchSchema
) -> list[Any]:
    out = list(original)
    for item in patch:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        for index, existing in enumerate(out):
            if not isinstance(existing, dict):
                raise _internal(f"value for key {index} is not a map.")
            if merge_key in existing and _same(existing[merge_key], item[merge_key]):
                out[index] = _merge_map(existing, item, item_schema)
                break
        else:
            out.append(_merge_map({}, item, item_schema))
    return out


def _partition(items: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """Split ``items`` into those named in ``by`` (a patch or order list) and the server-only rest."""
    wanted = {_item_id(v, merge_key) for v in by if not merge_key or isinstance(v, dict)}
    inside: list[Any] = []
    outside: list[Any] = []
    for item in items:
        if merge_key and merge_key not in item:
            raise _no_merge_key(item, merge_key)
        (inside if _item_id(item, merge_key) in wanted else outside).append(item)
    return inside, outside


def _normalize_order(
    patch_items: list[Any], server_only: list[Any], patch_order: list[Any], server_order: list[Any],
    merge_key: str,
) -> list[Any]:
    """Order patch items as the patch (or ``$setElementOrder``) says and server-only items as the live
    list had them, then interleave the two keeping server-only items near their old neighbours."""
    def position(order: list[Any]) -> dict[Any, int]:
        seen: dict[Any, int] = {}
        for i, v in enumerate(order):
            if not merge_key or isinstance(v, dict):
                seen.setdefault(_item_id(v, merge_key), i)
        return seen

    in_patch, in_server = position(patch_order), position(server_order)
    left = sorted(server_only, key=lambda v: in_server.get(_item_id(v, merge_key), len(server_order)))
    right = sorted(patch_items, key=lambda v: in_patch.get(_item_id(v, merge_key), len(patch_order)))
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li = in_server.get(_item_id(left[i], merge_key), -1)
            ri = in_server.get(_item_id(right[j], merge_key), -1)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if _RETAIN_KEYS not in patch:
        return
    retained = patch.pop(_RETAIN_KEYS)
    if not isinstance(retained, list) or not all(isinstance(k, str) for k in retained):
        raise errors.BadRequest("invalid patch format of retainKeys")
    keep = set(retained)
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in keep:
            raise errors.BadRequest("invalid patch format of retainKeys")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _apply_set_element_order(original: dict[str, Any], patch: dict[str, Any], schema: PatchSchema) -> None:
    """Merge each list that has a ``$setElementOrder/<field>`` and order it as the directive says."""
    for directive_key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive_key)
        if not isinstance(order, list):
            raise _internal(f"expected a []interface {{}}, but received a {_json_kind(order)}")
        key = _directive_field(directive_key, _SET_ELEMENT_ORDER)
        in_original, in_patch = key in original, key in patch
        if not in_original and not in_patch:
            continue
        current = original.get(key, [])
        changes = patch.get(key, [])
        for value in (current, changes):
            if not isinstance(value, list):
                raise _internal(f"expected a []interface {{}}, but received a {_json_kind(value)}")
        field_schema = schema.field(key)
        merge_key = field_schema.merge_key or ""
        _check_order(changes, order, merge_key)
        merged = _merge_list(current, changes, field_schema, False) if in_patch else current
        if not current and not changes:
            original[key] = merged
            patch.pop(key, None)
            continue
        by_key = merge_key if _element_kind(current, changes) == "object" else ""
        inside, outside = _partition(merged, order, by_key)
        original[key] = _normalize_order(inside, outside, order, current, by_key)
        patch.pop(key, None)


def _check_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """The patch list's items must appear in ``$setElementOrder`` in the same relative order."""
    if not patch_list or not order:
        return
    items = patch_list
    if merge_key:
        items = [v for v in patch_list if not (isinstance(v, dict) and v.get(_DIRECTIVE) == "delete")]
    i = j = 0
    while i < len(items) and j < len(order):
        if isinstance(items[i], dict) and _DIRECTIVE in items[i]:
            i += 1
            continue
        if merge_key:
            for v in (items[i], order[j]):
                if not isinstance(v, dict):
                    raise _internal(f"expected a map[string]interface {{}}, but received a {_json_kind(v)}")
                if merge_key not in v:
                    raise _no_merge_key(v, merge_key)
            equal = _same(items[i][merge_key], order[j][merge_key])
        else:
            equal = _same(items[i], order[j])
        if equal:
            i += 1
        j += 1
    if i < len(items):
        raise _internal(
            f"The order in patch list:\n{_show(patch_list)}\n doesn't match {_SET_ELEMENT_ORDER} list:\n"
            f"{_show(order)}\n"
        )


def _directive_field(key: str, prefix: str) -> str:
    head, sep, rest = key.partition("/")
    if not sep or head != prefix:
        if prefix == _DELETE_FROM_PRIMITIVE_LIST:
            raise errors.BadRequest("invalid patch format of primitive list")
        raise errors.BadRequest("invalid patch format of setElementOrder list")
    return rest


def _without_directives(value: Any) -> Any:
    """Drop any directive left in values that were replaced whole: they must never be stored."""
    if isinstance(value, dict):
        return {
            k: _without_directives(v) for k, v in value.items()
            if k not in (_DIRECTIVE, _RETAIN_KEYS)
            and not k.startswith((_SET_ELEMENT_ORDER + "/", _DELETE_FROM_PRIMITIVE_LIST + "/"))
        }
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "scalar"


def _element_kind(*lists: list[Any]) -> str:
    """The one kind of element the lists hold; Go's strategicpatch refuses mixtures and lists of lists."""
    kinds = {_json_kind(v) for lst in lists for v in lst}
    if "array" in kinds:
        raise PatchNotApplied("lists of lists are not supported")
    if len(kinds) > 1:
        raise _internal(f"list element types are not identical: {_show(list(lists))}")
    return kinds.pop() if kinds else "object"


def _scalar_id(value: Any) -> tuple[str, Any]:
    # Python has 1 == 1.0 == True; JSON (and Go) keep numbers, booleans and strings apart.
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True))
    return (_json_kind(value), value)


def _item_id(item: Any, merge_key: str) -> tuple[str, Any]:
    return _scalar_id(item.get(merge_key) if merge_key and isinstance(item, dict) else item)


def _same(a: Any, b: Any) -> bool:
    return _scalar_id(a) == _scalar_id(b)


def _dedupe(values: list[Any]) -> list[Any]:
    seen: set[tuple[str, Any]] = set()
    out = []
    for v in values:
        if _scalar_id(v) not in seen:
            seen.add(_scalar_id(v))
            out.append(v)
    return out


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _no_merge_key(item: Any, merge_key: str) -> errors.ApiError:
    return _internal(f"map: {_show(item)} does not contain declared merge key: {merge_key}")


def _internal(message: str) -> errors.ApiError:
    # kube-apiserver hands these strategicpatch errors back unconverted, which makes them a 500.
    return errors.InternalError(message)
