"""fax send jobs: the old per-adapter job rows move into the leased job table

Fax sends used to keep one `channel_state` row per message (channel `fax-send:<instance>`,
key `send:<message id>`), run by whichever process held it in memory. They are now jobs of
kind `fax-send:<instance>` in the `job` table, leased to one gateway at a time. A fax accepted
before the upgrade and not yet reported would otherwise never be sent, so each such row
becomes a pending job with the same number, document, pages, attempts and history, due when
the row said (`next_at`); a row that already held its final result keeps it, and the job's
first claim reports it without calling again. A row whose message is gone is dropped; a
message that already has a job keeps that one. The rows are removed either way.

Downgrade moves pending fax jobs back into rows of the old form.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

PREFIX = "fax-send:"
KEY_PREFIX = "send:"
# What FaxSendSettings.max_attempts defaulted to when the old rows were written; the
# migration cannot read the configuration, and a job may not start above its maximum.
MAX_ATTEMPTS = 4

_state = sa.table("channel_state", sa.column("id", sa.BigInteger), sa.column("channel", sa.String),
                  sa.column("key", sa.String), sa.column("value", sa.JSON), sa.column("updated_at", UTCDateTime))
_job = sa.table("job", sa.column("id", sa.BigInteger), sa.column("project_id", sa.BigInteger),
                sa.column("kind", sa.String), sa.column("payload", sa.JSON), sa.column("status", sa.String),
                sa.column("attempts", sa.Integer), sa.column("max_attempts", sa.Integer),
                sa.column("run_after", UTCDateTime), sa.column("created_at", UTCDateTime),
                sa.column("updated_at", UTCDateTime))
_message = sa.table("message", sa.column("id", sa.BigInteger), sa.column("project_id", sa.BigInteger))


def _job_of(value: dict[str, Any], message_id: int, now: datetime) -> dict[str, Any]:
    attempts = int(value.get("attempts", 0))
    payload: dict[str, Any] = {"message_id": message_id, "number": value["number"], "tiff": value["tiff"],
                               "pages": int(value.get("pages", 0)), "history": list(value.get("history", []))}
    if attempts:
        payload["attempts"] = attempts
    if "result" in value:
        payload["result"] = value["result"]
    next_at = value.get("next_at")
    run_after = datetime.fromtimestamp(float(next_at), UTC) if next_at is not None else now
    return {"payload": payload, "status": "pending", "attempts": attempts,
            "max_attempts": max(MAX_ATTEMPTS, attempts + 1), "run_after": run_after,
            "created_at": now, "updated_at": now}


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    rows = conn.execute(sa.select(_state.c.id, _state.c.channel, _state.c.key, _state.c.value).where(
        _state.c.channel.like(f"{PREFIX}%"), _state.c.key.like(f"{KEY_PREFIX}%"))).all()
    taken = {(kind, int(payload["message_id"])) for kind, payload in conn.execute(
        sa.select(_job.c.kind, _job.c.payload).where(_job.c.kind.like(f"{PREFIX}%"))).all()
        if isinstance(payload, dict) and "message_id" in payload}
    for row_id, channel, key, value in rows:
        suffix = key[len(KEY_PREFIX):]
        project_id = conn.scalar(sa.select(_message.c.project_id).where(_message.c.id == int(suffix))) \
            if suffix.isdigit() else None
        if project_id is not None and isinstance(value, dict) and (channel, int(suffix)) not in taken \
                and "number" in value and "tiff" in value:
            conn.execute(sa.insert(_job).values(project_id=project_id, kind=channel,
                                                **_job_of(value, int(suffix), now)))
            taken.add((channel, int(suffix)))
        conn.execute(sa.delete(_state).where(_state.c.id == row_id))


def downgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    jobs = conn.execute(sa.select(_job.c.id, _job.c.kind, _job.c.payload, _job.c.attempts, _job.c.run_after).where(
        _job.c.kind.like(f"{PREFIX}%"), _job.c.status.in_(("pending", "leased")))).all()
    for job_id, kind, payload, attempts, run_after in jobs:
        value = {"number": payload["number"], "tiff": payload["tiff"], "pages": payload.get("pages", 0),
                 "attempts": attempts, "next_at": run_after.timestamp(),
                 "status": "finished" if "result" in payload else "pending",
                 "history": payload.get("history", [])}
        if "result" in payload:
            value["result"] = payload["result"]
        conn.execute(sa.insert(_state).values(channel=kind, key=f"{KEY_PREFIX}{payload['message_id']}",
                                              value=value, updated_at=now))
        conn.execute(sa.delete(_job).where(_job.c.id == job_id))
