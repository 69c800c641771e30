"""webchat: tables for web chat and the agents' inbox (issue 5)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # -- the agents' inbox -----------------------------------------------------------------------
    op.create_table('canned_response',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('project_id', _ID, nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_canned_response_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_canned_response')),
    sa.UniqueConstraint('project_id', 'title', name=op.f('uq_canned_response_project_id_title'))
    )
    with op.batch_alter_table('canned_response', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_canned_response_project_id'), ['project_id'], unique=False)
    op.create_table('wrapup_code',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('project_id', _ID, nullable=False),
    sa.Column('code', sa.String(length=100), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_wrapup_code_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wrapup_code')),
    sa.UniqueConstraint('project_id', 'code', name=op.f('uq_wrapup_code_project_id_code'))
    )
    with op.batch_alter_table('wrapup_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wrapup_code_project_id'), ['project_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wrapup_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wrapup_code_project_id'))
    op.drop_table('wrapup_code')
    with op.batch_alter_table('canned_response', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_canned_response_project_id'))
    op.drop_table('canned_response')
