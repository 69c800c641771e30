"""The OpenAPI document describes exactly the registered routes, and is structurally valid 3.1."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any, cast

import pytest

from umsg.config import Settings
from umsg.core import Core
from umsg.web import create_app
from umsg.web.openapi import document
from umsg.web.table import ENDPOINTS

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def doc() -> dict[str, Any]:
    # A round trip through JSON proves the document is plain JSON (no models, no datetimes).
    return cast(dict[str, Any], json.loads(json.dumps(document(ENDPOINTS))))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_registered_route_is_documented(doc: dict[str, Any]) -> None:
    # Only the settings are read while building the app; no store is needed.
    app = create_app(cast(Core, SimpleNamespace(settings=Settings())))
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
        # The inbox page's static files are not API operations.
        and not route.resource.canonical.startswith("/inbox")
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    assert ("get", "/api/v1/openapi.json") in documented and ("get", "/api/v1/events") in documented


def test_document_structure(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    op_ids = []
    for path, ops in doc["paths"].items():
        assert path.startswith("/")
        declared = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            assert method in METHODS
            op_ids.append(op["operationId"])
            assert op["summary"] and op["tags"]
            assert op["responses"] and all(re.fullmatch(r"[1-5]\d\d", code) for code in op["responses"])
            assert all(r["description"] for r in op["responses"].values())
            params = op.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == declared
            assert all(p["in"] in ("path", "query") and "schema" in p for p in params)
            assert all(p["required"] for p in params if p["in"] == "path")
            if op["security"]:
                assert op["security"] == [{"bearer": []}] and "401" in op["responses"]
            if "requestBody" in op:
                assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert "422" in op["responses"] and "400" in op["responses"]
    assert len(op_ids) == len(set(op_ids)), "operationIds must be unique"


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = _refs(doc)
    assert refs
    for ref in refs:
        target = _resolve(doc, ref)
        assert isinstance(target, dict) and ("type" in target or "properties" in target or "enum" in target
                                             or "anyOf" in target or "oneOf" in target), ref


def test_bodies_come_from_the_validation_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    message = schemas["MessageIn"]
    # The alias the wire uses ("from"), not the Python attribute name.
    assert "from" in message["properties"] and "sender" not in message["properties"]
    assert set(message["required"]) == {"from", "dedupe_key"}
    assert message["additionalProperties"] is False
    attachment = _resolve(doc, message["properties"]["attachments"]["items"]["$ref"])
    data = attachment["properties"]["data_base64"]
    assert data["type"] == "string" and data["contentEncoding"] == "base64"
    state = schemas["AgentStateIn"]["properties"]["state"]
    assert "available" in state["enum"] and "offline" in state["enum"]
    post_messages = doc["paths"]["/api/v1/messages"]["post"]
    assert post_messages["x-roles"] == ["admin", "supervisor"]
    assert {"201", "200", "403"} <= set(post_messages["responses"])


def test_public_endpoints_need_no_token(doc: dict[str, Any]) -> None:
    public = {p for p, ops in doc["paths"].items() for op in ops.values() if op["security"] == []}
    # Signing in is how an agent gets a token, so it cannot need one.
    assert public == {"/healthz", "/metrics", "/api/v1/openapi.json", "/api/v1/session"}


def test_query_models_become_query_parameters(doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in doc["paths"]["/api/v1/conversations"]["get"]["parameters"]}
    assert {"limit", "after_id", "status", "channel", "assignee"} <= set(params)
    assert params["limit"]["schema"]["maximum"] == 500 and params["limit"]["required"] is False
