"""The inbox's HTTP API: sign-in, work list, contact timeline, notes, canned responses,
wrap-up and close, the supervisors' wall, and fax page images."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from api_harness import Api, attachment
from router_driver import Clock, Driver

from storage.types import utcnow

SHARED = Path(__file__).resolve().parents[3] / "shared"
FAX_TIFF = SHARED / "corpus" / "fax" / "itu1.tif"


async def _sign_in(api: Api, login: str, password: str) -> str:
    r = await api.call("POST", "/api/v1/session", who=None, json_body={"login": login, "password": password})
    assert r.status == 201, r.body
    return str(r.body["token"])


async def test_password_and_session(api: Api) -> None:
    bad = await api.call("POST", "/api/v1/session", who=None, json_body={"login": "alice", "password": "nope"})
    assert bad.status == 401  # no password set yet: nothing matches
    short = await api.call("PUT", f"/api/v1/agents/{api.alice_id}/password", json_body={"password": "x"})
    assert short.status == 422
    other = await api.call("PUT", f"/api/v1/agents/{api.bob_id}/password", who="alice",
                           json_body={"password": "long enough"})
    assert other.status == 403
    r = await api.call("PUT", f"/api/v1/agents/{api.alice_id}/password",
                       json_body={"password": "correct horse", "role": "supervisor"})
    assert r.status == 200, r.body
    wrong = await api.call("POST", "/api/v1/session", who=None,
                           json_body={"login": "alice", "password": "correct hors"})
    assert wrong.status == 401
    unknown = await api.call("POST", "/api/v1/session", who=None, json_body={"login": "zed", "password": "a"})
    assert unknown.status == 401 and unknown.body["error"]["message"] == wrong.body["error"]["message"]
    token = await _sign_in(api, "alice", "correct horse")
    me = await api.call("GET", "/api/v1/session", who=token)
    assert me.status == 200
    assert me.body["role"] == "supervisor" and me.body["agent"]["login"] == "alice"
    assert [p["slug"] for p in me.body["projects"]] == ["default"]  # bound to alice's project only
    assert "available" in me.body["states"] and "missed" not in me.body["states"]
    assert "password_hash" not in me.body["agent"]
    wall = await api.call("GET", "/api/v1/inbox/wall", who=token)
    assert wall.status == 200 and [a["login"] for a in wall.body["agents"]] == ["alice"]
    # Setting a new password ends the other sessions.
    await api.call("PUT", f"/api/v1/agents/{api.alice_id}/password", json_body={"password": "battery staple"})
    assert (await api.call("GET", "/api/v1/session", who=token)).status == 401
    token = await _sign_in(api, "alice", "battery staple")
    assert (await api.call("DELETE", "/api/v1/session", who=token)).status == 204
    assert (await api.call("GET", "/api/v1/session", who=token)).status == 401


async def test_work_timeline_notes_close(api: Api) -> None:
    clock = Clock()
    clock.now = utcnow()
    d = Driver(api.core, clock)
    await d.start()
    first = await api.message(sender="carol@example.com", text="first, by email")
    second = await api.message(sender="carol@example.com", text="second", thread={"refs": [], "own": []},
                               channel="api", subject="Another thing")
    assert first["contact_id"] == second["contact_id"]
    await api.call("PUT", f"/api/v1/agents/{api.alice_id}/state", who="alice", json_body={"state": "available"})
    await d.round()
    offers = (await api.call("GET", "/api/v1/offers", who="alice")).body["items"]
    assert offers, "alice was offered the item"
    for o in offers:
        assert (await api.call("POST", f"/api/v1/offers/{o['id']}/accept", who="alice")).status == 200
    work = await api.call("GET", "/api/v1/inbox/work", who="alice")
    assert work.status == 200
    held = {w["id"]: w for w in work.body["items"]}
    conv = offers[0]["conversation_id"]
    assert conv in held and held[conv]["contact"]["display_name"] == "Carol"
    assert held[conv]["item"]["status"] == "leased" and held[conv]["waiting_since"] is not None
    assert (await api.call("GET", "/api/v1/inbox/work", who="bob")).body["items"] == []

    note = await api.call("POST", f"/api/v1/conversations/{conv}/notes", who="alice",
                          json_body={"text": "customer is a VIP"})
    assert note.status == 201 and note.body["direction"] == "note"
    assert (await api.call("POST", f"/api/v1/conversations/{conv}/notes", who="bob",
                           json_body={"text": "x"})).status == 404
    reply = await api.call("POST", f"/api/v1/conversations/{conv}/reply", who="alice", json_body={
        "text": "", "attachments": [attachment(b"%PDF-1.4 test", filename="invoice.pdf")]})
    assert reply.status == 202, reply.body

    page1 = await api.call("GET", f"/api/v1/contacts/{first['contact_id']}/timeline", who="alice",
                           params={"limit": "2"})
    assert page1.status == 200 and len(page1.body["items"]) == 2
    assert page1.body["contact"]["identities"][0]["value"] == "carol@example.com"
    rest = await api.call("GET", f"/api/v1/contacts/{first['contact_id']}/timeline", who="alice",
                          params={"after_id": str(page1.body["next_after_id"])})
    timeline = page1.body["items"] + rest.body["items"]
    assert [m["direction"] for m in timeline] == ["in", "in", "note", "out"]
    assert {m["conversation_id"] for m in timeline[:2]} == {first["conversation_id"], second["conversation_id"]}
    assert timeline[3]["parts"][0]["filename"] == "invoice.pdf" and timeline[2]["author_name"] == "Alice"
    assert (await api.call("GET", f"/api/v1/contacts/{first['contact_id']}/timeline", who="bob")).status == 404
    waited = (await api.call("GET", "/api/v1/inbox/work", who="alice")).body["items"]
    assert next(w for w in waited if w["id"] == conv)["waiting_since"] is None  # answered

    # Wrap-up codes: required once the project defines some.
    made = await api.call("POST", "/api/v1/wrapup-codes", json_body={"project": "default", "code": "solved",
                                                                      "label": "Solved"})
    assert made.status == 201
    assert (await api.call("POST", "/api/v1/wrapup-codes", who="alice",
                           json_body={"project": "default", "code": "x", "label": "X"})).status == 403
    missing = await api.call("POST", f"/api/v1/conversations/{conv}/close", who="alice", json_body={})
    assert missing.status == 422
    closed = await api.call("POST", f"/api/v1/conversations/{conv}/close", who="alice",
                            json_body={"wrapup_code": "solved", "note": "refund sent"})
    assert closed.status == 200 and closed.body["status"] == "closed" and closed.body["wrapup"] == "solved"
    item = held[conv]["item"]["id"]
    assert (await api.call("GET", "/api/v1/queue?status=done", who="alice")).body["items"][0]["id"] == item
    work = await api.call("GET", "/api/v1/inbox/work", who="alice")
    assert conv not in {w["id"] for w in work.body["items"]}
    msgs = await api.call("GET", f"/api/v1/conversations/{conv}/messages", who="alice")
    assert msgs.body["items"][-1]["flags"]["wrapup"] == "solved"


async def test_canned_responses_admin(api: Api) -> None:
    body = {"project": "default", "title": "Greeting", "body": "Hello {{contact.name}}, {{agent.name}} here."}
    assert (await api.call("POST", "/api/v1/canned-responses", who="alice", json_body=body)).status == 403
    made = await api.call("POST", "/api/v1/canned-responses", json_body=body)
    assert made.status == 201 and made.body["body"] == body["body"]
    assert (await api.call("POST", "/api/v1/canned-responses", json_body=body)).status == 409
    other = await api.call("POST", "/api/v1/canned-responses",
                           json_body={**body, "project": "other", "title": "Other's"})
    assert other.status == 201
    mine = await api.call("GET", "/api/v1/canned-responses", who="alice")
    assert [c["title"] for c in mine.body["items"]] == ["Greeting"]
    edited = await api.call("PATCH", f"/api/v1/canned-responses/{made.body['id']}", who="supervisor",
                            json_body={"title": "Hello"})
    assert edited.status == 200 and edited.body["title"] == "Hello"
    assert (await api.call("DELETE", f"/api/v1/canned-responses/{other.body['id']}",
                           who="bob_supervisor")).status == 204
    assert (await api.call("DELETE", f"/api/v1/canned-responses/{made.body['id']}",
                           who="bob_supervisor")).status == 404


async def test_wall_counts_queues_and_agents(api: Api) -> None:
    await api.message(text="one")
    await api.message(sender="dave@example.com", text="two")
    await api.message(sender="erin@example.com", text="elsewhere", project="other")
    assert (await api.call("GET", "/api/v1/inbox/wall", who="alice")).status == 403
    wall = await api.call("GET", "/api/v1/inbox/wall", who="bob_supervisor")
    assert wall.status == 200
    assert [(q["queue"], q["waiting"]) for q in wall.body["queues"]] == [("default", 1)]
    everyone = await api.call("GET", "/api/v1/inbox/wall", who="supervisor")
    waiting = {q["project_id"]: q for q in everyone.body["queues"]}
    assert waiting[api.default_pid]["waiting"] == 2 and waiting[api.default_pid]["oldest_wait_seconds"] >= 0
    assert {a["login"] for a in everyone.body["agents"]} == {"alice", "bob"}
    assert all(a["load"] == 0 and a["items"] == 0 for a in everyone.body["agents"])


async def test_fax_pages_render(api: Api, tmp_path: Path) -> None:
    pdf = tmp_path / "two.pdf"
    await asyncio.to_thread(subprocess.run, [
        "gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", f"-sOutputFile={pdf}", "-c",
        "/Helvetica findfont 40 scalefont setfont 100 500 moveto (One) show showpage "
        "100 500 moveto (Two) show showpage"], check=True)
    sent = await api.message(text="fax", attachments=[
        attachment(FAX_TIFF.read_bytes(), "image/tiff", "itu1.tif"), attachment(pdf.read_bytes())])
    msg = await api.call("GET", f"/api/v1/messages/{sent['message_id']}", who="alice")
    parts = {p["filename"]: p["id"] for p in msg.body["parts"] if p["role"] == "attachment"}
    tif, doc = parts["itu1.tif"], parts["doc.pdf"]
    assert (await api.call("GET", f"/api/v1/parts/{tif}/pages", who="alice")).body["pages"] == 1
    assert (await api.call("GET", f"/api/v1/parts/{doc}/pages", who="alice")).body["pages"] == 2
    for part, page in ((tif, 1), (doc, 2)):
        img = await api.call("GET", f"/api/v1/parts/{part}/pages/{page}", who="alice")
        assert img.status == 200 and img.headers["Content-Type"] == "image/png"
        assert img.raw.startswith(b"\x89PNG")
    assert (await api.call("GET", f"/api/v1/parts/{doc}/pages/3", who="alice")).status == 404
    assert (await api.call("GET", f"/api/v1/parts/{doc}/pages/1", who="bob")).status == 404
    raw = next(p["id"] for p in msg.body["parts"] if p["role"] == "raw")
    assert (await api.call("GET", f"/api/v1/parts/{raw}/pages", who="alice")).status == 415


async def test_inbox_page_is_served_with_a_strict_policy(api: Api) -> None:
    page = await api.call("GET", "/inbox/", who=None)
    assert page.status == 200 and b"<script" in page.raw
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await api.call("GET", "/inbox/..%2Fapp.py", who=None)).status == 404
    assert (await api.call("GET", "/inbox/nothing.js", who=None)).status == 404
