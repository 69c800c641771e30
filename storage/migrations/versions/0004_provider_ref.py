"""provider_ref: ids peers gave our outgoing messages, for delivery reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provider_ref',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel', sa.String(length=100), nullable=False),
    sa.Column('provider_id', sa.String(length=200), nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], name=op.f('fk_provider_ref_message_id_message')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_provider_ref_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_ref')),
    sa.UniqueConstraint('channel', 'provider_id', name=op.f('uq_provider_ref_channel_provider_id'))
    )
    with op.batch_alter_table('provider_ref', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_ref_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_provider_ref_project_id'), ['project_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_ref', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_ref_project_id'))
        batch_op.drop_index(batch_op.f('ix_provider_ref_message_id'))
    op.drop_table('provider_ref')
