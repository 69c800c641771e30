"""API bearer tokens: creation, authentication, expiry, rotation and revocation.

A token is shown once, when it is created; the store keeps only its sha256,
so a leaked database does not leak working credentials. A token carries a
role (admin, supervisor, agent) and optionally the agent it acts for; the
projects a caller may see follow from that agent's project memberships.

A token may expire (`expires_at`; None, the default for CLI tokens and every token made
before migration 0012, never expires). A browser session also has `renewable_until`: `rotate`
replaces it by a new token (the old one is revoked in the same transaction) that expires an
idle period later, never after `renewable_until`. Expired and revoked tokens authenticate as
nobody.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from storage.db import SessionFactory
from storage.models import Agent, AgentProject, ApiToken
from storage.types import utcnow
from umsg.errors import NotFound, PermanentError

ROLES: tuple[str, ...] = ("admin", "supervisor", "agent")
TOKEN_PREFIX = "umsg_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token, its role and what it may see.

    `project_ids` is None when the caller sees every project (an admin or
    supervisor token not tied to an agent); otherwise it is the set of
    projects of the token's agent, possibly empty.
    """

    token_id: int
    role: str
    agent_id: int | None
    project_ids: frozenset[int] | None

    def sees(self, project_id: int | None) -> bool:
        """True when an object of `project_id` is visible to this caller."""
        if self.project_ids is None:
            return True
        return project_id is not None and project_id in self.project_ids


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(
    sessions: SessionFactory, role: str, agent_id: int | None = None, label: str | None = None,
    *, expires_at: datetime | None = None, renewable_until: datetime | None = None,
) -> str:
    """Create a token and return it in clear (the only time it is available).

    `expires_at` None: the token never expires. `renewable_until` (browser sessions): how long
    `rotate` may keep replacing it.
    """
    if role not in ROLES:
        raise PermanentError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if role == "agent" and agent_id is None:
        raise PermanentError("an agent token needs the agent it acts for (agent_id)")
    if label is not None and len(label) > 200:
        raise PermanentError("token label is longer than 200 characters")
    if expires_at is not None and expires_at <= utcnow():
        raise PermanentError("the token's expiry is in the past")
    token = _new_token()
    async with sessions() as s:
        if agent_id is not None and await s.get(Agent, agent_id) is None:
            raise NotFound(f"agent {agent_id} not found")
        s.add(ApiToken(token_hash=hash_token(token), role=role, agent_id=agent_id, label=label,
                       expires_at=expires_at, renewable_until=renewable_until))
        await s.commit()
    return token


async def authenticate(sessions: SessionFactory, token: str) -> Principal | None:
    """Return the principal for `token`, or None when it is unknown, revoked or expired."""
    if not token:
        return None
    async with sessions() as s:
        row = await s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if row is None or not _live(row, utcnow()):
            return None
        project_ids: frozenset[int] | None = None
        # A token bound to an agent is confined to that agent's projects,
        # whatever its role; only unbound admin/supervisor tokens see all.
        if row.agent_id is not None or row.role == "agent":
            ids = await s.scalars(
                select(AgentProject.project_id).where(AgentProject.agent_id == row.agent_id)
            )
            project_ids = frozenset(int(i) for i in ids)
        return Principal(token_id=row.id, role=row.role, agent_id=row.agent_id, project_ids=project_ids)


async def revoke(sessions: SessionFactory, token_id: int) -> bool:
    """Revoke token `token_id`; True when it was live, False when already revoked."""
    async with sessions() as s:
        row = await s.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"token {token_id} not found")
        if row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        await s.commit()
        return True


def _live(row: ApiToken, now: datetime) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


@dataclass(frozen=True)
class Rotated:
    """A browser session's new token (in clear) and when it expires."""

    token: str
    expires_at: datetime


async def rotate(sessions: SessionFactory, token_id: int, idle: timedelta) -> Rotated | None:
    """Replace the live, renewable token `token_id` by a new one expiring `idle` from now (never
    after its `renewable_until`), revoking the old one in the same transaction.

    None when the token is not renewable (an API token), revoked, expired, or at the end of its
    absolute lifetime. A token can be rotated once: a second refresh with the same old token
    (a replay, or a race of two tabs) finds it revoked.
    """
    now = utcnow()
    async with sessions() as s:
        row = await s.scalar(select(ApiToken).where(ApiToken.id == token_id).with_for_update())
        if row is None or row.renewable_until is None or not _live(row, now) or row.renewable_until <= now:
            return None
        expires_at = min(now + idle, row.renewable_until)
        token = _new_token()
        row.revoked_at = now
        s.add(ApiToken(token_hash=hash_token(token), role=row.role, agent_id=row.agent_id, label=row.label,
                       expires_at=expires_at, renewable_until=row.renewable_until))
        await s.commit()
    return Rotated(token, expires_at)
