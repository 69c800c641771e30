"""The OpenAPI 3.1 document, generated from the route table that also registers the routes.

Request bodies and query strings come from the pydantic models the server
validates with (`model_json_schema`), so a field added to a model appears in
the document and a route that exists is always described.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

import umsg
from umsg.web.endpoints import ENDPOINTS, Ctx, Endpoint, json_ok

REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string", "description": "what went wrong, in words a person can act on"},
                "request_id": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}

# Failures any authenticated endpoint can answer with, besides its own.
COMMON_ERRORS = {401: "missing, unknown or revoked bearer token", 403: "the token's role may not do this"}


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """The model's schema with nested definitions hoisted into components."""
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    return schema


def _parameters(ep: Endpoint, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        }
        for name in re.findall(r"{(\w+)}", ep.path)
    ]
    if ep.query is not None:
        schema = _schema(ep.query, schemas)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _responses(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {}
    codes = dict(ep.responses)
    if ep.auth:
        for code, text in COMMON_ERRORS.items():
            codes.setdefault(code, text)
    if ep.body is not None or ep.query is not None:
        codes.setdefault(422, "a field failed validation (the fields are named)")
    if ep.body is not None:
        codes.setdefault(400, "the body is not well-formed JSON")
        codes.setdefault(413, "the body is larger than the configured limit")
    for code, text in sorted(codes.items()):
        entry: dict[str, Any] = {"description": text}
        if code >= 400:
            entry["content"] = {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}
        elif code not in (101, 204):
            entry["content"] = {ep.media_type: {}}
        out[str(code)] = entry
    return out


def operation(ep: Endpoint, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.operation_id,
        "summary": ep.summary,
        "tags": [ep.tag],
        "responses": _responses(ep),
        "security": [{"bearer": []}] if ep.auth else [],
    }
    description = ep.description
    if ep.auth:
        description = (
            (description + "\n\n" if description else "") + "Roles: " + ", ".join(sorted(ep.roles)) + "."
        )
        op["x-roles"] = sorted(ep.roles)
    if description:
        op["description"] = description
    params = _parameters(ep, schemas)
    if params:
        op["parameters"] = params
    if ep.body is not None:
        schemas.setdefault(ep.body.__name__, _schema(ep.body, schemas))
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=ep.body.__name__)}}},
        }
    return op


def document(endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for `endpoints`."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation(ep, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "umsg API",
            "version": umsg.__version__,
            "description": "Unified messaging gateway: messages, conversations, contacts, the universal "
            'queue and agents. Every error is JSON: {"error": {status, code, message}}.',
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(ctx: Ctx) -> web.StreamResponse:
    return json_ok(document(ctx.request.app[ENDPOINTS]))
