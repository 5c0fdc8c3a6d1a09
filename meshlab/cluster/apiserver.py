"""The embedded Kubernetes API server: HTTPS, bearer tokens, and the REST paths of the Kubernetes API.

The server only moves bytes: it authenticates, parses the path (``/api/v1/namespaces/<ns>/<plural>/<name>/
<subresource>``, ``/apis/<group>/<version>/...``), decodes bodies (JSON, YAML, Kubernetes protobuf), picks
the verb from the method and query (``watch=true`` turns a list into a watch), and encodes what
:mod:`meshlab.cluster.rest` answers — as JSON, or as a ``meta.k8s.io/v1`` Table when kubectl asks for
one. Every refusal is a ``metav1.Status`` with the right code; nothing else escapes as a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from meshlab.cluster import discovery, openapi, protobuf, subresources
from meshlab.cluster.admission import AdmissionChain
from meshlab.cluster.execstream import PROTOCOLS, bridge
from meshlab.cluster.pki import LabPki, TokenSigner
from meshlab.cluster.podio import LogOptions, NoPodIO, PodIO
from meshlab.cluster.resources import Registry, ResourceType
from meshlab.cluster.rest import PATCH_TYPES, RestStorage, WriteOptions
from meshlab.cluster.schemas import Schemas
from meshlab.cluster.store import Store
from meshlab.cluster.tables import parse_table_accept, to_table
from meshlab.cluster.watching import serve_watch
from meshlab.errors import ApiError, BadRequest, InternalError, MethodNotAllowed, NotFound, Unauthorized

log = logging.getLogger("meshlab.apiserver")

_PUBLIC_PATHS = {"/healthz", "/readyz", "/livez", "/version"}
_JSON = "application/json"
# Who made the request, as authentication found it (``userInfo`` for admission reviews).
USER = web.RequestKey("user", dict)


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rt: ResourceType
    namespace: str
    name: str
    subresource: str


def _json_response(obj: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 - "{w}"' for w in warnings)
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status,
                        content_type=_JSON, headers=headers)


def _bool(value: str | None) -> bool:
    return value in ("true", "1", "True")


class ApiServer:
    def __init__(
        self,
        store: Store,
        *,
        pki: LabPki,
        registry: Registry | None = None,
        schemas: Schemas | None = None,
        server_address: str = "127.0.0.1:6443",
    ) -> None:
        self.registry = registry or Registry()
        self.schemas = schemas or Schemas()
        self.pki = pki
        self.admin_token = pki.read_admin_token()
        self.signer = TokenSigner.from_file(pki.sa_key)
        self.admission = AdmissionChain(resolve_service=self._resolve_service)
        self.rest = RestStorage(store, self.registry, self.schemas, self.admission)
        self.pod_io: PodIO = NoPodIO()
        self.server_address = server_address
        self.ready = False
        # Named readiness checks (``/readyz?verbose`` lists them, as kube-apiserver does): each answers
        # (healthy, detail). Runtime parts (controllers, kubelet, kube-proxy) add theirs.
        self.health_checks: dict[str, Callable[[], tuple[bool, str]]] = {}

    # -- wiring ------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        await self.admission.close()

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.serving_cert, self.pki.serving_key)
        return ctx

    async def _resolve_service(self, namespace: str, name: str, port: int) -> tuple[str, int]:
        """Where a webhook Service lives: its first ready endpoint (the lab has no cluster network)."""
        ep_rt = self.registry.lookup("", "v1", "endpoints")
        assert ep_rt is not None
        found = self.rest.store.get(self.rest.key(ep_rt, namespace, name))
        svc_rt = self.registry.lookup("", "v1", "services")
        assert svc_rt is not None
        svc = self.rest.store.get(self.rest.key(svc_rt, namespace, name))
        if svc is None:
            raise NotFound(f'service "{name}" not found')
        target_port: Any = port
        for p in (svc[1].get("spec") or {}).get("ports") or []:
            if p.get("port") == port:
                target_port = p.get("targetPort", port)
        for subset in (found[1].get("subsets") or []) if found else []:
            for addr in subset.get("addresses") or []:
                for p in subset.get("ports") or []:
                    if (isinstance(target_port, int) and p.get("port") == target_port) or p.get("name") == target_port:
                        return addr["ip"], int(p["port"])
                if isinstance(target_port, int):
                    return addr["ip"], target_port
        raise NotFound(f'no endpoints available for service "{name}"')

    # -- middleware --------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return _json_response(err.to_status(), err.code)
        except web.HTTPException:
            raise
        except Exception as err:
            log.exception("internal error serving %s %s", request.method, request.path)
            failure = InternalError(f"Internal error occurred: {type(err).__name__}: {err}")
            return _json_response(failure.to_status(), 500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.path in _PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Unauthorized: a bearer token is required (see `meshlab cluster kubeconfig`)")
        token = token.strip()
        if token == self.admin_token:
            request[USER] = {"username": "admin", "groups": ["system:masters", "system:authenticated"]}
        else:
            claims = self.signer.verify(token)
            k8s = claims.get("kubernetes.io") or {}
            ns = k8s.get("namespace", "")
            request[USER] = {
                "username": claims.get("sub", ""),
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            }
        return await handler(request)

    # -- routing -----------------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez"):
            return web.Response(text="ok")
        if path == "/readyz":
            return self._readyz("verbose" in request.query)
        if path == "/version":
            return _json_response(discovery.version_info())
        if path == "/api":
            return _json_response(discovery.core_versions(self.server_address))
        if path == "/apis":
            return _json_response(discovery.api_groups(self.registry))
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi(parts[2:])
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 2:
            if len(parts) == 2:
                doc = discovery.api_group(self.registry, parts[1])
                if doc is None:
                    raise NotFound("the server could not find the requested resource")
                return _json_response(doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NotFound("the server could not find the requested resource")
        if not rest:
            doc = discovery.resource_list(self.registry, group, version)
            if doc is None:
                raise NotFound("the server could not find the requested resource")
            return _json_response(doc)
        target = self._target(group, version, rest)
        return await self._serve(request, target)

    def _readyz(self, verbose: bool) -> web.Response:
        results = [("meshlab-bootstrap", self.ready, "" if self.ready else "not finished")]
        for name, check in self.health_checks.items():
            try:
                healthy, detail = check()
            except Exception as err:  # a failing check is reported, never raised
                healthy, detail = False, f"{type(err).__name__}: {err}"
            results.append((name, healthy, detail))
        ok = all(healthy for _, healthy, _ in results)
        if not verbose:
            if ok:
                return web.Response(text="ok")
            failed = [f"[-]{name} failed: {detail}" for name, healthy, detail in results if not healthy]
            return web.Response(text="\n".join(failed), status=500)
        lines = [f"[+]{name} ok{(' (' + detail + ')') if detail else ''}" if healthy
                 else f"[-]{name} failed: {detail}" for name, healthy, detail in results]
        lines.append("readyz check passed" if ok else "readyz check failed")
        return web.Response(text="\n".join(lines), status=200 if ok else 500)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            rt = self.registry.lookup(group, version, rest[2])
            if rt is not None and rt.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise NotFound("the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rt.subresources:
            raise NotFound("the server could not find the requested resource")
        return Target(rt, namespace, name, sub)

    def _openapi(self, rest: list[str]) -> web.Response:
        if not rest:
            return _json_response(openapi.openapi_root(self.registry, self.schemas))
        if rest[0] == "api" and len(rest) == 2:
            group, version = "", rest[1]
        elif rest[0] == "apis" and len(rest) == 3:
            group, version = rest[1], rest[2]
        else:
            raise NotFound("the server could not find the requested resource")
        doc = openapi.openapi_group_version(self.registry, self.schemas, group, version)
        if doc is None:
            raise NotFound("the server could not find the requested resource")
        return _json_response(doc)

    # -- bodies ------------------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> tuple[Any, str]:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", _JSON).split(";")[0].strip().lower() or _JSON
        if protobuf.is_protobuf(raw, ctype):
            return protobuf.decode(raw), _JSON
        if not raw.strip():
            raise BadRequest("the request body is empty: expected an object")
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(raw), ctype
            return json.loads(raw), ctype
        except (ValueError, yaml.YAMLError) as err:
            raise BadRequest(f"the body of the request was in an unknown format: {_first_line(err)}") from err

    def _options(self, request: web.Request) -> WriteOptions:
        q = request.query
        dry_run = q.getall("dryRun", [])
        if any(v not in ("All",) for v in dry_run):
            raise BadRequest(f"Invalid dryRun value {dry_run!r}: only 'All' is supported")
        validation = q.get("fieldValidation", "Strict") or "Strict"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise BadRequest(f"Invalid fieldValidation value {validation!r}: must be Strict, Warn or Ignore")
        return WriteOptions(user=request.get(USER) or {}, dry_run=bool(dry_run),
                            field_manager=q.get("fieldManager", ""), field_validation=validation,
                            force=_bool(q.get("force")))

    # -- verbs -------------------------------------------------------------------------------------------

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        q = request.query
        rt = t.rt
        table = parse_table_accept(request.headers.get("Accept"))
        include = q.get("includeObject", "Metadata")
        if rt.namespaced and not t.namespace and t.name:
            raise NotFound("the server could not find the requested resource")
        if not rt.persisted:
            if method != "POST" or t.name:
                raise MethodNotAllowed(f"the server does not allow this method on {rt.qualified()}")
            body, _ = await self._body(request)
            if rt.plural == "tokenreviews":
                answer = subresources.review_token(self.rest, self.signer, self.admin_token, body)
            else:
                answer = subresources.review_access(body)
            return _json_response(answer, 201)
        if t.subresource:
            return await self._serve_sub(request, t)
        if not t.name:
            if method == "GET":
                if _bool(q.get("watch")):
                    return await serve_watch(request, self.rest, rt, t.namespace, table=table,
                                             include_object=include)
                return self._list(request, t, table, include)
            if method == "POST":
                body, _ = await self._body(request)
                opts = self._options(request)
                created = await self.rest.create(rt, t.namespace, body, opts)
                return _json_response(created, 201, opts.warnings)
            if method == "DELETE":
                opts = self._options(request)
                deleted = await self.rest.delete_collection(
                    rt, t.namespace, await self._delete_options(request), opts,
                    label_selector=q.get("labelSelector", ""), field_selector=q.get("fieldSelector", ""))
                return _json_response({"kind": rt.list_kind, "apiVersion": rt.api_version,
                                       "metadata": {}, "items": deleted})
            raise MethodNotAllowed(f"{method} is not allowed on a collection")
        if method == "GET":
            if _bool(q.get("watch")):
                raise BadRequest("watch a single object with fieldSelector=metadata.name=<name> on the list")
            obj = self.rest.get(rt, t.namespace, t.name)
            return _json_response(self._render(rt, [obj], table, include) if table else obj)
        opts = self._options(request)
        if method == "PUT":
            body, _ = await self._body(request)
            return _json_response(await self.rest.update(rt, t.namespace, t.name, body, opts), 200,
                                  opts.warnings)
        if method == "PATCH":
            body, ctype = await self._body(request)
            patched, was_created = await self.rest.patch(rt, t.namespace, t.name, ctype, body, opts)
            return _json_response(patched, 201 if was_created else 200, opts.warnings)
        if method == "DELETE":
            answer = await self.rest.delete(rt, t.namespace, t.name, await self._delete_options(request), opts)
            return _json_response(answer, 200)
        raise MethodNotAllowed(f"{method} is not allowed here")

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    is_pb = protobuf.is_protobuf(raw, request.content_type)
                    parsed = protobuf.decode(raw) if is_pb else json.loads(raw)
                except ValueError as err:
                    raise BadRequest(f"invalid DeleteOptions: {_first_line(err)}") from err
                if not isinstance(parsed, dict):
                    raise BadRequest("invalid DeleteOptions: expected an object")
                options.update(parsed)
        q = request.query
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            try:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError as err:
                raise BadRequest("gracePeriodSeconds must be an integer") from err
        if "orphanDependents" in q:
            options["orphanDependents"] = _bool(q["orphanDependents"])
        policy = options.get("propagationPolicy")
        if policy not in (None, "", "Orphan", "Background", "Foreground"):
            raise BadRequest(f"propagationPolicy {policy!r} is not one of Orphan, Background, Foreground")
        return options

    def _render(self, rt: ResourceType, objs: list[dict[str, Any]], table: bool, include: str,
                rv: str = "", cont: str = "") -> dict[str, Any]:
        return to_table(rt, objs, now=dt.datetime.now(dt.UTC), include_object=include,
                        resource_version=rv, continue_token=cont)

    def _list(self, request: web.Request, t: Target, table: bool, include: str) -> web.Response:
        q = request.query
        rt = t.rt
        rv = str(self.rest.store.resource_version)
        items = self.rest.select(rt, t.namespace, label_selector=q.get("labelSelector", ""),
                               field_selector=q.get("fieldSelector", ""))
        try:
            limit = int(q.get("limit") or 0)
        except ValueError as err:
            raise BadRequest("limit must be an integer") from err
        start = _decode_continue(q.get("continue", ""))
        selected: list[tuple[dict[str, Any], str]] = []
        cont = ""
        for obj, raw in items:
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if start and key <= start:
                continue
            if limit and len(selected) == limit:
                last = selected[-1][0]["metadata"]
                cont = _encode_continue(last.get("namespace", ""), last["name"], rv)
                break
            selected.append((obj, raw))
        if table:
            return _json_response(self._render(rt, [o for o, _ in selected], True, include, rv, cont))
        meta = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
        head = json.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta},
                          separators=(",", ":"))
        raws = ",".join(raw or json.dumps(obj, separators=(",", ":")) for obj, raw in selected)
        body = f'{head[:-1]},"items":[{raws}]}}'
        return web.Response(body=body.encode(), content_type=_JSON)

    # -- subresources ------------------------------------------------------------------------------------

    async def _serve_sub(self, request: web.Request, t: Target) -> web.StreamResponse:
        method, sub, rt = request.method, t.subresource, t.rt
        if sub == "log" and method == "GET":
            return await self._logs(request, t)
        if sub == "exec" and method in ("GET", "POST"):
            return await self._exec(request, t)
        if sub == "scale":
            if method == "GET":
                return _json_response(subresources.to_scale(self.rest.get(rt, t.namespace, t.name)))
            if method in ("PUT", "PATCH"):
                body, ctype = await self._body(request)
                patch_type = ctype if method == "PATCH" else ""
                if patch_type and patch_type not in PATCH_TYPES:
                    patch_type = "application/merge-patch+json"
                return _json_response(await subresources.write_scale(
                    self.rest, rt, t.namespace, t.name, body, self._options(request), patch_type=patch_type))
        if sub == "status":
            if method == "GET":
                return _json_response(self.rest.get(rt, t.namespace, t.name))
            opts = self._options(request)
            body, ctype = await self._body(request)
            if method == "PUT":
                return _json_response(await self.rest.update(rt, t.namespace, t.name, body, opts,
                                                             subresource="status"))
            if method == "PATCH":
                result, _ = await self.rest.patch(rt, t.namespace, t.name, ctype, body, opts, subresource="status")
                return _json_response(result)
        if sub == "token" and method == "POST":
            body, _ = await self._body(request)
            return _json_response(subresources.issue_token(self.rest, self.signer, t.namespace, t.name, body), 201)
        if sub == "binding" and method == "POST":
            body, _ = await self._body(request)
            return _json_response(await subresources.bind_pod(self.rest, t.namespace, t.name, body,
                                                              self._options(request)), 201)
        if sub == "finalize" and method == "PUT":
            body, _ = await self._body(request)
            return _json_response(await subresources.finalize_namespace(self.rest, t.name, body,
                                                                        self._options(request)))
        raise MethodNotAllowed(f"{method} is not supported on {rt.plural}/{sub}")

    def _container(self, pod: dict[str, Any], wanted: str) -> str:
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        inits = [c.get("name", "") for c in (pod.get("spec") or {}).get("initContainers") or []]
        pod_name = pod["metadata"]["name"]
        if wanted:
            if wanted not in names + inits:
                raise BadRequest(f"container {wanted} is not valid for pod {pod_name}")
            return wanted
        if len(names) == 1:
            return names[0]
        default = ((pod.get("metadata") or {}).get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        if default in names:
            return str(default)
        raise BadRequest(f"a container name must be specified for pod {pod_name}, choose one of: "
                         f"[{' '.join(names)}]")

    async def _logs(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        pod = self.rest.get(t.rt, t.namespace, t.name)

        def number(name: str) -> int | None:
            try:
                return int(q[name]) if name in q else None
            except ValueError as err:
                raise BadRequest(f"{name} must be an integer") from err

        options = LogOptions(container=self._container(pod, q.get("container", "")), follow=_bool(q.get("follow")),
                             previous=_bool(q.get("previous")), tail_lines=number("tailLines"),
                             timestamps=_bool(q.get("timestamps")), since_seconds=number("sinceSeconds"),
                             limit_bytes=number("limitBytes"))
        chunks = self.pod_io.logs(pod, options)
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        first = True
        async for chunk in chunks:
            if first:
                await response.prepare(request)
                first = False
            await response.write(chunk)
        if first:
            await response.prepare(request)
        await response.write_eof()
        return response

    async def _exec(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        pod = self.rest.get(t.rt, t.namespace, t.name)
        container = self._container(pod, q.get("container", ""))
        command = q.getall("command", [])
        if not command:
            raise BadRequest("you must specify at least 1 command")
        proc = await self.pod_io.exec(pod, container, command, tty=_bool(q.get("tty")), stdin=_bool(q.get("stdin")))
        ws = web.WebSocketResponse(protocols=PROTOCOLS)
        if not ws.can_prepare(request).ok:
            proc.kill()
            raise BadRequest("exec needs a WebSocket upgrade with subprotocol v5.channel.k8s.io or v4.channel.k8s.io")
        await ws.prepare(request)
        await bridge(ws, proc)
        return ws


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _encode_continue(namespace: str, name: str, rv: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": int(rv), "start": [namespace, name]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        ns, name = data["start"]
        return (str(ns), str(name))
    except (ValueError, KeyError, TypeError) as err:
        raise BadRequest("continue key is not valid: it was not produced by this server") from err
