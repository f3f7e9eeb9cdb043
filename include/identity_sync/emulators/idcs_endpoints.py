"""HTTP endpoints of the IDCS emulator beyond reads: writes, ``UserStatusChanger``, ``Bulk`` and
the SCIM discovery endpoints (``ServiceProviderConfig``, ``ResourceTypes``, ``Schemas``).

Why here: :mod:`.idcs_state` holds the state, :mod:`.idcs` / :mod:`.idcs_search` the read path;
this module turns HTTP requests into :class:`~.idcs_writes.TenantWriter` calls and answers the
way IDCS does: 201 with ``Location`` and ``ETag`` on create, 200 with ``ETag`` on PUT/PATCH, 204
on DELETE, 412 when ``If-Match`` names an old version, 413 over 1 MB, 415 for a body that is not
JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .idcs_common import LIST_SCHEMA, ScimError, scim_response
from .idcs_projection import parse_selection
from .idcs_schemas import (
    BULK_MAX_OPERATIONS,
    MAX_PAYLOAD_BYTES,
    RESOURCE_TYPES,
    SCHEMA_BY_URN,
    SCHEMAS,
    resource_type_body,
    service_provider_config,
)
from .idcs_search import Query, SearchEngine, make_query
from .idcs_writes import TenantWriter, WriteError

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
JSON_TYPES = ("application/json", "application/scim+json")

Authorize = Callable[[Request], str | None]  # raises ScimError 401, returns the client id
Handler = Callable[[Request], Awaitable[Response]]


def scim_error(err: WriteError) -> ScimError:
    return ScimError(err.status, err.detail, scim_type=err.scim_type, message_id=err.message_id)


async def read_json(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in JSON_TYPES:
        raise ScimError(415, f"Unsupported media type {ctype}; use application/scim+json.",
                        message_id="error.common.common.unsupportedMediaType")
    raw = await request.body()
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ScimError(413, f"The request payload exceeds maxPayloadSize ({MAX_PAYLOAD_BYTES}"
                        " bytes).", message_id="error.common.common.maxPayloadSizeExceeded")
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ScimError(400, "The request body is not valid JSON.", scim_type="invalidSyntax",
                        message_id="error.common.common.invalidJson") from exc


class WriteEndpoints:
    """Users/Groups writes and UserStatusChanger over one :class:`TenantWriter`."""

    def __init__(self, writer: TenantWriter, engine: SearchEngine, authorize: Authorize) -> None:
        self.writer, self.engine, self.authorize = writer, engine, authorize

    def _render(self, name: str, rid: str, request: Request, status: int) -> Response:
        query = make_query(dict(request.query_params))
        coll = self.engine.collections[name]
        key = coll.find(rid)
        sel = parse_selection(query.attributes, query.attribute_sets, coll.urns, coll.case_exact)
        base = str(request.base_url).rstrip("/")
        body = coll.render(key, sel, base)
        version = (coll.view(key, set(), base).get("meta") or {}).get("version", "")
        response = scim_response(body, status)
        response.headers["ETag"] = version
        if status == 201:
            response.headers["Location"] = f"{base}/admin/v1/{name}/{rid}"
        return response

    def create(self, name: str) -> Handler:
        async def handler(request: Request) -> Response:
            client = self.authorize(request)
            body = await read_json(request)
            try:
                rid = self._do("POST", name, None, body, client, None)
            except WriteError as err:
                raise scim_error(err) from err
            return self._render(name, rid, request, 201)

        return handler

    def modify(self, name: str, method: str) -> Handler:
        async def handler(request: Request) -> Response:
            client = self.authorize(request)
            rid = request.path_params["id"]
            if_match = request.headers.get("if-match")
            if method == "DELETE":
                try:
                    self._do("DELETE", name, rid, None, client, if_match)
                except WriteError as err:
                    raise scim_error(err) from err
                return Response(status_code=204)
            body = await read_json(request)
            try:
                rid = self._do(method, name, rid, body, client, if_match)
            except WriteError as err:
                raise scim_error(err) from err
            return self._render(name, rid, request, 200)

        return handler

    def _do(self, method: str, name: str, rid: str | None, body: Any, client: str | None,
            if_match: str | None) -> str:
        """One write; returns the resource id (shared by the endpoints and Bulk)."""
        w = self.writer
        users = name == "Users"
        if method == "POST":
            return w.create_user(body, client) if users else w.create_group(body, client)
        assert rid is not None
        if method == "PUT":
            return (w.replace_user if users else w.replace_group)(rid, body, client, if_match)
        if method == "PATCH":
            return (w.patch_user if users else w.patch_group)(rid, body, client, if_match)
        if method == "DELETE":
            (w.delete_user if users else w.delete_group)(rid, if_match)
            return rid
        raise WriteError(405, f"Method {method} is not allowed.")

    async def user_status(self, request: Request) -> Response:
        client = self.authorize(request)
        body = await read_json(request)
        try:
            result = self.writer.set_user_status(request.path_params["id"], body, client)
        except WriteError as err:
            raise scim_error(err) from err
        base = str(request.base_url).rstrip("/")
        result["meta"]["location"] = f"{base}/admin/v1/UserStatusChanger/{result['id']}"
        response = scim_response(result)
        response.headers["ETag"] = result["meta"]["version"]
        return response

    async def bulk(self, request: Request) -> Response:
        """``POST /admin/v1/Bulk``: at most 50 operations (413 beyond), ``failOnErrors``."""
        client = self.authorize(request)
        body = await read_json(request)
        if not isinstance(body, dict) or BULK_REQUEST not in (body.get("schemas") or []):
            raise ScimError(400, f"A BulkRequest body with schemas [{BULK_REQUEST}] is "
                            "required.", scim_type="invalidSyntax")
        ops = body.get("Operations")
        if not isinstance(ops, list) or not ops:
            raise ScimError(400, "Operations must be a non-empty list.",
                            scim_type="invalidSyntax")
        if len(ops) > BULK_MAX_OPERATIONS:
            raise ScimError(413, f"The bulk request has {len(ops)} operations; maxOperations "
                            f"is {BULK_MAX_OPERATIONS}.", scim_type="tooMany",
                            message_id="error.common.common.maxOperationsExceeded")
        fail_on = body.get("failOnErrors")
        base = str(request.base_url).rstrip("/")
        results, errors, bulk_ids = [], 0, {}
        for op in ops:
            result = self._bulk_one(op, client, base, bulk_ids)
            results.append(result)
            if int(result["status"]) >= 400:
                errors += 1
                if isinstance(fail_on, int) and errors >= fail_on:
                    break
        return scim_response({"schemas": [BULK_RESPONSE], "Operations": results})

    def _bulk_one(self, op: Any, client: str | None, base: str,
                  bulk_ids: dict[str, str]) -> dict[str, Any]:
        method = str((op or {}).get("method", "")).upper() if isinstance(op, dict) else ""
        path = str(op.get("path", "")) if isinstance(op, dict) else ""
        out: dict[str, Any] = {"method": method}
        if isinstance(op, dict) and op.get("bulkId"):
            out["bulkId"] = op["bulkId"]
        parts = [p for p in path.split("/") if p]
        if method not in ("POST", "PUT", "PATCH", "DELETE") or not parts or parts[0] not in (
                "Users", "Groups") or len(parts) != (1 if method == "POST" else 2):
            err = ScimError(400, f"Invalid bulk operation {method} {path}.",
                            scim_type="invalidSyntax")
            return {**out, "status": "400", "response": err.body()}
        rid = parts[1] if len(parts) == 2 else None
        if rid and rid.startswith("bulkId:"):
            rid = bulk_ids.get(rid[len("bulkId:"):], rid)
        try:
            rid = self._do(method, parts[0], rid, op.get("data"), client, op.get("version"))
        except WriteError as err:
            return {**out, "status": str(err.status), "response": scim_error(err).body()}
        if method == "POST" and out.get("bulkId"):
            bulk_ids[out["bulkId"]] = rid
        out["location"] = f"{base}/admin/v1/{parts[0]}/{rid}"
        out["status"] = {"POST": "201", "DELETE": "204"}.get(method, "200")
        return out


class DiscoveryEndpoints:
    """``ServiceProviderConfig``, ``ResourceTypes`` and ``Schemas`` (GET only; others 405)."""

    def __init__(self, authorize: Authorize) -> None:
        self.authorize = authorize

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def config(self, request: Request) -> Response:
        self.authorize(request)
        return scim_response(service_provider_config(self._base(request)))

    @staticmethod
    def _listing(resources: list[dict[str, Any]], query: Query) -> dict[str, Any]:
        page = resources[query.start - 1: query.start - 1 + query.count] if query.count else []
        body: dict[str, Any] = {"schemas": [LIST_SCHEMA], "totalResults": len(resources)}
        if page:
            body["Resources"] = page
        body.update(startIndex=query.start, itemsPerPage=query.count)
        return body

    async def resource_types(self, request: Request) -> Response:
        self.authorize(request)
        query = make_query(dict(request.query_params))
        types = [resource_type_body(n, self._base(request)) for n in RESOURCE_TYPES]
        return scim_response(self._listing(types, query))

    async def resource_type(self, request: Request) -> Response:
        self.authorize(request)
        name = request.path_params["id"]
        if name not in RESOURCE_TYPES:
            raise ScimError(404, f"Resource {name} not found.")
        return scim_response(resource_type_body(name, self._base(request)))

    async def schemas(self, request: Request) -> Response:
        self.authorize(request)
        query = make_query(dict(request.query_params))
        schemas = [s.to_scim(self._base(request)) for s in SCHEMAS]
        return scim_response(self._listing(schemas, query))

    async def schema(self, request: Request) -> Response:
        self.authorize(request)
        urn = request.path_params["urn"]
        found = SCHEMA_BY_URN.get(urn.lower())
        if found is None:
            raise ScimError(404, f"Resource {urn} not found.")
        return scim_response(found.to_scim(self._base(request)))


def endpoint_routes(writes: WriteEndpoints, discovery: DiscoveryEndpoints) -> list[BaseRoute]:
    """Routes to add after the read routes (``/Users/.search`` must match before ``{id}``)."""
    routes: list[BaseRoute] = []
    for name in ("Users", "Groups"):
        routes += [
            Route(f"/admin/v1/{name}", writes.create(name), methods=["POST"]),
            Route(f"/admin/v1/{name}/{{id}}", writes.modify(name, "PUT"), methods=["PUT"]),
            Route(f"/admin/v1/{name}/{{id}}", writes.modify(name, "PATCH"), methods=["PATCH"]),
            Route(f"/admin/v1/{name}/{{id}}", writes.modify(name, "DELETE"),
                  methods=["DELETE"]),
        ]
    routes += [
        Route("/admin/v1/UserStatusChanger/{id}", writes.user_status, methods=["PUT"]),
        Route("/admin/v1/Bulk", writes.bulk, methods=["POST"]),
        Route("/admin/v1/ServiceProviderConfig", discovery.config, methods=["GET"]),
        Route("/admin/v1/ResourceTypes", discovery.resource_types, methods=["GET"]),
        Route("/admin/v1/ResourceTypes/{id}", discovery.resource_type, methods=["GET"]),
        Route("/admin/v1/Schemas", discovery.schemas, methods=["GET"]),
        Route("/admin/v1/Schemas/{urn:path}", discovery.schema, methods=["GET"]),
    ]
    return routes
