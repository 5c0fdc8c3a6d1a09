"""Subresources and review kinds: scale, serviceaccount token, pod binding, namespace finalize,
TokenReview and SelfSubjectAccessReview.

``/scale`` speaks ``autoscaling/v1`` ``Scale`` (kubectl scale needs exactly that kind back, not a Deployment);
``serviceaccounts/<sa>/token`` issues a signed, audience-bound ``TokenRequest`` as the TokenRequest API does;
``tokenreviews`` answers whether a bearer token is valid and whose it is, which is how a pod proves its
identity to another component (the mesh's CA checks tokens this way).
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from meshlab.cluster.patching import json_patch, merge_patch
from meshlab.cluster.pki import TokenSigner
from meshlab.cluster.resources import ResourceType
from meshlab.cluster.rest import RestStorage, WriteOptions
from meshlab.cluster.selectors import selector_object_requirements
from meshlab.errors import ApiError, BadRequest, Cause, Invalid, NotFound, UnsupportedMediaType


def _selector_string(selector: dict[str, Any] | None) -> str:
    parts = []
    for req in selector_object_requirements(selector):
        if req.op == "=":
            parts.append(f"{req.key}={req.values[0]}")
        elif req.op in ("in", "notin"):
            parts.append(f"{req.key} {req.op} ({','.join(req.values)})")
        elif req.op == "exists":
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts)


def to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": int(spec.get("replicas", 1))},
        "status": {"replicas": int(status.get("replicas", 0)), "selector": _selector_string(spec.get("selector"))},
    }


async def write_scale(
    rest: RestStorage, rt: ResourceType, namespace: str, name: str, scale: Any, opts: WriteOptions,
    *, patch_type: str = "",
) -> dict[str, Any]:
    current = rest.get(rt, namespace, name)
    if patch_type:
        base = to_scale(current)
        if patch_type == "application/json-patch+json":
            scale = json_patch(base, scale)
        elif patch_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            scale = merge_patch(base, scale)
        else:
            raise UnsupportedMediaType(f"the scale subresource does not accept {patch_type}")
    if not isinstance(scale, dict):
        raise BadRequest("the body of the request was in an unknown format: expected a Scale object")
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise Invalid("Scale", name, [Cause("spec.replicas", f"Invalid value: {replicas!r}: must be greater "
                                                            "than or equal to 0")], "autoscaling")
    sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
    updated = copy.deepcopy(current)
    updated.setdefault("spec", {})["replicas"] = replicas
    if sent_rv:
        updated["metadata"]["resourceVersion"] = sent_rv
    else:
        updated["metadata"].pop("resourceVersion", None)
    stored = await rest.update(rt, namespace, name, updated, opts)
    return to_scale(stored)


def issue_token(
    rest: RestStorage, signer: TokenSigner, namespace: str, name: str, request: Any
) -> dict[str, Any]:
    sa_rt = rest.registry.lookup("", "v1", "serviceaccounts")
    assert sa_rt is not None
    sa = rest.get(sa_rt, namespace, name)
    if not isinstance(request, dict):
        raise BadRequest("the body of the request was in an unknown format: expected a TokenRequest")
    spec = request.get("spec") or {}
    seconds = int(spec.get("expirationSeconds") or 3600)
    if seconds < 600:
        raise Invalid("TokenRequest", name, [Cause("spec.expirationSeconds",
                      "may not specify a duration less than 10 minutes")], "authentication.k8s.io")
    pod = None
    bound = spec.get("boundObjectRef") or {}
    if bound.get("kind") == "Pod":
        pod = (bound.get("name", ""), bound.get("uid", ""))
    token, exp = signer.issue(namespace=namespace, service_account=name, sa_uid=sa["metadata"]["uid"],
                              audiences=spec.get("audiences"), expiration_seconds=seconds, pod=pod)
    expires = dt.datetime.fromtimestamp(exp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace,
                     "creationTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "spec": {"audiences": spec.get("audiences") or [], "expirationSeconds": seconds,
                 "boundObjectRef": spec.get("boundObjectRef")},
        "status": {"token": token, "expirationTimestamp": expires},
    }


def review_token(rest: RestStorage, signer: TokenSigner, admin_token: str, review: Any) -> dict[str, Any]:
    if not isinstance(review, dict):
        raise BadRequest("the body of the request was in an unknown format: expected a TokenReview")
    spec = review.get("spec") or {}
    token = spec.get("token") or ""
    audiences = spec.get("audiences") or None
    status: dict[str, Any] = {"authenticated": False}
    if token and token == admin_token:
        status = {"authenticated": True, "user": {"username": "admin", "groups": ["system:masters",
                                                                               "system:authenticated"]}}
    elif token:
        try:
            claims = signer.verify(token, audiences=audiences)
            k8s = claims.get("kubernetes.io") or {}
            ns = k8s.get("namespace", "")
            sa = (k8s.get("serviceaccount") or {}).get("name", "")
            uid = (k8s.get("serviceaccount") or {}).get("uid", "")
            sa_rt = rest.registry.lookup("", "v1", "serviceaccounts")
            assert sa_rt is not None
            current = rest.store.get(rest.key(sa_rt, ns, sa))
            if current is None or current[1]["metadata"].get("uid") != uid:
                raise NotFound(f'service account {ns}/{sa} has been deleted')
            extra = {}
            if "pod" in k8s:
                extra = {"authentication.kubernetes.io/pod-name": [k8s["pod"]["name"]],
                         "authentication.kubernetes.io/pod-uid": [k8s["pod"]["uid"]]}
            status = {
                "authenticated": True,
                "user": {"username": f"system:serviceaccount:{ns}:{sa}", "uid": uid,
                         "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                    "system:authenticated"], "extra": extra},
                "audiences": claims.get("aud") or [],
            }
        except ApiError as err:
            status = {"authenticated": False, "error": err.message}
    return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def review_access(review: Any) -> dict[str, Any]:
    if not isinstance(review, dict):
        raise BadRequest("the body of the request was in an unknown format: expected a SelfSubjectAccessReview")
    out = copy.deepcopy(review)
    out["apiVersion"] = "authorization.k8s.io/v1"
    out["kind"] = "SelfSubjectAccessReview"
    out.setdefault("metadata", {})
    # The embedded lab has no RBAC: the lab's one user is an administrator, and says so.
    out["status"] = {"allowed": True, "reason": "meshlab embedded lab: no RBAC, the lab user is cluster-admin"}
    return out


async def bind_pod(rest: RestStorage, namespace: str, name: str, binding: Any, opts: WriteOptions) -> dict[str, Any]:
    pod_rt = rest.registry.lookup("", "v1", "pods")
    assert pod_rt is not None
    if not isinstance(binding, dict) or not (binding.get("target") or {}).get("name"):
        raise Invalid("Binding", name, [Cause("target.name", "Required value")])
    pod = copy.deepcopy(rest.get(pod_rt, namespace, name))
    if (pod.get("spec") or {}).get("nodeName"):
        raise ApiError(f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"', 409, "Conflict")
    pod["spec"]["nodeName"] = binding["target"]["name"]
    conditions = [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                       "lastTransitionTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    pod.setdefault("status", {})["conditions"] = conditions
    pod["metadata"].pop("resourceVersion", None)
    # Binding is the one write allowed to set spec.nodeName; it writes spec and status together.
    key = rest.key(pod_rt, namespace, name)
    if not opts.dry_run:
        rest.store.put(key, pod, created=False)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


async def finalize_namespace(rest: RestStorage, name: str, body: Any, opts: WriteOptions) -> dict[str, Any]:
    ns_rt = rest.registry.lookup("", "v1", "namespaces")
    assert ns_rt is not None
    current = copy.deepcopy(rest.get(ns_rt, "", name))
    if not isinstance(body, dict):
        raise BadRequest("the body of the request was in an unknown format: expected a Namespace")
    finalizers = (body.get("spec") or {}).get("finalizers") or []
    current.setdefault("spec", {})["finalizers"] = finalizers
    if not finalizers:
        current["spec"].pop("finalizers")
    if current["metadata"].get("deletionTimestamp") and not finalizers and not current["metadata"].get("finalizers"):
        if not opts.dry_run:
            await rest.finalize_removal(ns_rt, "", name)
        return current
    current["metadata"].pop("resourceVersion", None)
    if opts.dry_run:
        return current
    return rest.store.put(rest.key(ns_rt, "", name), current, created=False)
