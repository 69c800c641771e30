"""channel_rename: stored channel names moved onto configured instances

Messages, conversations and queue items now carry the configured instance's name
(`[channels.support]`) instead of the adapter type's (`email`). A migration cannot read
the configuration, so it only adds the record; the service renames at start, after the
migrations, when exactly one configured instance claims a type's old name
(`umsg.channel_rename`), and `umsg channels rename OLD NEW` does it by hand.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channel_rename',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('old_name', sa.String(length=100), nullable=False),
    sa.Column('new_name', sa.String(length=100), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.JSON(), nullable=False),
    sa.Column('skipped', sa.JSON(), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_rename'))
    )
    with op.batch_alter_table('channel_rename', schema=None) as batch_op:
        batch_op.create_index('ix_channel_rename_old_name_new_name', ['old_name', 'new_name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('channel_rename', schema=None) as batch_op:
        batch_op.drop_index('ix_channel_rename_old_name_new_name')
    op.drop_table('channel_rename')
