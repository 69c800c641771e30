"""umsg.canned, umsg.signin and umsg.wall where the API tests do not reach: scoping, guards, conflicts,
which sessions a new password ends, and the wall's figures (waiting, SLA, load at the given costs)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.models import Agent, AgentProject, ApiToken, Contact, Conversation, QueueItem, RouterOffer
from storage.types import utcnow
from umsg.canned import CannedResponses, Guard, UnknownProject, WrapupCodes
from umsg.core import Core
from umsg.errors import Conflict, NotFound
from umsg.signin import SESSION_LABEL, SignIn
from umsg.tokens import Principal, authenticate, create_token
from umsg.wall import Wall

ADMIN = Principal(token_id=1, role="admin", agent_id=None, project_ids=None)


def _everything(project_id: int | None) -> bool:
    return True


def _open(project_id: int | None) -> None:
    return None


class Hidden(Exception):
    """What the test guards raise, so a test can tell the guard refused."""


def _only(project_id: int) -> Guard:
    def guard(pid: int | None) -> None:
        if pid != project_id:
            raise Hidden(pid)
    return guard


async def _projects(core: Core) -> tuple[int, int]:
    return await core.ensure_project(core.settings.project), await core.ensure_project("other")


async def _agent(core: Core, login: str, *memberships: tuple[int, str], capacity: int = 100) -> int:
    async with core.sessions() as s:
        agent = Agent(login=login, display_name=login.title(), state="offline", capacity=capacity)
        s.add(agent)
        await s.flush()
        s.add_all(AgentProject(agent_id=agent.id, project_id=pid, role=role) for pid, role in memberships)
        await s.commit()
        return agent.id


async def test_canned_responses_are_scoped_ordered_guarded_and_unique_per_project(core: Core) -> None:
    default, other = await _projects(core)
    svc = CannedResponses(core.sessions, core.readers)
    thanks = await svc.create("default", "Thanks", "Thanks, {{contact.name}}", _everything, by="token:1")
    hello = await svc.create("default", "Hello", "Hi!", _everything, by="token:1")
    elsewhere = await svc.create("other", "Thanks", "Same title, other project", _everything, by="token:1")
    assert (thanks.project_id, thanks.updated_by, elsewhere.project_id) == (default, "token:1", other)
    assert thanks.updated_at is not None

    assert [c.id for c in await svc.all(None)] == [hello.id, thanks.id, elsewhere.id]  # title, then id
    assert [c.id for c in await svc.all({other})] == [elsewhere.id]
    assert await svc.all(set()) == []

    with pytest.raises(Conflict, match="'Thanks' already exists"):
        await svc.create("default", "Thanks", "again", _everything, by="token:1")
    with pytest.raises(UnknownProject, match="unknown project 'nope'") as raised:
        await svc.create("nope", "X", "x", _everything, by="token:1")
    assert raised.value.slug == "nope"
    with pytest.raises(UnknownProject):  # a project the caller does not see does not exist for it
        await svc.create("other", "X", "x", lambda pid: pid == default, by="token:1")

    with pytest.raises(Hidden):
        await svc.update(elsewhere.id, _only(default), title="Changed", body=None, by="agent:9")
    assert (await svc.all({other}))[0].title == "Thanks"  # the refused change wrote nothing
    edited = await svc.update(hello.id, _open, title=None, body="Hello there", by="agent:9")
    assert (edited.title, edited.body, edited.updated_by) == ("Hello", "Hello there", "agent:9")
    with pytest.raises(Conflict, match="'Thanks' already exists"):
        await svc.update(hello.id, _open, title="Thanks", body=None, by="agent:9")

    with pytest.raises(Hidden):
        await svc.delete(elsewhere.id, _only(default))
    await svc.delete(hello.id, _open)
    with pytest.raises(NotFound, match=f"canned response {hello.id} not found"):
        await svc.delete(hello.id, _open)
    assert [c.id for c in await svc.all(None)] == [thanks.id, elsewhere.id]


async def test_wrapup_codes_are_scoped_guarded_and_unique_per_project(core: Core) -> None:
    default, other = await _projects(core)
    svc = WrapupCodes(core.sessions, core.readers)
    solved = await svc.create("default", "solved", "Solved", _everything)
    other_solved = await svc.create("other", "solved", "Solved", _everything)
    asked = await svc.create("default", "asked", "Asked a question", _everything)
    assert [(w.code, w.project_id) for w in await svc.all(None)][0] == ("asked", default)
    assert [w.id for w in await svc.all({default})] == [asked.id, solved.id]
    with pytest.raises(Conflict, match="'solved' already exists"):
        await svc.create("default", "solved", "Again", _everything)
    with pytest.raises(UnknownProject):
        await svc.create("other", "x", "X", lambda pid: pid == default)
    with pytest.raises(Hidden):
        await svc.delete(other_solved.id, _only(default))
    await svc.delete(other_solved.id, _open)
    with pytest.raises(NotFound, match=f"wrap-up code {other_solved.id} not found"):
        await svc.delete(other_solved.id, _open)
    assert other not in {w.project_id for w in await svc.all(None)}


async def test_a_candidate_is_a_supervisor_when_it_supervises_any_project(core: Core) -> None:
    default, other = await _projects(core)
    ann = await _agent(core, "ann", (default, "agent"), (other, "supervisor"))
    await _agent(core, "ben", (default, "agent"))
    svc = SignIn(core.sessions, core.readers)
    assert await svc.candidate("nobody") is None
    found = await svc.candidate("ann")
    assert found is not None and found.agent.id == ann and found.role == "supervisor"
    ben = await svc.candidate("ben")
    assert ben is not None and ben.role == "agent"

    token = await svc.open(found)
    me = await authenticate(core.sessions, token)
    assert me is not None and (me.role, me.agent_id, me.project_ids) == ("supervisor", ann, frozenset({default, other}))
    await svc.close(me.token_id)
    await svc.close(me.token_id)  # signing out twice is no error
    assert await authenticate(core.sessions, token) is None


async def test_who_lists_the_callers_projects_and_their_wrapup_codes_by_project(core: Core) -> None:
    default, other = await _projects(core)
    ann = await _agent(core, "ann", (other, "agent"))
    codes = WrapupCodes(core.sessions, core.readers)
    for slug, code in [("other", "b"), ("default", "z"), ("other", "a"), ("default", "a")]:
        await codes.create(slug, code, code.upper(), _everything)
    svc = SignIn(core.sessions, core.readers)

    everyone = await svc.who(ADMIN)
    assert everyone.agent is None and [p.slug for p in everyone.projects] == ["default", "other"]
    assert [(w.project_id, w.code) for w in everyone.wrapup_codes] == [(default, "a"), (default, "z"),
                                                                       (other, "a"), (other, "b")]
    mine = await svc.who(Principal(token_id=2, role="agent", agent_id=ann, project_ids=frozenset({other})))
    assert mine.agent is not None and mine.agent.login == "ann"
    assert [(p.id, p.slug) for p in mine.projects] == [(other, "other")]
    assert [w.code for w in mine.wrapup_codes] == ["a", "b"]


async def test_a_new_password_ends_the_agents_other_browser_sessions_only(core: Core) -> None:
    default, other = await _projects(core)
    ann = await _agent(core, "ann", (default, "agent"), (other, "agent"))
    svc = SignIn(core.sessions, core.readers)
    found = await svc.candidate("ann")
    assert found is not None
    mine, theirs = await svc.open(found), await svc.open(found)
    api_token = await create_token(core.sessions, "agent", agent_id=ann, label="script")
    me = await authenticate(core.sessions, mine)
    assert me is not None

    await svc.set_password(ann, me, "scrypt$hashed", None)
    assert await authenticate(core.sessions, mine) is not None  # the caller's own session stays
    assert await authenticate(core.sessions, theirs) is None
    assert await authenticate(core.sessions, api_token) is not None  # not a browser session
    async with core.sessions() as s:
        agent = await s.get(Agent, ann)
        assert agent is not None and agent.password_hash == "scrypt$hashed"
        roles = (await s.scalars(select(AgentProject.role).where(AgentProject.agent_id == ann))).all()
        assert sorted(roles) == ["agent", "agent"]
        labels = (await s.scalars(select(ApiToken.label).where(ApiToken.agent_id == ann))).all()
        assert sorted(label or "" for label in labels) == sorted([SESSION_LABEL, SESSION_LABEL, "script"])

    await svc.set_password(ann, ADMIN, "scrypt$again", "supervisor")
    found = await svc.candidate("ann")
    assert found is not None and found.roles == {"supervisor"} and found.agent.password_hash == "scrypt$again"

    tied_admin = Principal(token_id=3, role="admin", agent_id=None, project_ids=frozenset({default}))
    with pytest.raises(NotFound, match=f"agent {ann} not found"):
        await svc.set_password(ann, tied_admin, "scrypt$nope", None)
    with pytest.raises(NotFound, match="agent 999999 not found"):
        await svc.set_password(999999, ADMIN, "scrypt$nope", None)
    found = await svc.candidate("ann")
    assert found is not None and found.agent.password_hash == "scrypt$again"


async def test_the_wall_counts_waiting_and_held_work_and_scopes_to_the_callers_projects(core: Core) -> None:
    default, other = await _projects(core)
    ann = await _agent(core, "ann", (default, "agent"), capacity=50)
    ben = await _agent(core, "ben", (other, "agent"))
    now = utcnow()
    later = now + timedelta(hours=1)
    async with core.sessions() as s:
        contacts = [Contact(project_id=default), Contact(project_id=other)]
        s.add_all(contacts)
        await s.flush()
        convs = [Conversation(project_id=c.project_id, contact_id=c.id, channel="email", token=uuid.uuid4().hex)
                 for c in contacts]
        s.add_all(convs)
        await s.flush()
        dc, oc = convs[0].id, convs[1].id

        def item(pid: int, conv: int, queue: str, channel: str, **kw: object) -> QueueItem:
            return QueueItem(project_id=pid, conversation_id=conv, queue=queue, channel=channel, **kw)

        s.add_all([
            item(default, dc, "sales", "email", enqueued_at=now - timedelta(minutes=10),
                 sla_due_at=now - timedelta(minutes=1)),  # breached
            item(default, dc, "sales", "sms", enqueued_at=now - timedelta(minutes=5), sla_due_at=later),
            item(default, dc, "sales", "email", status="leased", lease_owner=f"agent:{ann}", lease_until=later),
            item(default, dc, "sales", "sms", status="leased", lease_owner=f"agent:{ann}", lease_until=later),
            item(default, dc, "support", "sms", status="leased", lease_owner=f"agent:{ann}", lease_until=later),
            item(default, dc, "support", "email", status="done"),
            item(other, oc, "sales", "email", enqueued_at=now - timedelta(minutes=2)),
        ])
        await s.flush()
        held = (await s.scalars(select(QueueItem.id).where(QueueItem.project_id == other))).first()
        assert held is not None
        s.add(RouterOffer(project_id=other, item_id=held, conversation_id=oc, agent_id=ben, expires_at=later))
        await s.commit()

    costs = {"email": 10, "sms": 5}
    wall = Wall(core.readers, lambda channel: costs[channel])
    everything = await wall.figures(None)
    assert everything.at >= now
    queues = {(q.project_id, q.queue): q for q in everything.queues}
    assert list(queues) == [(default, "sales"), (default, "support"), (other, "sales")]
    sales = queues[(default, "sales")]
    assert (sales.waiting, sales.in_progress, sales.sla_breached) == (2, 2, 1)
    assert sales.oldest_wait_seconds is not None and sales.oldest_wait_seconds >= 600
    assert sales.next_sla_due_at is not None and sales.next_sla_due_at < now
    support = queues[(default, "support")]  # nothing waits: only the in-progress count
    assert (support.waiting, support.in_progress, support.oldest_wait_seconds, support.next_sla_due_at,
            support.sla_breached) == (0, 1, None, None, 0)

    agents = {f.agent.login: f for f in everything.agents}
    assert list(agents) == ["ann", "ben"]  # by display name
    a, b = agents["ann"], agents["ben"]
    assert (a.items, a.load, a.load_percent, a.offers) == (3, 20, 40, 0)  # 10 + 5 + 5 of 50
    assert (b.items, b.load, b.load_percent, b.offers) == (0, 0, 0, 1)
    assert a.state_seconds is not None and a.state_seconds >= 0

    mine = await wall.figures({other})
    assert [(q.project_id, q.queue, q.waiting) for q in mine.queues] == [(other, "sales", 1)]
    assert [f.agent.id for f in mine.agents] == [ben]
    nothing = await wall.figures(set())
    assert (nothing.queues, nothing.agents) == ([], [])
