"""Bad input gets a 4xx with a JSON message a person can act on, and never a 5xx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from api_harness import Api, Reply

from umsg.web.table import ENDPOINTS

MSG = {"from": {"kind": "email", "value": "x@example.com"}, "text": "hi", "dedupe_key": "e1"}


def assert_error(r: Reply, status: int, *needles: str) -> None:
    assert r.status == status, (r.status, r.body)
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.body["error"]
    assert err["status"] == status and err["code"] and err["request_id"] == r.headers["X-Request-Id"]
    for needle in needles:
        assert needle in err["message"], err["message"]


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    needles: tuple[str, ...] = ()
    who: str | None = "admin"
    body: Any = None
    raw: bytes | None = None
    params: dict[str, str] | None = None


# Paths with {conv}, {msg}, {part}, {contact}, {item} are filled with objects of project "default".
CASES = [
    Case("malformed json", "POST", "/api/v1/messages", 400, ("malformed JSON at line 1 column 14",),
         raw=b'{"from": {"x"}'),
    Case("not utf-8", "POST", "/api/v1/messages", 400, ("not UTF-8",), raw=b'{"text": "\xff"}'),
    Case("NaN", "POST", "/api/v1/messages", 400, ("NaN",), raw=b'{"text": NaN}'),
    Case("wrong types", "POST", "/api/v1/messages", 422, ("body.from.kind", "body.to"),
         body={**MSG, "from": {"kind": "pigeon", "value": "x"}, "to": "not-a-list"}),
    Case("missing dedupe_key", "POST", "/api/v1/messages", 422, ("body.dedupe_key", "Field required"),
         body={"from": MSG["from"], "text": "hi"}),
    Case("unknown field", "POST", "/api/v1/messages", 422, ("body.colour",), body={**MSG, "colour": "red"}),
    Case("bad base64", "POST", "/api/v1/messages", 422, ("body.attachments[0].data_base64", "base64"),
         body={**MSG, "attachments": [{"media_type": "text/plain", "data_base64": "@@@"}]}),
    Case("NUL in text", "POST", "/api/v1/messages", 422, ("body.text", "NUL"),
         body={**MSG, "text": "a\u0000b"}),
    Case("body is a list", "POST", "/api/v1/messages", 422, ("body",), body=[1, 2]),
    Case("unknown project", "POST", "/api/v1/messages", 422, ("unknown project 'nope'",),
         body={**MSG, "project": "nope"}),
    Case("bad query", "GET", "/api/v1/conversations", 422, ("query.limit",), params={"limit": "many"}),
    Case("unknown query param", "GET", "/api/v1/conversations", 422, ("query.limt",), params={"limt": "5"}),
    Case("bad status filter", "GET", "/api/v1/conversations", 422, ("query.status",), params={"status": "x"}),
    Case("unknown conversation", "GET", "/api/v1/conversations/999999", 404,
         ("conversation 999999 not found",)),
    Case("non-numeric id", "GET", "/api/v1/messages/abc", 404, ("message 'abc' not found",)),
    Case("id beyond bigint", "GET", "/api/v1/parts/99999999999999999999999", 404, ("part",)),
    Case("unknown agent", "PUT", "/api/v1/agents/424242/state", 404, ("agent 424242 not found",),
         body={"state": "busy"}),
    Case("unknown merge", "POST", "/api/v1/contact-merges/777/unmerge", 404, ("contact merge 777",),
         who="supervisor", body={}),
    Case("patch nothing", "PATCH", "/api/v1/conversations/{conv}", 422, ("nothing to change",), body={}),
    Case("patch null status", "PATCH", "/api/v1/conversations/{conv}", 422, ("status cannot be null",),
         body={"status": None}),
    Case("naive snooze time", "PATCH", "/api/v1/conversations/{conv}", 422, ("body.snoozed_until",),
         body={"status": "snoozed", "snoozed_until": "2030-01-01T09:00:00"}),
    Case("snooze without time", "PATCH", "/api/v1/conversations/{conv}", 422, ("body.snoozed_until",),
         body={"status": "snoozed"}),
    Case("assignee not in project", "PATCH", "/api/v1/conversations/{conv}", 422, ("body.assignee_id",),
         body={"assignee_id": "{bob}"}),
    Case("complete unleased item", "POST", "/api/v1/queue/{item}/complete", 409, ("waiting, not leased",)),
    Case("duplicate login", "POST", "/api/v1/agents", 409, ("'alice' already exists",),
         body={"login": "alice", "display_name": "Alice again"}),
    Case("agent unknown project", "POST", "/api/v1/agents", 422, ("body.projects[0]", "unknown project"),
         body={"login": "zed", "display_name": "Zed", "projects": ["nope"]}),
    Case("skill proficiency", "POST", "/api/v1/agents", 422, ("body.skills.billing",),
         body={"login": "zed", "display_name": "Zed", "projects": ["default"], "skills": {"billing": 9}}),
    Case("empty reply", "POST", "/api/v1/conversations/{conv}/reply", 422, ("needs text",),
         body={"text": "  "}),
    Case("bad state", "PUT", "/api/v1/agents/{alice}/state", 422, ("body.state",), body={"state": "asleep"}),
    # -- authentication and roles
    Case("no token", "GET", "/api/v1/queue/stats", 401, ("missing bearer token",), who=None),
    Case("wrong token", "GET", "/api/v1/queue/stats", 401, ("unknown or revoked",), who="umsg_not-a-token"),
    Case("token in query off the websocket", "GET", "/api/v1/queue/stats", 401, ("only on the websocket",),
         who=None, params={"access_token": "{admin_token}"}),
    Case("agent submits a message", "POST", "/api/v1/messages", 403, ("needs role admin or supervisor",),
         who="alice", body=MSG),
    Case("supervisor creates an agent", "POST", "/api/v1/agents", 403, ("needs role admin",),
         who="supervisor",
         body={"login": "zed", "display_name": "Zed"}),
    Case("agent merges contacts", "POST", "/api/v1/contacts/{contact}/merge", 403, ("role",), who="alice",
         body={"into_id": 1}),
    Case("agent changes another's state", "PUT", "/api/v1/agents/{bob}/state", 403, ("its own state",),
         who="alice", body={"state": "busy"}),
    # -- another project's objects do not exist for the caller
    Case("other project conversation", "GET", "/api/v1/conversations/{conv}", 404, ("conversation",),
         who="bob"),
    Case("other project patch", "PATCH", "/api/v1/conversations/{conv}", 404, ("conversation",), who="bob",
         body={"priority": 1}),
    Case("other project messages", "GET", "/api/v1/conversations/{conv}/messages", 404, (), who="bob"),
    Case("other project reply", "POST", "/api/v1/conversations/{conv}/reply", 404, (), who="bob",
         body={"text": "hi"}),
    Case("other project message", "GET", "/api/v1/messages/{msg}", 404, ("message",), who="bob"),
    Case("other project part", "GET", "/api/v1/parts/{part}/content", 404, ("part",), who="bob"),
    Case("other project contact", "GET", "/api/v1/contacts/{contact}", 404, ("contact",), who="bob"),
    Case("other project merge", "POST", "/api/v1/contacts/{contact}/merge", 404, ("contact",),
         who="bob_supervisor", body={"into_id": 1}),
    Case("other project item", "POST", "/api/v1/queue/{item}/complete", 404, ("queue item",), who="bob"),
    Case("other project agent", "GET", "/api/v1/agents/{alice}", 404, ("agent",), who="bob"),
    Case("other project submit", "POST", "/api/v1/messages", 404, ("project 'default' not found",),
         who="bob_supervisor", body={**MSG, "project": "default"}),
    # -- routing
    Case("unknown route", "GET", "/api/v1/nothing-here", 404, ("no such resource",)),
    Case("wrong method", "DELETE", "/api/v1/conversations", 405, ("use GET",)),
]


async def _seed(api: Api) -> dict[str, str]:
    sent = await api.message(sender="seed@example.com")
    m = await api.call("GET", f"/api/v1/messages/{sent['message_id']}")
    return {
        "conv": str(sent["conversation_id"]),
        "msg": str(sent["message_id"]),
        "part": str(m.body["parts"][0]["id"]),
        "contact": str(sent["contact_id"]),
        "item": str(sent["queue_item_id"]),
        "alice": str(api.alice_id),
        "bob": str(api.bob_id),
        "admin_token": api.tokens["admin"],
    }


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in ids.items():
            if value == "{" + k + "}" and v.isdigit():
                return int(v)
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


async def test_bad_input_table(api: Api) -> None:
    ids = await _seed(api)
    for case in CASES:
        r = await api.call(
            case.method,
            _fill(case.path, ids),
            who=case.who,
            json_body=None if case.body is None else _fill(case.body, ids),
            data=case.raw,
            params=None if case.params is None else _fill(case.params, ids),
            headers={"Content-Type": "application/json"} if case.raw is not None else None,
        )
        try:
            assert_error(r, case.status, *case.needles)
        except AssertionError as exc:
            raise AssertionError(f"case {case.name!r}: {exc}") from exc
        if case.status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        if case.status == 405:
            assert "GET" in r.headers["Allow"]


async def test_oversize_body_is_413_naming_the_limit(api: Api) -> None:
    limit = api.core.settings.http.max_body_bytes
    r = await api.call("POST", "/api/v1/messages", data=b"x" * (limit + 1),
                       headers={"Content-Type": "application/json"})
    assert_error(r, 413, f"limit of {limit} bytes")


async def test_other_projects_never_leak_into_lists(api: Api) -> None:
    await _seed(api)
    for path in ("/api/v1/conversations", "/api/v1/contacts", "/api/v1/queue"):
        r = await api.call("GET", path, who="bob")
        assert r.status == 200 and r.body["items"] == [], path
    agents = await api.call("GET", "/api/v1/agents", who="bob")
    assert [a["login"] for a in agents.body["items"]] == ["bob"]


BAD_BODIES: list[bytes] = [
    b"", b"null", b"[]", b"0", b'"text"', b"{}", b'{"a": 1}', b"{" * 5000, b"[" * 100 + b"]" * 100,
    b'{"x": ' + b"9" * 5000 + b"}", b'{"text": "\\u0000"}', b"\xff\xfe", b'{"from": null}',
    b'{"id": 99999999999999999999999, "into_id": 99999999999999999999999, "priority": 1e400}',
    b'{"lease_seconds": -1, "limit": 1e9, "state": [], "status": {}, "reason": ""}',
]
BAD_IDS = ["0", "-1", "abc", "1.5", "99999999999999999999999", "9223372036854775807", "%00"]
BAD_QUERIES = [{"limit": "0"}, {"limit": "-5"}, {"after_id": "x"}, {"after_id": "99999999999999999999999"},
               {"assignee": "nobody"}, {"status": "\x00"}, {"identity": "a" * 1000}]


@pytest.mark.parametrize("who", ["admin", "alice"])
async def test_no_bad_input_reaches_a_5xx(api: Api, who: str) -> None:
    ids = await _seed(api)
    seen = 0
    for ep in ENDPOINTS:
        if ep.path in ("/api/v1/events",):
            continue  # the websocket is exercised in test_api_ws.py
        paths = [ep.path.replace("{id}", bad) for bad in BAD_IDS] if "{id}" in ep.path else [ep.path]
        if "{id}" in ep.path:
            paths.append(ep.path.replace("{id}", ids["item"]))
        for path in paths:
            for body in BAD_BODIES if ep.body is not None else [None]:
                for params in BAD_QUERIES if ep.query is not None else [None]:
                    r = await api.call(ep.method, path, who=who, data=body, params=params,
                                       headers={"Content-Type": "application/json"})
                    seen += 1
                    assert r.status < 500, (ep.method, path, body, params, r.body)
                    if r.status >= 400:
                        assert r.body["error"]["message"], (ep.method, path, r.body)
    assert seen > 300
