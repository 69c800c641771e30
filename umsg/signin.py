"""Browser sessions as the web API opens, reads, refreshes and ends them, agents' passwords, and
sign-in throttling.

The caller (umsg.web.api.session) parses, checks roles, checks and hashes passwords (in a
thread, umsg.web.passwords) and serialises; this module runs the SQL. A browser session is
an ordinary API token bound to the agent and labelled SESSION_LABEL, so a new password can
end the agent's other sessions without touching its API tokens. It expires after an idle
period unless refreshed (rotated), and its refreshes end at an absolute lifetime.

Throttling counts attempts per login and per client address in the `signin_throttle` table,
so a lock-out holds across restarts and for every process on the store. An attempt is counted
as a failure before its password is checked (`admit`), so parallel guesses cannot overshoot the
limit while their hashes run; `succeeded` takes the count back.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import SessionFactory
from storage.models import Agent, AgentProject, ApiToken, Project, SigninThrottle, WrapupCode
from storage.types import utcnow
from umsg.canned import wrapup_codes_query
from umsg.errors import NotFound
from umsg.tokens import Principal, Rotated, create_token, revoke, rotate

SESSION_LABEL = "inbox session"


@dataclass(frozen=True)
class Candidate:
    """The agent a login names, before its password is checked, and the role its session gets."""

    agent: Agent
    roles: frozenset[str]  # its role in each of its projects

    @property
    def role(self) -> str:
        """`supervisor` when the agent supervises any of its projects, else `agent`."""
        return "supervisor" if "supervisor" in self.roles else "agent"


@dataclass(frozen=True)
class ProjectRef:
    id: int
    slug: str
    name: str


@dataclass(frozen=True)
class WhoAmI:
    """What the inbox needs to know about its caller: its agent (None for a bare token),
    the projects it sees by slug, and their wrap-up codes by project then code."""

    agent: Agent | None
    projects: list[ProjectRef]
    wrapup_codes: list[WrapupCode]


@dataclass(frozen=True)
class Throttle:
    """How many failed sign-ins per login and per address a window allows, and the lock-out."""

    per_login: int
    per_address: int
    window: timedelta
    lockout: timedelta


@dataclass(frozen=True)
class Lifetime:
    """A browser session's idle lifetime (between refreshes) and absolute lifetime."""

    idle: timedelta
    absolute: timedelta


# Writers of `signin_throttle` take this PostgreSQL advisory lock for their transaction: row locks
# of a login and an address taken by many parallel attempts deadlocked under load, and sign-in
# writes are few (a locked login or address is refused from a read). SQLite's write lock, taken at
# BEGIN, already serialises them.
_THROTTLE_LOCK = 0x756D7367_7468


async def _serialise(s: AsyncSession) -> None:
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _THROTTLE_LOCK})


# The [accounts] defaults (umsg.config.AccountSettings): 30 minutes idle, 12 hours in all.
DEFAULT_LIFETIME = Lifetime(timedelta(minutes=30), timedelta(hours=12))


def _keys(login: str, address: str | None) -> list[str]:
    keys = [f"login:{login}"]
    if address:
        keys.append(f"addr:{address}")
    return keys


class SignIn:
    """Opening, reading, refreshing and ending browser sessions, setting passwords, and throttling
    sign-in attempts, for the web API."""

    def __init__(self, sessions: SessionFactory, readers: SessionFactory) -> None:
        self.sessions = sessions
        self.readers = readers

    async def candidate(self, login: str) -> Candidate | None:
        """The agent with this login, or None."""
        async with self.readers() as s:
            agent = await s.scalar(select(Agent).where(Agent.login == login))
            if agent is None:
                return None
            roles = await s.scalars(select(AgentProject.role).where(AgentProject.agent_id == agent.id))
            return Candidate(agent, frozenset(roles.all()))

    async def open(self, candidate: Candidate) -> str:
        """A new session token (in clear) of the default lifetimes, for an agent whose password was checked."""
        return (await self.start(candidate, DEFAULT_LIFETIME)).token

    async def start(self, candidate: Candidate, lifetime: Lifetime) -> Rotated:
        """A new session token (in clear) and its expiry, for an agent whose password was checked."""
        now = utcnow()
        renewable_until = now + lifetime.absolute
        expires_at = min(now + lifetime.idle, renewable_until)
        token = await create_token(self.sessions, candidate.role, agent_id=candidate.agent.id, label=SESSION_LABEL,
                                   expires_at=expires_at, renewable_until=renewable_until)
        return Rotated(token, expires_at)

    async def refresh(self, token_id: int, lifetime: Lifetime) -> Rotated | None:
        """Rotate the caller's session token; None when it is no renewable, live session."""
        return await rotate(self.sessions, token_id, lifetime.idle)

    async def rehash(self, agent_id: int, old: str, new: str) -> bool:
        """Replace the agent's hash `old` by `new` (same password, current parameters); False when
        the password changed meanwhile (the newer hash is kept)."""
        async with self.sessions() as s:
            done = await s.execute(update(Agent).where(Agent.id == agent_id, Agent.password_hash == old)
                                   .values(password_hash=new))
            await s.commit()
        return bool(getattr(done, "rowcount", 0))

    async def password_of(self, agent_id: int) -> tuple[str, str | None] | None:
        """The agent's login and stored hash, or None when there is no such agent."""
        async with self.readers() as s:
            row = (await s.execute(select(Agent.login, Agent.password_hash).where(Agent.id == agent_id))).first()
        return None if row is None else (row[0], row[1])

    # -- throttling ------------------------------------------------------------------------

    async def admit(self, login: str, address: str | None, limits: Throttle) -> float | None:
        """Count one attempt against the login and the address before its password is checked.

        None: go ahead (the attempt already counts as a failure until `succeeded`). Otherwise the
        seconds until the lock-out ends; nothing is counted then, and the lock-out is not extended,
        so it ends after `limits.lockout` whatever an attacker keeps sending.
        """
        keys = _keys(login, address)
        # A locked login or address is refused from a read: a flood of guesses during a lock-out
        # costs no write transaction each (on SQLite they would queue for the write lock).
        now = utcnow()
        async with self.readers() as s:
            until = await s.scalar(select(func.max(SigninThrottle.locked_until)).where(
                SigninThrottle.key.in_(keys), SigninThrottle.locked_until > now))
        if until is not None:
            return (until - now).total_seconds()
        for attempt in range(3):
            try:
                return await self._admit(login, address, limits)
            except IntegrityError:  # another process inserted the same key first: read it again
                if attempt == 2:
                    raise
        return None  # pragma: no cover - the loop returns or raises

    async def _admit(self, login: str, address: str | None, limits: Throttle) -> float | None:
        now = utcnow()
        caps = {f"login:{login}": limits.per_login, f"addr:{address}": limits.per_address}
        async with self.sessions() as s:
            await _serialise(s)
            # Rows whose window passed and whose lock-out ended say nothing any more. Rows another
            # attempt holds are skipped (on PostgreSQL): waiting for them could deadlock.
            stale = (await s.scalars(select(SigninThrottle.key).where(or_(
                and_(SigninThrottle.locked_until.is_(None), SigninThrottle.window_started_at <= now - limits.window),
                SigninThrottle.locked_until <= now)).order_by(SigninThrottle.key)
                .with_for_update(skip_locked=True))).all()
            if stale:
                await s.execute(delete(SigninThrottle).where(SigninThrottle.key.in_(stale)))
            keys = _keys(login, address)
            # Locked in key order, as every writer of this table does, so two attempts cannot deadlock.
            rows = {r.key: r for r in await s.scalars(
                select(SigninThrottle).where(SigninThrottle.key.in_(keys)).order_by(SigninThrottle.key)
                .with_for_update())}
            wait = 0.0
            for key in keys:
                row = rows.get(key)
                if row is None:
                    continue
                if row.locked_until is None and row.failures >= caps[key]:
                    # The limit is reached by attempts still being checked: lock now.
                    row.locked_until = now + limits.lockout
                if row.locked_until is not None:
                    wait = max(wait, (row.locked_until - now).total_seconds())
            if wait > 0:
                await s.commit()
                return wait
            for key in sorted(keys):  # inserted in key order too: a new row's unique check also waits
                row = rows.get(key)
                if row is None:
                    s.add(SigninThrottle(key=key, failures=1, window_started_at=now))
                    await s.flush()
                else:
                    row.failures += 1
            await s.commit()
        return None

    async def failed(self, login: str, address: str | None, limits: Throttle) -> None:
        """The admitted attempt's password was wrong: lock a login or address at its limit."""
        caps = {f"login:{login}": limits.per_login, f"addr:{address}": limits.per_address}
        now = utcnow()
        async with self.sessions() as s:
            await _serialise(s)
            rows = await s.scalars(select(SigninThrottle).where(
                SigninThrottle.key.in_(_keys(login, address))).order_by(SigninThrottle.key).with_for_update())
            for row in rows:
                if row.locked_until is None and row.failures >= caps[row.key]:
                    row.locked_until = now + limits.lockout
            await s.commit()

    async def succeeded(self, login: str, address: str | None) -> None:
        """The admitted attempt's password was right: the login's count starts again, and the
        address's attempt is taken back (its other failures stay: they may be another login's)."""
        async with self.sessions() as s:
            await _serialise(s)
            # `addr:` sorts before `login:`: the same lock order as `admit`.
            if address:
                await s.execute(update(SigninThrottle)
                                .where(SigninThrottle.key == f"addr:{address}", SigninThrottle.failures > 0,
                                       SigninThrottle.locked_until.is_(None))
                                .values(failures=SigninThrottle.failures - 1))
            await s.execute(delete(SigninThrottle).where(SigninThrottle.key == f"login:{login}"))
            await s.commit()

    async def close(self, token_id: int) -> None:
        """Revoke the caller's token (already revoked is fine: signing out twice is no error)."""
        await revoke(self.sessions, token_id)

    async def who(self, me: Principal) -> WhoAmI:
        """The caller's agent, projects and wrap-up codes, read in one transaction."""
        scope: Collection[int] | None = me.project_ids
        stmt = select(Project.id, Project.slug, Project.name).order_by(Project.slug)
        if scope is not None:
            stmt = stmt.where(Project.id.in_(sorted(scope)))
        async with self.readers() as s:
            agent = None if me.agent_id is None else await s.get(Agent, me.agent_id)
            projects = [ProjectRef(i, slug, name) for i, slug, name in (await s.execute(stmt)).all()]
            codes = list((await s.scalars(wrapup_codes_query(scope, per_project=True))).all())
        return WhoAmI(agent, projects, codes)

    async def set_password(self, agent_id: int, viewer: Principal, hashed: str, role: str | None) -> None:
        """Store `hashed` as the agent's password and, when given, `role` in every one of its projects.

        NotFound when the agent does not exist, or when `viewer` is tied to projects and is not
        that agent. A new password ends the agent's other browser sessions (a leaked one stops
        working) but keeps the viewer's own, in the same transaction.
        """
        async with self.sessions() as s:
            agent = await s.get(Agent, agent_id)
            if agent is None or (viewer.project_ids is not None and viewer.agent_id != agent_id):
                raise NotFound(f"agent {agent_id} not found")
            agent.password_hash = hashed
            if role is not None:
                await s.execute(update(AgentProject).where(AgentProject.agent_id == agent_id).values(role=role))
            await s.execute(
                update(ApiToken)
                .where(ApiToken.agent_id == agent_id, ApiToken.label == SESSION_LABEL,
                       ApiToken.id != viewer.token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            await s.commit()
