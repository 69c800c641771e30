"""Happy paths of every API endpoint, on SQLite and PostgreSQL, over real HTTP."""

from __future__ import annotations

import asyncio
import json

from api_harness import Api, attachment
from sqlalchemy import select

from storage.db import create_engine
from storage.models import AgentStateHistory, Event, QueueItem
from umsg.tokens import authenticate, create_token, revoke


async def test_post_message_is_stored_with_its_exact_raw_body(api: Api) -> None:
    body = {
        "from": {"kind": "email", "value": "Dave@Example.com", "name": "Dave"},
        "to": ["support@acme.test"],
        "subject": "Invoice 42",
        "text": "Where is my invoice?",
        "dedupe_key": "raw-1",
        "thread": {"own": ["<m1@example.com>"]},
        "meta": {"lang": "en"},
    }
    # Deliberately odd spacing: the stored raw part must be these bytes, not a re-encoding.
    raw = json.dumps(body, indent=3).encode()
    r = await api.call("POST", "/api/v1/messages", data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 201, r.body
    assert set(r.body) >= {"message_id", "conversation_id", "contact_id", "duplicate", "queue_item_id"}
    assert r.body["duplicate"] is False and r.body["queue_item_id"] is not None

    m = await api.call("GET", f"/api/v1/messages/{r.body['message_id']}")
    assert m.status == 200
    assert m.body["text"] == "Where is my invoice?" and m.body["subject"] == "Invoice 42"
    assert m.body["channel"] == "api" and m.body["direction"] == "in"
    assert m.body["conversation_id"] == r.body["conversation_id"]
    raw_part = next(p for p in m.body["parts"] if p["role"] == "raw")
    assert raw_part["media_type"] == "application/json" and raw_part["size"] == len(raw)

    content = await api.call("GET", raw_part["content_url"])
    assert content.status == 200 and content.raw == raw
    assert content.headers["Content-Type"].startswith("application/json")
    assert content.headers["Content-Disposition"].startswith("attachment;")
    assert content.headers["X-Content-Type-Options"] == "nosniff"


async def test_retry_with_same_dedupe_key_is_200_duplicate(api: Api) -> None:
    first = await api.message(dedupe_key="same-key")
    r = await api.call("POST", "/api/v1/messages", json_body={
        "from": {"kind": "email", "value": "carol@example.com"}, "text": "again", "dedupe_key": "same-key"})
    assert r.status == 200
    assert r.body["duplicate"] is True and r.body["message_id"] == first["message_id"]


async def test_concurrent_retries_give_one_201_and_duplicates(api: Api) -> None:
    body = {"from": {"kind": "phone", "value": "+41446681800"}, "text": "hi", "dedupe_key": "burst"}
    replies = await asyncio.gather(*(api.call("POST", "/api/v1/messages", json_body=body) for _ in range(6)))
    assert sorted(r.status for r in replies) == [200] * 5 + [201]
    assert len({r.body["message_id"] for r in replies}) == 1


async def test_attachment_round_trips_with_its_file_name(api: Api) -> None:
    pdf = b"%PDF-1.4 fake\x00\xff bytes"
    sent = await api.message(attachments=[attachment(pdf, filename="Rechnung März.pdf")])
    m = await api.call("GET", f"/api/v1/messages/{sent['message_id']}")
    part = next(p for p in m.body["parts"] if p["filename"] == "Rechnung März.pdf")
    assert part["media_type"] == "application/pdf" and part["size"] == len(pdf)
    r = await api.call("GET", f"/api/v1/parts/{part['id']}/content")
    assert r.status == 200 and r.raw == pdf
    assert r.headers["Content-Type"] == "application/pdf"
    assert "filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf" in r.headers["Content-Disposition"]


async def test_conversations_list_filter_get_and_messages(api: Api) -> None:
    a = await api.message(sender="one@example.com", text="first")
    b = await api.message(sender="two@example.com", text="second")
    r = await api.call("GET", "/api/v1/conversations", params={"status": "open", "channel": "api"})
    assert r.status == 200
    ids = [c["id"] for c in r.body["items"]]
    assert a["conversation_id"] in ids and b["conversation_id"] in ids
    assert all(c["status"] == "open" and c["channel"] == "api" for c in r.body["items"])
    r = await api.call("GET", "/api/v1/conversations", params={"channel": "email"})
    assert r.body["items"] == []

    one = await api.call("GET", f"/api/v1/conversations/{a['conversation_id']}")
    assert one.status == 200 and one.body["contact_id"] == a["contact_id"]
    assert "token" not in one.body  # the reply token is a secret of the conversation

    msgs = await api.call("GET", f"/api/v1/conversations/{a['conversation_id']}/messages")
    assert [m["text"] for m in msgs.body["items"]] == ["first"]
    assert msgs.body["items"][0]["parts"][0]["role"] == "raw"


async def test_pagination_with_limit_and_after_id(api: Api) -> None:
    for i in range(3):
        await api.message(sender=f"p{i}@example.com")
    first = await api.call("GET", "/api/v1/conversations", params={"limit": "2"})
    assert len(first.body["items"]) == 2 and first.body["next_after_id"] == first.body["items"][-1]["id"]
    rest = await api.call("GET", "/api/v1/conversations",
                          params={"limit": "2", "after_id": str(first.body["next_after_id"])})
    assert len(rest.body["items"]) == 1 and rest.body["next_after_id"] is None
    assert rest.body["items"][0]["id"] > first.body["items"][-1]["id"]


async def test_patch_conversation_changes_fields_and_writes_an_event(api: Api) -> None:
    sent = await api.message()
    cid = sent["conversation_id"]
    r = await api.call("PATCH", f"/api/v1/conversations/{cid}", json_body={
        "status": "snoozed", "snoozed_until": "2030-01-01T09:00:00+00:00", "priority": 5,
        "assignee_id": api.alice_id})
    assert r.status == 200, r.body
    assert r.body["status"] == "snoozed" and r.body["priority"] == 5 and r.body["assignee_id"] == api.alice_id
    assert r.body["snoozed_until"].startswith("2030-01-01T09:00:00")
    events = await api.core.events.since(0, [api.default_pid], 1000)
    updated = [e for e in events if e.kind == "conversation.updated"]
    assert len(updated) == 1
    assert updated[0].payload["changes"]["status"] == {"from": "open", "to": "snoozed"}

    # Re-opening ends the snooze; unassigning is an explicit null.
    r = await api.call("PATCH", f"/api/v1/conversations/{cid}",
                       json_body={"status": "open", "assignee_id": None})
    assert r.body["status"] == "open" and r.body["snoozed_until"] is None and r.body["assignee_id"] is None
    r = await api.call("GET", "/api/v1/conversations", params={"assignee": "none"})
    assert cid in [c["id"] for c in r.body["items"]]


async def test_reply_is_accepted_and_queued(api: Api) -> None:
    sent = await api.message()
    r = await api.call("POST", f"/api/v1/conversations/{sent['conversation_id']}/reply", who="alice",
                       json_body={"text": "We are on it."})
    assert r.status == 202, r.body
    assert r.body["direction"] == "out" and r.body["text"] == "We are on it."
    assert r.body["conversation_id"] == sent["conversation_id"]
    assert r.body["status"] in ("queued", "sending", "sent")
    # The api channel has no fixed identity kind: the reply goes to whoever wrote.
    assert r.body["to"] == ["carol@example.com"] and r.body["author_agent_id"] == api.alice_id
    msgs = await api.call("GET", f"/api/v1/conversations/{sent['conversation_id']}/messages")
    assert [m["direction"] for m in msgs.body["items"]] == ["in", "out"]


async def test_contacts_list_get_merge_and_unmerge(api: Api) -> None:
    a = await api.message(sender="first@example.com")
    b = await api.message(sender="second@example.com")
    r = await api.call("GET", "/api/v1/contacts", params={"identity": "first@example.com"})
    assert [c["id"] for c in r.body["items"]] == [a["contact_id"]]
    c = await api.call("GET", f"/api/v1/contacts/{a['contact_id']}")
    assert c.status == 200 and c.body["merged_into"] is None
    assert [i["value"] for i in c.body["identities"]] == ["first@example.com"]

    merged = await api.call("POST", f"/api/v1/contacts/{a['contact_id']}/merge", who="supervisor",
                            json_body={"into_id": b["contact_id"], "reason": "same person"})
    assert merged.status == 200, merged.body
    assert merged.body["source_contact_id"] == a["contact_id"]
    assert merged.body["target_contact_id"] == b["contact_id"]
    c = await api.call("GET", f"/api/v1/contacts/{a['contact_id']}")
    assert c.body["merged_into"] == b["contact_id"]
    listed = await api.call("GET", "/api/v1/contacts")
    assert a["contact_id"] not in [x["id"] for x in listed.body["items"]]

    undone = await api.call("POST", f"/api/v1/contact-merges/{merged.body['id']}/unmerge", who="supervisor")
    assert undone.status == 200, undone.body
    assert undone.body["undone_at"] is not None
    c = await api.call("GET", f"/api/v1/contacts/{a['contact_id']}")
    assert c.body["merged_into"] is None


async def test_queue_list_stats_claim_complete_release_fail(api: Api) -> None:
    first = await api.message(sender="q1@example.com")
    await api.message(sender="q2@example.com")
    r = await api.call("GET", "/api/v1/queue", params={"status": "waiting"})
    assert first["queue_item_id"] in [i["id"] for i in r.body["items"]]
    stats = await api.call("GET", "/api/v1/queue/stats")
    assert stats.body["waiting"] == 2 and stats.body["leased"] == 0

    claimed = await api.call("POST", "/api/v1/queue/claim", who="alice", json_body={"lease_seconds": 30})
    assert claimed.status == 200 and claimed.body["status"] == "leased"
    assert claimed.body["lease_owner"] == f"agent:{api.alice_id}"
    done = await api.call("POST", f"/api/v1/queue/{claimed.body['id']}/complete", who="alice")
    assert done.status == 200 and done.body["status"] == "done"

    # Claim with an empty body: every field is optional.
    second = await api.call("POST", "/api/v1/queue/claim", who="supervisor")
    assert second.status == 200
    assert second.body["lease_owner"].endswith(f"@{api.core.instance_id}")
    released = await api.call("POST", f"/api/v1/queue/{second.body['id']}/release", who="supervisor")
    assert released.body["status"] == "waiting"
    again = await api.call("POST", "/api/v1/queue/claim", who="supervisor", json_body={})
    assert again.body["id"] == second.body["id"]
    failed = await api.call("POST", f"/api/v1/queue/{again.body['id']}/fail", who="supervisor",
                            json_body={"reason": "customer unreachable", "permanent": True})
    assert failed.status == 200 and failed.body["status"] == "dead"
    assert failed.body["last_error"] == "customer unreachable"

    nothing = await api.call("POST", "/api/v1/queue/claim", who="supervisor", json_body={})
    assert nothing.status == 204 and nothing.raw == b""
    stats = await api.call("GET", "/api/v1/queue/stats")
    assert (stats.body["done"], stats.body["dead"], stats.body["waiting"]) == (1, 1, 0)


async def test_agents_create_list_get_and_change_state(api: Api) -> None:
    r = await api.call("POST", "/api/v1/agents", json_body={
        "login": "erin", "display_name": "Erin", "email": "erin@acme.test", "capacity": 3,
        "projects": ["default", "other"], "skills": {"billing": 4, "german": 2}})
    assert r.status == 201, r.body
    erin = r.body
    assert erin["projects"] == ["default", "other"] and erin["skills"] == {"billing": 4, "german": 2}
    assert erin["state"] == "offline" and erin["capacity"] == 3

    listed = await api.call("GET", "/api/v1/agents")
    assert {"alice", "bob", "erin"} <= {a["login"] for a in listed.body["items"]}
    got = await api.call("GET", f"/api/v1/agents/{erin['id']}")
    assert got.status == 200 and got.body["email"] == "erin@acme.test"

    first = await api.call("PUT", f"/api/v1/agents/{erin['id']}/state", json_body={"state": "available"})
    assert first.status == 200 and first.body["state"] == "available"
    second = await api.call("PUT", f"/api/v1/agents/{erin['id']}/state",
                            json_body={"state": "break", "reason": "lunch"})
    assert second.body["state"] == "break" and second.body["state_reason"] == "lunch"
    async with api.core.sessions() as s:
        rows = (await s.scalars(select(AgentStateHistory).where(AgentStateHistory.agent_id == erin["id"])
                                .order_by(AgentStateHistory.id))).all()
        events = (await s.scalars(select(Event).where(Event.kind == "agent.state"))).all()
    assert [h.state for h in rows] == ["offline", "available", "break"]
    assert all(h.ended_at is not None for h in rows[:-1]) and rows[-1].ended_at is None
    # One event per project the agent works in, so each project's feed sees it.
    assert sorted(e.project_id for e in events if e.payload["state"] == "break") == sorted(
        [api.default_pid, api.other_pid])


async def test_agent_may_change_its_own_state(api: Api) -> None:
    r = await api.call("PUT", f"/api/v1/agents/{api.alice_id}/state", who="alice",
                       json_body={"state": "busy"})
    assert r.status == 200 and r.body["state"] == "busy"


async def test_healthz_reports_store_and_queue(api: Api) -> None:
    await api.message()
    r = await api.call("GET", "/healthz", who=None)
    assert r.status == 200
    assert r.body["status"] == "ok"
    assert r.body["store"]["ok"] is True and r.body["store"]["revision"]
    assert r.body["store"]["backend"] == ("sqlite" if api.core.settings.database_url.startswith("sqlite")
                                          else "postgresql")
    assert r.body["queue"]["waiting"] == 1


async def test_healthz_is_503_with_a_reason_when_the_store_is_unreachable(api: Api) -> None:
    real = api.core.engine
    # Nothing listens on port 1: a real, refused connection.
    dead = create_engine("postgresql://umsg:s3cret@127.0.0.1:1/nowhere")
    api.core.engine = dead
    try:
        r = await api.call("GET", "/healthz", who=None)
    finally:
        api.core.engine = real
        await dead.dispose()
    assert r.status == 503 and r.headers["Retry-After"]
    assert r.body["status"] == "unavailable" and r.body["store"]["ok"] is False
    assert "unreachable" in r.body["reason"]
    assert "s3cret" not in r.raw.decode()


async def test_metrics_expose_http_ingest_and_queue_figures(api: Api) -> None:
    await api.message()
    await api.call("GET", "/api/v1/conversations/999999")
    assert (await api.call("GET", "/metrics", who=None)).status == 401  # not public by default
    r = await api.call("GET", "/metrics", who="admin")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.raw.decode()
    assert 'umsg_http_requests_total{method="POST",route="/api/v1/messages",status="201"} 1.0' in text
    # Route templates, not paths, label the series.
    assert 'route="/api/v1/conversations/{id}",status="404"' in text
    assert "umsg_http_request_duration_seconds_bucket" in text
    assert "umsg_ingest_total 1.0" in text
    assert 'umsg_queue_items{status="waiting"} 1.0' in text
    assert "umsg_store_up 1.0" in text


async def test_openapi_document_is_public(api: Api) -> None:
    r = await api.call("GET", "/api/v1/openapi.json", who=None)
    assert r.status == 200 and r.body["openapi"].startswith("3.1")
    assert "post" in r.body["paths"]["/api/v1/messages"]


async def test_tokens_authenticate_scope_and_revoke(api: Api) -> None:
    core = api.core
    token = await create_token(core.sessions, "agent", agent_id=api.bob_id, label="bob laptop")
    assert token.startswith("umsg_") and len(token) > 40
    p = await authenticate(core.sessions, token)
    assert p is not None and p.role == "agent" and p.agent_id == api.bob_id
    assert p.project_ids == frozenset({api.other_pid})
    admin = await authenticate(core.sessions, api.tokens["admin"])
    assert admin is not None and admin.project_ids is None
    assert await revoke(core.sessions, p.token_id) is True
    assert await revoke(core.sessions, p.token_id) is False
    assert await authenticate(core.sessions, token) is None
    r = await api.call("GET", "/api/v1/queue/stats", who=token)
    assert r.status == 401


async def test_queue_items_are_project_scoped(api: Api) -> None:
    await api.message(sender="d@example.com")
    other = await api.message(sender="o@example.com", project="other")
    r = await api.call("GET", "/api/v1/queue", who="bob")
    assert [i["id"] for i in r.body["items"]] == [other["queue_item_id"]]
    stats = await api.call("GET", "/api/v1/queue/stats", who="bob")
    assert stats.body["waiting"] == 1
    claimed = await api.call("POST", "/api/v1/queue/claim", who="bob", json_body={})
    assert claimed.body["id"] == other["queue_item_id"]
    async with api.core.sessions() as s:
        item = await s.get(QueueItem, other["queue_item_id"])
    assert item is not None and item.lease_owner == f"agent:{api.bob_id}"
