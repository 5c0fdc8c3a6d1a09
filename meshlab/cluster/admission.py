"""Calling admission webhooks, as the Kubernetes apiserver does ("Dynamic Admission Control").

After authentication and before validation and storage, the apiserver POSTs an ``admission.k8s.io/v1
AdmissionReview`` (``request``: a fresh ``uid``, ``kind``, ``resource``, ``subResource``, ``requestKind``,
``requestResource``, ``name``, ``namespace``, ``operation``, ``userInfo``, ``object``, ``oldObject``,
``dryRun``, ``options``) over HTTPS to every webhook whose rules match (see :mod:`.admission_rules`).
*Mutating* webhooks run one after another, configurations sorted by name and webhooks in listed order; each
may answer a base64 RFC 6902 ``patch`` (``patchType: JSONPatch``) that is applied before the next one is
asked; one with ``reinvocationPolicy: IfNeeded`` is asked once more if a later webhook changed the object.
*Validating* webhooks are then asked all at once and any ``allowed: false`` rejects the request with the
webhook's ``status`` (message ``admission webhook "<name>" denied the request: ...``, code 400 unless the
status gives one of 400 or more). The answer must echo the request's ``uid`` and be an ``AdmissionReview``
v1. A webhook that cannot be called (no connection, TLS failure, ``timeoutSeconds`` elapsed, an answer that
is not HTTP 2xx or not a valid review) fails the request with a 500 when ``failurePolicy`` is ``Fail`` (the
default) and is skipped when it is ``Ignore``. A dry-run request never reaches a webhook that may have side
effects: it fails with 400 instead. The server's certificate is checked against ``clientConfig.caBundle``
and, for ``clientConfig.service``, against the DNS name ``<name>.<namespace>.svc`` even though the lab dials
the address its service resolver returns. Sources: the admissionregistration.k8s.io/v1 and admission.k8s.io/v1
API references, and ``k8s.io/apiserver/pkg/admission/plugin/webhook/{mutating,validating,request,errors}``.

Warnings that webhooks return (``response.warnings``) are appended to the ``warnings`` list a caller passes to
:meth:`AdmissionChain.mutate` / :meth:`AdmissionChain.validate`, in webhook order and without duplicates; the
apiserver turns each into a ``Warning: 299 - "<text>"`` response header, even when the request is rejected.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import jsonpatch
import jsonpointer
from yarl import URL

from meshlab.cluster.admission_rules import AdmissionAttributes, matches, request_kind
from meshlab.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = ["AdmissionAttributes", "AdmissionChain", "ServiceResolver", "build_review", "matches"]

log = logging.getLogger(__name__)

ServiceResolver = Callable[[str, str, int], Awaitable[tuple[str, int]]]
"""(namespace, service name, service port) -> (host, port) to dial."""

DEFAULT_TIMEOUT_SECONDS = 10  # admissionregistration/v1 default for timeoutSeconds
REVIEW_API_VERSION = "admission.k8s.io/v1"

# A denial keeps the webhook's own status; when its (code, reason) is one of ours, raise that class so
# callers can catch e.g. Forbidden.
_ERROR_CLASSES: dict[tuple[int, str], Callable[..., ApiError]] = {
    (400, "BadRequest"): BadRequest,
    (401, "Unauthorized"): Unauthorized,
    (403, "Forbidden"): Forbidden,
    (404, "NotFound"): NotFound,
    (405, "MethodNotAllowed"): MethodNotAllowed,
    (409, "AlreadyExists"): AlreadyExists,
    (409, "Conflict"): Conflict,
    (410, "Expired"): Gone,
    (415, "UnsupportedMediaType"): UnsupportedMediaType,
    (500, "InternalError"): InternalError,
}

_OPTIONS_KIND = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


class _CallFailure(Exception):
    """The webhook could not be asked (``ErrCallingWebhook``): the one failure ``failurePolicy`` governs."""


@dataclass(frozen=True)
class _Webhook:
    configuration: str
    index: int
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def key(self) -> tuple[str, int]:
        return (self.configuration, self.index)


@dataclass(frozen=True)
class _Target:
    shown: str  # the URL as Kubernetes names it in messages
    dial: URL  # where the lab connects (a service's resolved address)
    server_name: str | None  # the name the certificate must carry, when not the dialled URL's host
    host_header: str | None


def _webhooks(configs: list[dict[str, Any]]) -> list[_Webhook]:
    ordered = sorted(configs, key=lambda c: str((c.get("metadata") or {}).get("name", "")))
    return [
        _Webhook(str((config.get("metadata") or {}).get("name", "")), i, spec)
        for config in ordered
        for i, spec in enumerate(config.get("webhooks") or ())
    ]


# --- the review, as data ------------------------------------------------------------------------------


def build_review(uid: str, attrs: AdmissionAttributes) -> dict[str, Any]:
    """The ``AdmissionReview`` v1 request body sent to a webhook (omitting empty fields as Go does)."""
    kind = request_kind(attrs)
    resource = {"group": attrs.rt.group, "version": attrs.rt.version, "resource": attrs.rt.plural}
    options = attrs.options
    if options is None and attrs.operation in _OPTIONS_KIND:
        options = {"kind": _OPTIONS_KIND[attrs.operation], "apiVersion": "meta.k8s.io/v1"}
        if attrs.dry_run:
            options["dryRun"] = ["All"]
    request: dict[str, Any] = {"uid": uid, "kind": kind, "resource": resource}
    if attrs.subresource:
        request["subResource"] = attrs.subresource
    request["requestKind"] = dict(kind)
    request["requestResource"] = dict(resource)
    if attrs.subresource:
        request["requestSubResource"] = attrs.subresource
    if attrs.name:
        request["name"] = attrs.name
    if attrs.namespace:
        request["namespace"] = attrs.namespace
    request.update(
        operation=attrs.operation,
        userInfo=dict(attrs.user),
        object=attrs.obj,
        oldObject=attrs.old_obj,
        dryRun=attrs.dry_run,
        options=options,
    )
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "request": request}


def _verify_response(uid: str, review: Any, *, mutating: bool) -> dict[str, Any]:
    """``response`` of a webhook's answer, or :class:`_CallFailure` saying why the answer is unusable."""

    def invalid(why: str) -> _CallFailure:
        return _CallFailure(f"received invalid webhook response: {why}")

    if not isinstance(review, dict):
        raise invalid("expected a JSON object")
    response = review.get("response")
    if not isinstance(response, dict):
        raise invalid("webhook response was absent")
    if response.get("uid") != uid:
        raise invalid(f'expected response.uid="{uid}", got "{response.get("uid", "")}"')
    if review.get("apiVersion") != REVIEW_API_VERSION or review.get("kind") != "AdmissionReview":
        got = f"{review.get('apiVersion', '/')}, Kind={review.get('kind', '')}"
        raise invalid(f"expected webhook response of {REVIEW_API_VERSION}, Kind=AdmissionReview, got {got}")
    patch, patch_type = response.get("patch"), response.get("patchType")
    if mutating:
        if patch and patch_type is None:
            raise invalid("webhook returned response.patch but not response.patchType")
        if not patch and patch_type is not None:
            raise invalid("webhook returned response.patchType but not response.patch")
        if patch_type == "":
            raise invalid('webhook returned invalid response.patchType of ""')
    else:
        if patch:
            raise invalid("validating webhook may not return response.patch")
        if patch_type is not None:
            raise invalid("validating webhook may not return response.patchType")
    if not isinstance(response.get("allowed", False), bool):
        raise invalid("response.allowed must be a boolean")
    return response


def _decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch operations of an allowed mutating response (``[]`` when it changes nothing)."""
    if not response.get("patch"):
        return []
    if response.get("patchType") != "JSONPatch":
        raise _CallFailure(f'unsupported patch type "{response.get("patchType")}"')
    try:
        ops = json.loads(base64.b64decode(str(response["patch"]), validate=True))
    except (binascii.Error, ValueError) as err:
        raise _CallFailure(f"received undecodable patch in webhook response: {err}") from err
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise _CallFailure("received undecodable patch in webhook response: not a JSON array of operations")
    return ops


def _apply_patch(webhook: str, obj: dict[str, Any] | None, ops: list[dict[str, Any]]) -> dict[str, Any]:
    if obj is None:
        raise _internal_error(
            f'admission webhook "{webhook}" attempted to modify the object, which is not supported for this '
            "operation"
        )
    try:
        patched = jsonpatch.apply_patch(obj, ops)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, TypeError) as err:
        # Like Kubernetes, a patch that does not apply is the server's 500, whatever the failurePolicy.
        raise _internal_error(str(err)) from err
    if not isinstance(patched, dict):
        raise _internal_error("the patched object is not a JSON object")
    return patched


def denial_error(webhook: str, status: Mapping[str, Any] | None) -> ApiError:
    """The error for ``allowed: false``: the webhook's status, its code forced to 400 or more."""
    status = status or {}
    code = status.get("code")
    code = code if isinstance(code, int) and code >= 400 else 400
    reason = str(status.get("reason") or "")
    denied = f'admission webhook "{webhook}" denied the request'
    if status.get("message"):
        message = f"{denied}: {status['message']}"
    elif reason:
        message = f"{denied}: {reason}"
    else:
        message = f"{denied} without explanation"
    details = dict(status.get("details") or {})
    cls = _ERROR_CLASSES.get((code, reason))
    if cls is not None:
        return cls(message, details)
    return ApiError(message, code, reason, details)


# --- the chain: matching, ordering, policy, and the HTTPS calls -------------------------------------------


class AdmissionChain:
    """Calls the webhooks of the configurations it is given; one per apiserver (it pools connections)."""

    def __init__(self, *, resolve_service: ServiceResolver, timeout_cap: float = 30.0) -> None:
        self._resolve_service = resolve_service
        self._timeout_cap = timeout_cap
        self._session: aiohttp.ClientSession | None = None
        # One context per (CA bundle, verified name): pooled connections are keyed by the context, so a
        # connection verified for one service name is never reused for another at the same address.
        self._ssl_contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def mutate(
        self,
        configs: list[dict[str, Any]],
        attrs: AdmissionAttributes,
        namespace_labels: Mapping[str, str] | None,
        *,
        warnings: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """Run the matching webhooks of these MutatingWebhookConfigurations; return the mutated object."""
        sink = warnings if warnings is not None else []
        obj = attrs.obj
        previously_invoked: list[tuple[str, int]] = []  # IfNeeded webhooks called since the last change
        reinvoke: set[tuple[str, int]] = set()
        hooks = _webhooks(configs)
        for reinvocation in (False, True):
            if reinvocation and not reinvoke:
                break
            for hook in hooks:
                current = replace(attrs, obj=obj)
                if not matches(hook.spec, current, namespace_labels):
                    continue
                if reinvocation and hook.key not in reinvoke:
                    continue
                response = await self._invoke(hook, current, mutating=True, warnings=sink)
                ops = _decode_patch_or_fail_open(hook, response)
                if ops:
                    patched = _apply_patch(hook.name, obj, ops)
                    if patched != obj:
                        # Those already called saw an object that has now changed: ask them again.
                        reinvoke.update(previously_invoked)
                        previously_invoked.clear()
                    obj = patched
                if hook.spec.get("reinvocationPolicy") == "IfNeeded":
                    previously_invoked.append(hook.key)
        return obj

    async def validate(
        self,
        configs: list[dict[str, Any]],
        attrs: AdmissionAttributes,
        namespace_labels: Mapping[str, str] | None,
        *,
        warnings: list[str] | None = None,
    ) -> None:
        """Ask every matching webhook of these ValidatingWebhookConfigurations at once; any denial rejects.

        When several fail, the first in webhook order is raised (Kubernetes raises whichever came back first).
        """
        hooks = [h for h in _webhooks(configs) if matches(h.spec, attrs, namespace_labels)]
        per_hook: list[list[str]] = [[] for _ in hooks]
        calls = [
            self._invoke(h, attrs, mutating=False, warnings=w) for h, w in zip(hooks, per_hook, strict=True)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        if warnings is not None:
            for found in per_hook:
                _add_warnings(warnings, found)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _invoke(
        self, hook: _Webhook, attrs: AdmissionAttributes, *, mutating: bool, warnings: list[str]
    ) -> dict[str, Any] | None:
        """One webhook's allowed response (None if it failed open); raises if it rejects or fails closed."""
        try:
            if attrs.dry_run:
                side_effects = hook.spec.get("sideEffects")
                if side_effects is None:
                    raise _CallFailure("Webhook SideEffects is nil")
                if side_effects not in ("None", "NoneOnDryRun"):
                    raise BadRequest(f'admission webhook "{hook.name}" does not support dry run')
            versions = hook.spec.get("admissionReviewVersions") or ()
            if "v1" not in versions:
                raise _CallFailure(
                    "could not create admission objects: webhook does not accept known AdmissionReview "
                    "versions (v1)"
                )
            uid = str(uuid.uuid4())
            answer = await self._post(hook, build_review(uid, attrs))
            response = _verify_response(uid, answer, mutating=mutating)
        except _CallFailure as failure:
            _fail(hook, failure)
            return None
        _add_warnings(warnings, [str(w) for w in response.get("warnings") or ()])
        if not response.get("allowed", False):
            raise denial_error(hook.name, response.get("status"))
        return response

    async def _post(self, hook: _Webhook, review: dict[str, Any]) -> Any:
        config = hook.spec.get("clientConfig") or {}
        seconds = min(float(hook.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS), self._timeout_cap)
        # Like the Go client, tell the webhook its deadline, rounded up to whole seconds.
        query = {"timeout": f"{max(1, math.ceil(seconds))}s"}
        target = await self._target(config, query)
        shown = target.shown
        context = self._ssl_context(str(config.get("caBundle") or ""), target.server_name or "")
        headers = {"Content-Type": "application/json", "Accept": "application/json, */*"}
        if target.host_header:
            headers["Host"] = target.host_header
        try:
            async with asyncio.timeout(seconds):
                async with self._client().post(
                    target.dial, data=json.dumps(review).encode(), headers=headers, ssl=context,
                    server_hostname=target.server_name,
                ) as resp:
                    status, body = resp.status, await resp.read()
        except TimeoutError as err:
            raise _CallFailure(f'failed to call webhook: Post "{shown}": context deadline exceeded') from err
        except aiohttp.ClientConnectorCertificateError as err:
            why = getattr(err.certificate_error, "verify_message", "") or str(err.certificate_error)
            raise _CallFailure(
                f'failed to call webhook: Post "{shown}": tls: failed to verify certificate: {why}'
            ) from err
        except aiohttp.ClientConnectorError as err:
            errno = err.os_error.errno
            why = os.strerror(errno).lower() if errno else str(err.os_error)
            raise _CallFailure(
                f'failed to call webhook: Post "{shown}": dial tcp {err.host}:{err.port}: connect: {why}'
            ) from err
        except (aiohttp.ClientError, ssl.SSLError, OSError) as err:
            why = str(err) or type(err).__name__
            raise _CallFailure(f'failed to call webhook: Post "{shown}": {why}') from err
        if not 200 <= status <= 206:
            text = body[:200].decode("utf-8", "replace").strip()
            raise _CallFailure(f'failed to call webhook: the server responded with HTTP {status}: "{text}"')
        try:
            return json.loads(body)
        except ValueError as err:
            raise _CallFailure(f"failed to call webhook: the response is not valid JSON: {err}") from err

    async def _target(self, config: Mapping[str, Any], query: dict[str, str]) -> _Target:
        service, url = config.get("service") or {}, config.get("url")
        if bool(service) == bool(url):
            raise _CallFailure("could not get REST client: exactly one of url or service is required")
        if url:
            parsed = URL(str(url))
            if parsed.scheme != "https" or not parsed.host:
                raise _CallFailure(f'could not get REST client: webhook URL must be https, got "{url}"')
            parsed = parsed.with_query(query)
            return _Target(str(parsed), parsed, None, None)
        namespace, name = str(service.get("namespace", "")), str(service.get("name", ""))
        port = int(service.get("port") or 443)
        path = "/" + str(service.get("path") or "").lstrip("/")
        dns_name = f"{name}.{namespace}.svc"
        shown = f"https://{dns_name}:{port}{path}?timeout={query['timeout']}"
        try:
            host, dial_port = await self._resolve_service(namespace, name, port)
        except Exception as err:  # the resolver is the caller's: whatever it raises, the call failed
            raise _CallFailure(f'failed to call webhook: Post "{shown}": {err}') from err
        dial = URL.build(scheme="https", host=host, port=dial_port, path=path, query=query)
        return _Target(shown, dial, dns_name, f"{dns_name}:{port}")

    def _ssl_context(self, ca_bundle: str, server_name: str) -> ssl.SSLContext:
        key = (ca_bundle, server_name)
        if key not in self._ssl_contexts:
            try:
                pem = base64.b64decode(ca_bundle, validate=True).decode("ascii") if ca_bundle else None
                # No caBundle: the system's trust roots, as Kubernetes does.
                self._ssl_contexts[key] = ssl.create_default_context(cadata=pem)
            except (binascii.Error, UnicodeDecodeError, ValueError, ssl.SSLError) as err:
                raise _CallFailure(f"could not get REST client: invalid caBundle: {err}") from err
        return self._ssl_contexts[key]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env=False: a lab's HTTP_PROXY is for pods, never for the apiserver's webhook calls.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), trust_env=False)
        return self._session


def _decode_patch_or_fail_open(hook: _Webhook, response: dict[str, Any] | None) -> list[dict[str, Any]]:
    """An undecodable patch is a call failure, so ``failurePolicy: Ignore`` skips the webhook."""
    if response is None:
        return []
    try:
        return _decode_patch(response)
    except _CallFailure as failure:
        _fail(hook, failure)
        return []


def _fail(hook: _Webhook, failure: _CallFailure) -> None:
    """Skip the webhook if its failurePolicy is Ignore; otherwise fail the request with a 500."""
    why = f'failed calling webhook "{hook.name}": {failure}'
    if hook.spec.get("failurePolicy") == "Ignore":
        log.warning("Failed calling webhook, failing open %s: %s", hook.name, why)
        return
    raise _internal_error(why) from failure


def _internal_error(why: str) -> ApiError:
    """``apierrors.NewInternalError``: a 500 whose single cause repeats the reason."""
    # errors.py builds InternalError with a two-argument __init__ that mypy cannot see through `type(...)`.
    make: Callable[..., ApiError] = InternalError
    return make(f"Internal error occurred: {why}", {"causes": [{"message": why}]})


def _add_warnings(sink: list[str], found: list[str]) -> None:
    for warning in found:
        if warning not in sink:
            sink.append(warning)
