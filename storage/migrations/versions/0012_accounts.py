"""accounts: token expiry and sign-in throttling

`api_token` gains `expires_at` (None: never expires, so every token issued before this
revision keeps working as it did) and `renewable_until` (the absolute end of a browser
session's refreshes). `signin_throttle` counts failed sign-ins per login and per client
address, in the store, so a lock-out survives a restart and holds for every process.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('renewable_until', storage.types.UTCDateTime(timezone=True), nullable=True))
    op.create_table('signin_throttle',
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_started_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('locked_until', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_signin_throttle'))
    )


def downgrade() -> None:
    op.drop_table('signin_throttle')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('renewable_until')
        batch_op.drop_column('expires_at')
