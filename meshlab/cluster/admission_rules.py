"""Which admission webhooks a request must be sent to (pure; no I/O).

The Kubernetes apiserver calls a webhook of a ``MutatingWebhookConfiguration`` or
``ValidatingWebhookConfiguration`` (``admissionregistration.k8s.io/v1``) only when every test below passes,
as ``k8s.io/apiserver/pkg/admission/plugin/webhook/predicates`` and the "Dynamic Admission Control" docs
describe: the request is not about a webhook configuration itself (those are exempt so a broken webhook can
always be removed); the ``namespaceSelector`` matches the labels of the request's namespace (for a Namespace
object, its own labels; other cluster-scoped objects always pass); the ``objectSelector`` matches the labels
of the new *or* the old object; and at least one rule matches: ``operations``, ``apiGroups``,
``apiVersions`` (each exact or ``*``), ``resources`` (``pods`` matches the main resource only, ``pods/*``
every subresource, ``*/status`` every status subresource, ``*/*`` everything) and ``scope`` (``Namespaced``
never matches a Namespace object, ``Cluster`` always does). ``matchPolicy: Equivalent`` would also match the
same resource requested through another group/version; the lab serves each built-in kind at one version, so
both policies match exactly here (a CRD served at several versions is matched per version).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshlab.cluster.resources import ResourceType
from meshlab.cluster.selectors import match_label_selector
from meshlab.errors import BadRequest, InternalError

__all__ = ["AdmissionAttributes", "matches", "request_kind"]

# Webhooks are never called for these kinds, so a cluster can always repair a bad configuration.
_EXEMPT_KINDS = frozenset({
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
})


@dataclass(frozen=True)
class AdmissionAttributes:
    """One API request as admission sees it (``admission.Attributes`` in the Go apiserver).

    For a request on a Namespace object itself, ``namespace`` may be ``""`` or the namespace's own name (the
    real apiserver uses the name for requests on an existing namespace); either way it is cluster-scoped.
    """

    operation: str  # CREATE / UPDATE / DELETE / CONNECT
    rt: ResourceType
    subresource: str  # "" or "status", "scale", "exec" ...
    namespace: str  # "" for cluster-scoped
    name: str
    obj: dict[str, Any] | None  # the new object (None on DELETE)
    old_obj: dict[str, Any] | None  # the old object (UPDATE / DELETE)
    user: dict[str, Any]  # userInfo {"username": ..., "uid": ..., "groups": [...], "extra": {...}}
    dry_run: bool
    options: dict[str, Any] | None = None  # CreateOptions / UpdateOptions / DeleteOptions


def _is_namespace(rt: ResourceType) -> bool:
    return rt.group == "" and rt.plural == "namespaces"


def request_kind(attrs: AdmissionAttributes) -> dict[str, str]:
    """The ``{group, version, kind}`` of what is admitted.

    Usually the resource's kind, but a subresource may carry another kind (``deployments/scale`` admits an
    ``autoscaling/v1 Scale``, ``pods/exec`` a ``PodExecOptions``): the object's own ``apiVersion``/``kind``
    win when present.
    """
    for obj in (attrs.obj, attrs.old_obj):
        if obj and obj.get("kind") and obj.get("apiVersion"):
            group, _, version = str(obj["apiVersion"]).rpartition("/")
            return {"group": group, "version": version, "kind": str(obj["kind"])}
    return {"group": attrs.rt.group, "version": attrs.rt.version, "kind": attrs.rt.kind}


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def _exact_or_wildcard(items: list[str] | None, requested: str) -> bool:
    return any(item in ("*", requested) for item in items or ())


def _scope_matches(scope: str | None, attrs: AdmissionAttributes) -> bool:
    if scope in (None, "*"):
        return True
    # A Namespace is cluster-scoped even when the request names it as its own namespace.
    cluster_scoped = _is_namespace(attrs.rt) or not attrs.namespace
    if scope == "Namespaced":
        return not cluster_scoped
    if scope == "Cluster":
        return cluster_scoped
    return False


def _resource_matches(resources: list[str] | None, attrs: AdmissionAttributes) -> bool:
    for entry in resources or ():
        res, _, sub = entry.partition("/")
        # "pods" has an empty subresource part, so it matches only the main resource, never pods/status.
        if res in ("*", attrs.rt.plural) and sub in ("*", attrs.subresource):
            return True
    return False


def _rule_matches(rule: Mapping[str, Any], attrs: AdmissionAttributes) -> bool:
    return (
        _scope_matches(rule.get("scope"), attrs)
        and _exact_or_wildcard(rule.get("operations"), attrs.operation)
        and _exact_or_wildcard(rule.get("apiGroups"), attrs.rt.group)
        and _exact_or_wildcard(rule.get("apiVersions"), attrs.rt.version)
        and _resource_matches(rule.get("resources"), attrs)
    )


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    try:
        return match_label_selector(selector, labels)
    except BadRequest as err:
        # The configuration was accepted with a selector we cannot evaluate: the apiserver's fault, not the
        # caller's, so it is a 500 as in Kubernetes.
        raise InternalError(f"Internal error occurred: {err.message}") from err


def _namespace_matches(
    webhook: Mapping[str, Any], attrs: AdmissionAttributes, namespace_labels: Mapping[str, str] | None
) -> bool:
    selector = webhook.get("namespaceSelector")
    if not attrs.namespace and not _is_namespace(attrs.rt):
        return True  # cluster-scoped objects other than namespaces cannot be exempted by namespace
    if not selector:
        return True
    if _is_namespace(attrs.rt) and not attrs.subresource and attrs.operation in ("CREATE", "UPDATE"):
        # The store does not hold the new labels yet: the request's own object does.
        labels = _labels(attrs.obj)
    elif namespace_labels is not None:
        labels = dict(namespace_labels)
    else:
        labels = _labels(attrs.old_obj) if _is_namespace(attrs.rt) else {}
    return _selector_matches(selector, labels)


def _object_matches(webhook: Mapping[str, Any], attrs: AdmissionAttributes) -> bool:
    selector = webhook.get("objectSelector")
    if not selector:
        return True
    # An object that is absent (new on DELETE, old on CREATE) never matches, but the other one may.
    return any(
        obj is not None and _selector_matches(selector, _labels(obj)) for obj in (attrs.obj, attrs.old_obj)
    )


def matches(
    webhook: Mapping[str, Any], attrs: AdmissionAttributes, namespace_labels: Mapping[str, str] | None
) -> bool:
    """Whether ``webhook`` (one entry of a configuration's ``webhooks``) must be called for ``attrs``.

    ``namespace_labels`` are the labels of ``attrs.namespace`` (``None`` when there is none or it is
    unknown; a missing namespace is the NamespaceLifecycle check's business, not admission webhooks').
    Raises :class:`~meshlab.errors.InternalError` for a selector that cannot be evaluated.
    """
    kind = request_kind(attrs)
    if kind["group"] == "admissionregistration.k8s.io" and kind["kind"] in _EXEMPT_KINDS:
        return False
    if not any(_rule_matches(rule, attrs) for rule in webhook.get("rules") or ()):
        return False
    return _namespace_matches(webhook, attrs, namespace_labels) and _object_matches(webhook, attrs)
