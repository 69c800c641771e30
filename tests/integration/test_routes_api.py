"""The routes API over real HTTP: read, replace (optimistic), test; reload without a restart."""

from __future__ import annotations

from typing import Any

from api_harness import Api
from sqlalchemy import select

from storage.models import Contact, Event, QueueItem
from umsg.core import Core
from umsg.model import Address, IdentityKind, Inbound

VIP_TABLE: list[dict[str, Any]] = [
    {"name": "api-vip", "channel": "api", "to": "vip@acme.test", "queue": "vip", "priority": 9},
    {"name": "general", "queue": "general"},
]


async def put(api: Api, routes: list[dict[str, Any]], version: int | None, **kw: Any) -> Any:
    body: dict[str, Any] = {"routes": routes}
    if version is not None:
        body["version"] = version
    return await api.call("PUT", "/api/v1/routes", json_body=body, **kw)


async def queue_of(api: Api, queue_item_id: int) -> str:
    async with api.core.sessions() as s:
        item = await s.get(QueueItem, queue_item_id)
    assert item is not None
    return item.queue


async def test_put_takes_effect_on_the_next_ingest_without_restart(api: Api) -> None:
    before = await api.call("GET", "/api/v1/routes")
    assert before.status == 200 and before.headers["ETag"] == '"0"'
    assert before.body == {
        "project": "default",
        "version": 0,
        "source": "builtin",
        "routes": [],
        "implicit_default": True,
        "order": ["default"],
    }
    first = await api.message(to=["vip@acme.test"])
    assert await queue_of(api, first["queue_item_id"]) == "default"

    saved = await put(api, VIP_TABLE, 0)
    assert saved.status == 200, saved.body
    assert saved.body["version"] == 1 and saved.headers["ETag"] == '"1"' and saved.body["source"] == "stored"
    second = await api.message(to=["vip@acme.test"])
    assert await queue_of(api, second["queue_item_id"]) == "vip"

    now = await api.call("GET", "/api/v1/routes", params={"project": "default"})
    assert now.body["version"] == 1 and now.body["order"] == ["api-vip", "general"]
    assert now.body["routes"][0] == VIP_TABLE[0] and not now.body["implicit_default"]
    async with api.core.sessions() as s:
        event = await s.scalar(select(Event).where(Event.kind == "routes.updated"))
    assert event is not None and event.payload["version"] == 1 and event.project_id == api.default_pid


async def test_stale_version_is_409_and_if_match_works(api: Api) -> None:
    assert (await put(api, VIP_TABLE, 0)).status == 200
    stale = await put(api, VIP_TABLE[1:], 0)
    assert stale.status == 409 and "at version 1, not 0" in stale.body["error"]["message"]
    stale_header = await put(api, VIP_TABLE[1:], None, headers={"If-Match": '"0"'})
    assert stale_header.status == 409
    fresh = await put(api, VIP_TABLE[1:], None, headers={"If-Match": '"1"'})
    assert fresh.status == 200 and fresh.body["version"] == 2
    missing = await put(api, VIP_TABLE, None)
    assert missing.status == 428 and "If-Match" in missing.body["error"]["message"]
    disagree = await put(api, VIP_TABLE, 2, headers={"If-Match": '"1"'})
    assert disagree.status == 400


async def test_invalid_tables_are_422_naming_the_routes(api: Api) -> None:
    shadowed = await put(
        api,
        [
            {"name": "sms", "channel": "sms", "queue": "a"},
            {"name": "sms-stop", "channel": "sms", "keywords": "stop", "queue": "b"},
        ],
        0,
    )
    assert shadowed.status == 422
    (field,) = shadowed.body["error"]["fields"]
    assert field["field"] == "body.routes[1] (sms-stop)"
    assert "'sms-stop' can never match" in field["message"] and "'sms' (routes[0])" in field["message"]
    assert "sms-stop" in shadowed.body["error"]["message"]

    broken = await put(api, [{"name": "bad", "sender": "+49..x"}, {"name": "worse", "action": "teleport"}], 0)
    assert broken.status == 422
    fields = {f["field"]: f["message"] for f in broken.body["error"]["fields"]}
    assert "both ends of a number range" in fields["body.routes[0] (bad).sender"]
    assert "body.routes[1] (worse).action" in fields
    other_project = await put(api, [{"name": "x", "project": "other"}], 0)
    assert other_project.status == 422
    assert other_project.body["error"]["fields"][0]["field"] == "body.routes[0] (x).project"
    assert (await api.call("GET", "/api/v1/routes")).body["version"] == 0  # nothing was saved


async def test_roles_and_project_visibility(api: Api) -> None:
    assert (await put(api, VIP_TABLE, 0, who="supervisor")).status == 403
    assert (await api.call("GET", "/api/v1/routes", who="alice")).status == 403
    assert (await api.call("GET", "/api/v1/routes", who="supervisor")).status == 200
    hidden = await api.call("GET", "/api/v1/routes", who="bob_supervisor", params={"project": "default"})
    assert hidden.status == 404
    assert (
        await api.call("GET", "/api/v1/routes", who="bob_supervisor", params={"project": "other"})
    ).status == 200


async def test_post_test_explains_per_filter_and_uses_contact_attributes(api: Api) -> None:
    table = [
        {"name": "vip", "contact": "vip = true", "queue": "vip"},
        {"name": "stop", "channel": "sms", "keywords": "stop", "action": "drop"},
        {"name": "general", "queue": "general"},
    ]
    assert (await put(api, table, 0)).status == 200
    sent = await api.message(sender="vip@example.com")
    async with api.core.sessions() as s:
        contact = await s.get(Contact, sent["contact_id"])
        assert contact is not None
        contact.attributes = {"vip": True}
        await s.commit()

    r = await api.call(
        "POST",
        "/api/v1/routes/test",
        json_body={"channel": "email", "from": "VIP@example.com", "to": "support@acme.test", "text": "hi"},
    )
    assert r.status == 200, r.body
    assert r.body["matched"] == "vip" and r.body["version"] == 1 and r.body["sender"] == "vip@example.com"

    r = await api.call(
        "POST",
        "/api/v1/routes/test",
        json_body={
            "channel": "sms",
            "from": "+41 44 668 18 00",
            "to": ["80012"],
            "text": "STOP now",
            "attributes": {"vip": False},
            "at": "2026-03-30T08:00:00+02:00",
        },
    )
    assert r.body["matched"] == "stop" and r.body["action"] == "drop"
    assert r.body["at"] == "2026-03-30T08:00:00+02:00" and r.body["sender"] == "+41446681800"
    assert r.body["routes"][0] == {
        "route": "vip",
        "matched": False,
        "builtin": False,
        "filters": [{"filter": "contact", "matched": False, "detail": "vip = true is false (vip = false)"}],
    }
    assert r.body["routes"][1]["filters"][1] == {
        "filter": "keywords",
        "matched": True,
        "detail": "text contains 'stop'",
    }

    candidate = await api.call(
        "POST",
        "/api/v1/routes/test",
        json_body={
            "channel": "sms",
            "from": "+41446681800",
            "routes": [{"name": "only-sms", "channel": "sms"}],
        },
    )
    assert candidate.body["matched"] == "only-sms" and candidate.body["source"] == "candidate"
    bad = await api.call(
        "POST",
        "/api/v1/routes/test",
        json_body={
            "channel": "sms",
            "from": "+41446681800",
            "routes": [{"name": "a"}, {"name": "b", "menu": "1"}],
        },
    )
    assert bad.status == 422 and bad.body["error"]["fields"][0]["field"] == "body.routes[1] (b)"


async def test_another_process_picks_up_a_saved_table_within_the_recheck_interval(api: Api) -> None:
    other = await Core.open(api.core.settings)  # a second process on the same store
    ticks = [100.0]
    other.routes.clock = lambda: ticks[0]
    await other.start()
    try:

        def mail(key: str) -> Inbound:
            return Inbound(
                channel="api",
                sender=Address(IdentityKind.EMAIL, "z@example.com"),
                recipients=("vip@acme.test",),
                dedupe_key=key,
                raw=b"x",
            )

        before = await other.ingest.ingest(mail("o1"))
        assert before.route == "default"
        assert (await put(api, VIP_TABLE, 0)).status == 200
        ticks[0] += 0.5  # still inside the recheck interval: the cached table is used
        assert (await other.ingest.ingest(mail("o2"))).route == "default"
        ticks[0] += other.routes.recheck_seconds  # the interval (1 s by default) has passed
        after = await other.ingest.ingest(mail("o3"))
        assert after.route == "api-vip" and after.queue_item_id is not None
    finally:
        await other.aclose()
