"""Shared harness for the API tests (helpers only; no fixtures, no tests here).

The `api` fixture (tests/integration/conftest.py) yields an `Api`: it serves `create_app(core)`
on a real loopback port through aiohttp's TestServer and seeds two projects
("default" and "other"), one agent in each, and tokens for every kind of
caller the tests need. `attachment` builds an attachment body.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from umsg.core import Core

_keys = itertools.count(1)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]
    raw: bytes


@dataclass
class Api:
    client: TestClient
    core: Core
    tokens: dict[str, str]
    default_pid: int
    other_pid: int
    alice_id: int  # agent in "default"
    bob_id: int  # agent in "other"
    sent: list[dict[str, Any]] = field(default_factory=list)

    def auth(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens.get(who, who)}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        who: str | None = "admin",
        json_body: Any = None,
        data: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        hdrs = {**self.auth(who), **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        resp: ClientResponse
        async with self.client.request(method, path, data=data, params=params, headers=hdrs) as resp:
            raw = await resp.read()
            body: Any = None
            if resp.content_type == "application/json" and raw:
                body = json.loads(raw)
            return Reply(resp.status, body, resp.headers.copy(), raw)

    async def message(
        self,
        *,
        sender: str = "carol@example.com",
        text: str = "hello",
        who: str = "admin",
        project: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Submit a message through the API and return the 201 body."""
        body: dict[str, Any] = {
            "from": {"kind": "email", "value": sender, "name": "Carol"},
            "to": ["support@acme.test"],
            "subject": "Help",
            "text": text,
            "dedupe_key": f"k{next(_keys)}",
            **extra,
        }
        if project is not None:
            body["project"] = project
        r = await self.call("POST", "/api/v1/messages", who=who, json_body=body)
        assert r.status == 201, r.body
        self.sent.append(r.body)
        return dict(r.body)


def attachment(data: bytes, media_type: str = "application/pdf", filename: str = "doc.pdf") -> dict[str, str]:
    return {"media_type": media_type, "filename": filename, "data_base64": base64.b64encode(data).decode()}
