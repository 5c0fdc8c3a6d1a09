"""Server-side apply and the field ownership it needs (``metadata.managedFields``).

Every write records which *manager* (``kubectl``, ``kubectl-client-side-apply``, a controller) set which
fields. An entry's ``fieldsV1`` is a tree of path elements — ``f:<field>`` for a struct field or map key,
``k:{"name":"web"}`` for an item of a list keyed by ``x-kubernetes-list-map-keys``, ``v:"x"`` for an
item of a set, and ``.`` for "the item itself". A server-side apply (``Content-Type:
application/apply-patch+yaml``) merges the applied configuration into the live object, removes what the
same manager applied last time and no longer applies (unless someone else also owns it), and refuses
with 409 ``Conflict`` to change a value another manager owns unless ``force=true`` transfers it. Plain
writes (operation ``Update``) take ownership of whatever they change. The rules and messages follow
kube-apiserver's field manager (``k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager``) over
``sigs.k8s.io/structured-merge-diff`` and the "Server-Side Apply" page of the Kubernetes documentation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from meshlab import errors

if TYPE_CHECKING:  # patching imports this module to re-export it; only the type is needed here
    from meshlab.cluster.patching import PatchSchema

Path = tuple[str, ...]
Identity = tuple[str, str, str, str]

_MISSING: Any = object()  # an absent field, as opposed to JSON null
_BEFORE_FIRST_APPLY = "before-first-apply"
# Fields the field manager never records as owned (its stripMeta step).
_STRIPPED = frozenset(
    [("f:apiVersion",), ("f:kind",), ("f:metadata",)]
    + [("f:metadata", f"f:{name}") for name in (
        "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
        "managedFields", "resourceVersion",
    )]
)
# kube-openapi declares `default: TCP` on port protocols, which are list-map keys; the JSON schemas
# meshlab loads drop defaults, so the one default that keys depend on is restated here.
_KEY_DEFAULTS = {"protocol": "TCP"}


@dataclass(frozen=True)
class _Manager:
    manager: str
    operation: str
    api_version: str
    subresource: str = ""
    time: str | None = None
    fields: frozenset[Path] = frozenset()

    @property
    def identity(self) -> Identity:
        # As kube's manager identifier: appliers keep one entry whatever version they apply.
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def describe(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


@dataclass
class _Diff:
    added: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)


def server_side_apply(
    live: dict[str, Any] | None, applied: dict[str, Any], *, manager: str, force: bool,
    schema: PatchSchema, now: str, subresource: str = "",
) -> dict[str, Any]:
    """Apply ``applied`` for ``manager`` to ``live`` (None creates); return the new object.

    Raises :class:`~meshlab.errors.Conflict` (409, one ``FieldManagerConflict`` cause per field) when
    the change would overwrite a value another manager owns and ``force`` is false;
    :class:`~meshlab.errors.BadRequest` when ``applied`` is not an object or carries ``managedFields``;
    :class:`~meshlab.errors.InternalError` when a keyed list item lacks its key (kube answers 500 too).
    """
    if not isinstance(applied, dict):
        raise errors.BadRequest("apply patches must be a single object")
    if isinstance(applied.get("metadata"), dict) and applied["metadata"].get("managedFields") is not None:
        raise errors.BadRequest("metadata.managedFields must be nil")
    api_version = str(applied.get("apiVersion") or (live or {}).get("apiVersion") or "")
    live_obj = _without_managed_fields(live) if live is not None else None
    before = _decode(live) if live is not None else {}
    managers = dict(before)
    if live_obj is not None and not managers:
        # An object nobody tracked yet: its existing fields belong to a placeholder manager.
        managers = _claim(managers, _compare(_MISSING, live_obj, schema), _BEFORE_FIRST_APPLY, "Update",
                          api_version, "", now)
    me = _Manager(manager, "Apply", api_version, subresource, now)
    previous = managers.get(me.identity)
    managers[me.identity] = replace(me, fields=frozenset(_field_set(applied, schema, strict=True)))

    merged = _merge(live_obj if live_obj is not None else _MISSING, applied, schema)
    if previous is not None and previous.fields:
        owned: set[Path] = set()
        for m in managers.values():
            owned |= _with_named_parents(m.fields, schema)
        doomed = _with_named_parents(previous.fields, schema) - owned
        if doomed:
            merged = _remove(merged, _trie(doomed), schema)
    if merged is _MISSING:
        merged = {}

    diff = _compare(live_obj if live_obj is not None else _MISSING, merged, schema)
    changed = diff.added | diff.modified
    conflicts = {
        ident: m.fields & changed
        for ident, m in managers.items()
        if ident != me.identity and m.fields & changed
    }
    if conflicts and not force:
        raise _conflict_error({managers[i]: paths for i, paths in conflicts.items()})
    for ident, m in list(managers.items()):
        if ident != me.identity:
            managers[ident] = replace(m, fields=m.fields - conflicts.get(ident, frozenset()) - diff.removed)
    managers = _tidy(managers)
    if live is not None and _same(merged, live_obj) and _fields_of(managers) == _fields_of(before):
        return _copy(live)  # a no-op apply changes nothing, not even the timestamp
    return _with_managed_fields(merged, managers)


def track_update(
    old: dict[str, Any] | None, new: dict[str, Any], *, manager: str, operation: str, now: str,
    schema: PatchSchema, subresource: str = "",
) -> dict[str, Any]:
    """Record a non-apply write of ``new`` over ``old`` (None on create) in ``managedFields``.

    The writer takes ownership of every field it added or changed, from whoever owned it before; fields
    it removed are no longer owned by anyone. ``managedFields`` sent in ``new`` replace the stored ones
    (``[{}]`` clears them), as in Kubernetes; an absent or empty list keeps the stored ones.
    """
    sent = (new.get("metadata") or {}).get("managedFields")
    if sent == [{}]:
        source: dict[str, Any] | None = None
    elif sent and _decode(new):
        source = new
    else:
        source = old
    before = _decode(source) if source is not None else {}
    old_obj = _without_managed_fields(old) if old is not None else _MISSING
    new_obj = _without_managed_fields(new)
    diff = _compare(old_obj, new_obj, schema)
    changed = diff.added | diff.modified
    managers = {i: replace(m, fields=m.fields - changed - diff.removed) for i, m in before.items()}
    managers = _claim(managers, diff, manager, operation, str(new.get("apiVersion") or ""), subresource, now)
    managers = _tidy(managers)
    if source is not None and _fields_of(managers) == _fields_of(before):
        out = _copy(new_obj)
        stored = (source.get("metadata") or {}).get("managedFields")
        if stored:
            out.setdefault("metadata", {})["managedFields"] = _copy(stored)
        return out
    return _with_managed_fields(new_obj, managers)


def _claim(
    managers: dict[Identity, _Manager], diff: _Diff, manager: str, operation: str, api_version: str,
    subresource: str, now: str,
) -> dict[Identity, _Manager]:
    gained = frozenset((diff.added | diff.modified) - _STRIPPED)
    if not gained:
        return managers
    me = _Manager(manager, operation, api_version, subresource, now)
    previous = managers.get(me.identity)
    out = dict(managers)
    out[me.identity] = replace(me, fields=gained | (previous.fields if previous else frozenset()))
    return out


def _tidy(managers: dict[Identity, _Manager]) -> dict[Identity, _Manager]:
    out = {}
    for ident, m in managers.items():
        fields = m.fields - _STRIPPED
        if fields:
            out[ident] = replace(m, fields=fields)
    return out


def _fields_of(managers: dict[Identity, _Manager]) -> dict[Identity, frozenset[Path]]:
    return {i: m.fields for i, m in managers.items()}


def _conflict_error(conflicts: dict[_Manager, frozenset[Path]]) -> errors.ApiError:
    pairs = sorted(((m.describe(), p) for m, paths in conflicts.items() for p in paths))
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": _path_string(p)}
        for who, p in pairs
    ]
    if len(pairs) == 1:
        who, path = pairs[0]
        message = f"Apply failed with 1 conflict: conflict with {who}: {_path_string(path)}"
    else:
        lines: list[str] = []
        for who in sorted({w for w, _ in pairs}):
            lines.append(f"conflicts with {who}:")
            lines.extend(f"- {_path_string(p)}" for w, p in pairs if w == who)
        message = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return errors.Conflict(message, {"causes": causes})


# -- managedFields encoding --------------------------------------------------------------------------


def _decode(obj: dict[str, Any]) -> dict[Identity, _Manager]:
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    out: dict[Identity, _Manager] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or (not entry.get("manager") and not entry.get("fieldsV1")):
            continue
        paths: set[Path] = set()
        if isinstance(entry.get("fieldsV1"), dict):
            _paths_from_fields_v1(entry["fieldsV1"], (), paths)
        m = _Manager(str(entry.get("manager") or ""), str(entry.get("operation") or "Update"),
                     str(entry.get("apiVersion") or ""), str(entry.get("subresource") or ""),
                     entry.get("time"), frozenset(paths))
        if m.identity in out:
            m = replace(m, fields=m.fields | out[m.identity].fields)
        out[m.identity] = m
    return out


def _paths_from_fields_v1(node: dict[str, Any], prefix: Path, out: set[Path]) -> None:
    for key, child in node.items():
        if key == ".":
            out.add(prefix)
        elif isinstance(child, dict) and child:
            _paths_from_fields_v1(child, (*prefix, key), out)
        else:
            out.add((*prefix, key))


def _fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    root = _trie(paths)

    def render(node: _TrieNode) -> dict[str, Any]:
        out: dict[str, Any] = {".": {}} if node.member and node.children else {}
        for key in sorted(node.children, key=lambda k: ("fkvi".find(k[0]), k)):
            out[key] = render(node.children[key])
        return out

    return render(_TrieNode(False, root))


def _with_managed_fields(obj: dict[str, Any], managers: dict[Identity, _Manager]) -> dict[str, Any]:
    out = _copy(obj)
    entries = []
    for m in sorted(managers.values(), key=lambda m: (m.operation, m.time or "", m.manager, m.api_version,
                                                      m.subresource)):
        entry: dict[str, Any] = {"manager": m.manager, "operation": m.operation, "apiVersion": m.api_version}
        if m.time:
            entry["time"] = m.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = _fields_v1(m.fields)
        if m.subresource:
            entry["subresource"] = m.subresource
        entries.append(entry)
    meta = out.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)
    return out


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    if isinstance(out.get("metadata"), dict) and "managedFields" in out["metadata"]:
        out["metadata"] = {k: v for k, v in out["metadata"].items() if k != "managedFields"}
    return out


def _path_string(path: Path) -> str:
    """A path as kube prints it in conflicts: ``.spec.containers[name="web"].image``."""
    parts = []
    for element in path:
        tag, body = element[:2], element[2:]
        if tag == "f:":
            parts.append("." + body)
        elif tag == "k:":
            keys = json.loads(body)
            parts.append("[" + ",".join(f"{k}={_go_value(v)}" for k, v in keys.items()) + "]")
        elif tag == "v:":
            parts.append(f"[={_go_value(json.loads(body))}]")
        else:
            parts.append(f"[{body}]")
    return "".join(parts)


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


# -- walking values with a schema ---------------------------------------------------------------------


def _list_semantics(schema: PatchSchema) -> tuple[str, tuple[str, ...]]:
    """How apply treats a list: ``map`` (items keyed), ``set`` (scalar items) or ``atomic`` (whole)."""
    list_type = schema.list_type
    if list_type == "map":
        keys = schema.list_map_keys or ((schema.merge_key,) if schema.merge_key else ())
        return ("map", keys) if keys else ("atomic", ())
    if list_type in ("set", "atomic"):
        return list_type, ()
    # Built-in fields without a list type: kube derives one from the strategic-merge tags.
    if list_type is None and "merge" in schema.strategies():
        return ("map", (schema.merge_key,)) if schema.merge_key else ("set", ())
    return "atomic", ()


def _element(item: Any, index: int, kind: str, keys: tuple[str, ...], item_schema: PatchSchema,
             *, strict: bool) -> str:
    if kind == "set":
        return "v:" + _dumps(item)
    values: dict[str, Any] = {}
    for key in keys:
        value = item.get(key) if isinstance(item, dict) else None
        if value is None:
            node = item_schema.field(key).node or {}
            value = node.get("default", _KEY_DEFAULTS.get(key))
        if value is None:
            if strict:
                raise errors.InternalError(
                    f"failed to create typed patch object: element {index}: associative list with keys has "
                    f'an element that omits key field "{key}" (and doesn\'t have default value)'
                )
            return f"i:{index}"  # a stored item without its key: tolerated, addressed by position
        values[key] = value
    return "k:" + _dumps(values)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _field_set(value: Any, schema: PatchSchema, *, strict: bool) -> set[Path]:
    """The fields a value sets (structured-merge-diff's ToFieldSet): leaves, atomic values, list items
    and map keys; struct fields with children are implied, not members."""
    out: set[Path] = set()

    def walk(v: Any, s: PatchSchema, path: Path) -> None:
        if isinstance(v, dict):
            if s.map_type == "atomic":
                out.add(path)
                return
            for key, child in v.items():
                child_path = (*path, "f:" + key)
                walk(child, s.field(key), child_path)
                if not s.declares(key):
                    out.add(child_path)
        elif isinstance(v, list):
            kind, keys = _list_semantics(s)
            if kind == "atomic":
                out.add(path)
                return
            items = s.items()
            for i, item in enumerate(v):
                child_path = (*path, _element(item, i, kind, keys, items, strict=strict))
                walk(item, items, child_path)
                out.add(child_path)
        else:
            out.add(path)

    walk(value, schema, ())
    out.discard(())
    return out


def _always_present(parent: PatchSchema, name: str, child: PatchSchema) -> bool:
    # Go structs serialise non-pointer struct fields and required slices even when empty, so kube's
    # compare never sees them appear: only maps, optional lists and list items get a "." entry.
    if not parent.builtin or not parent.declares(name):
        return False
    return "properties" in (child.node or {}) or name in parent.required


def _compare(lhs: Any, rhs: Any, schema: PatchSchema) -> _Diff:
    """Which fields ``rhs`` added, removed or modified relative to ``lhs`` (structured-merge-diff)."""
    diff = _Diff()

    def leaf(left: Any, right: Any, path: Path) -> None:
        if left is _MISSING:
            diff.added.add(path)
        elif right is _MISSING:
            diff.removed.add(path)
        elif not _same(left, right):
            diff.modified.add(path)

    def walk(left: Any, right: Any, s: PatchSchema, path: Path, quiet: bool) -> None:
        present = [v for v in (left, right) if v is not _MISSING and v is not None]
        kinds = {dict if isinstance(v, dict) else list if isinstance(v, list) else None for v in present}
        if kinds != {dict} and kinds != {list}:  # scalars, or a value that changed kind
            leaf(left, right, path)
            return
        if dict in kinds:
            lmap = left if isinstance(left, dict) else {}
            rmap = right if isinstance(right, dict) else {}
            if s.map_type == "atomic" or (not lmap and not rmap):
                leaf(left, right, path)
                return
            for key in {**lmap, **rmap}:
                child = s.field(key)
                walk(lmap.get(key, _MISSING), rmap.get(key, _MISSING), child, (*path, "f:" + key),
                     _always_present(s, key, child))
        else:
            llist = left if isinstance(left, list) else []
            rlist = right if isinstance(right, list) else []
            kind, keys = _list_semantics(s)
            if kind == "atomic" or (not llist and not rlist):
                leaf(left, right, path)
                return
            items = s.items()
            lindex = _index(llist, kind, keys, items)
            rindex = _index(rlist, kind, keys, items)
            for element in {**lindex, **rindex}:
                walk(lindex.get(element, _MISSING), rindex.get(element, _MISSING), items, (*path, element),
                     False)
        if not quiet:
            if left is _MISSING:
                diff.added.add(path)
            elif right is _MISSING:
                diff.removed.add(path)

    walk(lhs, rhs, schema, (), True)
    for paths in (diff.added, diff.removed, diff.modified):
        paths.discard(())
    return diff


def _index(items: list[Any], kind: str, keys: tuple[str, ...], item_schema: PatchSchema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        out.setdefault(_element(item, i, kind, keys, item_schema, strict=False), item)
    return out


def _merge(lhs: Any, rhs: Any, schema: PatchSchema) -> Any:
    """Merge an applied value into a live one: the applied side wins leaves, maps merge, keyed lists
    and sets merge item by item, atomic values are replaced. A null in the applied value unsets."""
    if rhs is None:
        return _MISSING
    if isinstance(rhs, dict):
        if schema.map_type == "atomic":
            return _copy(rhs)
        out = dict(lhs) if isinstance(lhs, dict) else {}
        for key, value in rhs.items():
            merged = _merge(out.get(key, _MISSING), value, schema.field(key))
            if merged is _MISSING:
                out.pop(key, None)
            else:
                out[key] = merged
        return out
    if isinstance(rhs, list):
        kind, keys = _list_semantics(schema)
        if kind == "atomic" or not isinstance(lhs, list):
            return _copy(rhs) if kind == "atomic" else _merge_lists([], rhs, kind, keys, schema.items())
        return _merge_lists(lhs, rhs, kind, keys, schema.items())
    return rhs


def _merge_lists(lhs: list[Any], rhs: list[Any], kind: str, keys: tuple[str, ...],
                 item_schema: PatchSchema) -> list[Any]:
    """structured-merge-diff's list merge: applied items keep their applied order, live-only items stay
    where they were relative to the shared ones."""
    lindex = _index(lhs, kind, keys, item_schema)
    rindex: dict[str, Any] = {}
    for i, item in enumerate(rhs):
        element = _element(item, i, kind, keys, item_schema, strict=True)
        if element in rindex:
            raise errors.InternalError(
                f"failed to create typed patch object: duplicate entries for key {_path_string((element,))}")
        rindex[element] = item
    lorder, rorder = list(lindex), list(rindex)
    shared = [e for e in rorder if e in lindex]
    out: list[Any] = []
    done: set[str] = set()
    li = ri = 0

    def take(element: str) -> None:
        merged = _merge(lindex.get(element, _MISSING), rindex[element], item_schema)
        done.add(element)
        if merged is not _MISSING:
            out.append(merged)

    while li < len(lorder) or ri < len(rorder):
        if li < len(lorder) and ri < len(rorder):
            element = lorder[li]
            if element == rorder[ri]:
                take(element)
                li, ri = li + 1, ri + 1
                if shared and shared[0] == element:
                    shared.pop(0)
                continue
            if element in rindex and shared and shared[0] != element:
                li += 1  # a shared item, but not the next one the applied order wants
                continue
        if li < len(lorder):
            element = lorder[li]
            if element not in rindex:
                out.append(lindex[element])
                li += 1
                continue
            if element in done:
                li += 1
                continue
        if ri < len(rorder):
            element = rorder[ri]
            take(element)
            ri += 1
            if shared and shared[0] == element:
                shared.pop(0)
    return out


@dataclass
class _TrieNode:
    member: bool
    children: dict[str, _TrieNode]


def _trie(paths: Iterable[Path]) -> dict[str, _TrieNode]:
    root: dict[str, _TrieNode] = {}
    for path in paths:
        level = root
        for i, element in enumerate(path):
            node = level.setdefault(element, _TrieNode(False, {}))
            if i == len(path) - 1:
                node.member = True
            level = node.children
    return root


def _remove(value: Any, trie: dict[str, _TrieNode], schema: PatchSchema) -> Any:
    """Remove the fields in ``trie`` (whole subtrees for members); a map or list emptied by the removal
    disappears, as it does from a Kubernetes object."""
    if isinstance(value, dict):
        if schema.map_type == "atomic" or not value:
            return value
        out = {}
        for key, child in value.items():
            node = trie.get("f:" + key)
            if node is None:
                out[key] = child
            elif not node.member:
                pruned = _remove(child, node.children, schema.field(key))
                if pruned is not _MISSING:
                    out[key] = pruned
        return out if out else _MISSING
    if isinstance(value, list):
        kind, keys = _list_semantics(schema)
        if kind == "atomic" or not value:
            return value
        items = schema.items()
        kept = []
        for i, item in enumerate(value):
            node = trie.get(_element(item, i, kind, keys, items, strict=False))
            if node is None:
                kept.append(item)
            elif not node.member:
                pruned = _remove(item, node.children, items)
                kept.append({} if pruned is _MISSING else pruned)
        return kept if kept else _MISSING
    return value


def _with_named_parents(paths: Iterable[Path], schema: PatchSchema) -> set[Path]:
    """Add every struct field on the way to each path (structured-merge-diff's
    EnsureNamedFieldsAreMembers), so that pruning a struct prunes it whole."""
    out = set(paths)
    schemas: dict[Path, PatchSchema] = {(): schema}
    for path in list(out):
        for i in range(len(path) - 1):
            prefix = path[: i + 1]
            parent = schemas[path[:i]]
            if prefix not in schemas:
                element = path[i]
                schemas[prefix] = parent.field(element[2:]) if element.startswith("f:") else parent.items()
            if path[i].startswith("f:") and parent.declares(path[i][2:]):
                out.add(prefix)
    return out


def _same(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, true is not 1."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
