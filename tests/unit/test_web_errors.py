"""The error middleware's mapping from exceptions to JSON answers, and the input parsers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc

from umsg.config import Settings
from umsg.core import Core
from umsg.errors import ConfigError, Conflict, ConversionError, NotFound, PermanentError, TransientError
from umsg.web.api.messages import content_disposition
from umsg.web.errors import HttpProblem, error_middleware
from umsg.web.keys import CORE
from umsg.web.parsing import MAX_DEPTH, decode_json, parse_id, validate

RAISES: dict[str, Exception] = {
    "transient": TransientError("the database is restarting"),
    "permanent": PermanentError("the sender is missing"),
    "conversion": ConversionError("the TIFF is truncated"),
    "notfound": NotFound("conversation 5 not found"),
    "conflict": Conflict("queue item 3 is done, not leased"),
    "problem": HttpProblem(418, "teapot", "short and stout", headers={"X-Why": "tea"}),
    "config": ConfigError("channels.sms: bad url"),
    "dbdown": sa_exc.OperationalError("SELECT 1", {}, Exception("could not connect to 10.0.0.1")),
    "integrity": sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key login")),
    "toolong": sa_exc.DataError("INSERT", {}, Exception("value too long for type varchar(16)")),
    "bug": RuntimeError("password=hunter2 at /srv/secret.py line 3"),
}


def _handler(exc: Exception) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        raise exc

    return handle


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[error_middleware], client_max_size=2048)
    app[CORE] = cast(Core, SimpleNamespace(settings=Settings(http={"max_body_bytes": 2048})))
    for name, exc in RAISES.items():
        app.router.add_get(f"/{name}", _handler(exc))

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(body=await request.read())

    app.router.add_post("/echo", echo)
    async with TestServer(app) as server, TestClient(server) as c:
        yield c


@pytest.mark.parametrize(
    ("name", "status", "code", "needle"),
    [
        ("transient", 503, "unavailable", "the database is restarting"),
        ("permanent", 422, "rejected", "the sender is missing"),
        ("conversion", 422, "rejected", "TIFF"),
        ("notfound", 404, "not_found", "conversation 5"),
        ("conflict", 409, "conflict", "not leased"),
        ("problem", 418, "teapot", "short and stout"),
        ("dbdown", 503, "unavailable", "the store is unavailable"),
        ("integrity", 409, "conflict", "reload and retry"),
        ("toolong", 422, "rejected", "too long for the store"),
    ],
)
async def test_known_errors_map_to_status_and_message(
    client: TestClient, name: str, status: int, code: str, needle: str
) -> None:
    async with client.get(f"/{name}") as r:
        body = await r.json()
        assert r.status == status
        assert body["error"]["code"] == code and needle in body["error"]["message"]
        assert body["error"]["request_id"] == r.headers["X-Request-Id"]
        assert "10.0.0.1" not in body["error"]["message"] and "varchar" not in body["error"]["message"]
        if name in ("transient", "dbdown"):
            assert int(r.headers["Retry-After"]) > 0
        if name == "problem":
            assert r.headers["X-Why"] == "tea"


@pytest.mark.parametrize("name", ["bug", "config"])
async def test_unexpected_errors_are_500_without_internals_and_logged(
    client: TestClient, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="umsg.web.errors"):
        async with client.get(f"/{name}") as r:
            body = await r.json()
    assert r.status == 500 and body["error"]["code"] == "internal"
    text = str(body)
    assert "hunter2" not in text and "secret" not in text and "channels.sms" not in text
    rid = body["error"]["request_id"]
    assert rid in body["error"]["message"]
    assert any(rid in rec.getMessage() and rec.exc_info for rec in caplog.records)


async def test_aiohttp_errors_become_json(client: TestClient) -> None:
    async with client.get("/nowhere") as r:
        assert r.status == 404 and "no such resource: GET /nowhere" in (await r.json())["error"]["message"]
    async with client.delete("/echo") as r:
        assert r.status == 405 and r.headers["Allow"] == "POST"
        assert "use POST" in (await r.json())["error"]["message"]
    async with client.post("/echo", data=b"x" * 4096) as r:
        assert r.status == 413 and "limit of 2048 bytes" in (await r.json())["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"a": }', "line 1 column 7"),
        (b'{\n  "a": 1,\n}', "line 3 column 1"),
        (b"\xc3\x28", "not UTF-8"),
        (b"[Infinity]", "Infinity"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
def test_decode_json_says_where_it_broke(raw: bytes, needle: str) -> None:
    with pytest.raises(HttpProblem) as info:
        decode_json(raw)
    assert info.value.status == 400 and needle in info.value.message


def test_decode_json_empty_body_is_an_empty_object() -> None:
    assert decode_json(b"  \n") == {}


class _Thing(BaseModel):
    name: str
    tags: list[int] = []


def test_validate_names_fields_and_refuses_nul_and_depth() -> None:
    with pytest.raises(HttpProblem) as info:
        validate(_Thing, {"tags": [1, "x"]})
    fields = {f["field"] for f in info.value.fields}
    assert fields == {"body.name", "body.tags[1]"} and info.value.status == 422
    with pytest.raises(HttpProblem) as info:
        validate(_Thing, {"name": "a\x00"})
    assert info.value.fields[0]["field"] == "body.name"
    deep: object = 1
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(HttpProblem) as info:
        validate(_Thing, {"name": "x", "tags": deep})
    assert "nested deeper" in info.value.message


@pytest.mark.parametrize("raw", ["0", "-3", "abc", "١٢", "9223372036854775808", ""])
def test_parse_id_turns_implausible_ids_into_not_found(raw: str) -> None:
    with pytest.raises(NotFound) as info:
        parse_id(raw, "message")
    assert "message" in str(info.value)


def test_parse_id_accepts_bigint_range() -> None:
    assert parse_id("9223372036854775807", "x") == 2**63 - 1


def test_content_disposition_is_safe_and_keeps_the_real_name() -> None:
    header = content_disposition('evil"\r\nX-Injected: 1.pdf', 7, "application/pdf")
    assert "\r" not in header and "\n" not in header
    assert header.startswith('attachment; filename="evil\'X-Injected: 1.pdf"')
    assert content_disposition(None, 7, "application/pdf").startswith('attachment; filename="part-7.pdf"')
    assert "filename*=UTF-8''%E5%A0%B1%E5%91%8A.txt" in content_disposition("報告.txt", 1, "text/plain")
