"""Persistence: SQLAlchemy models, engine and session setup, migrations and the blob store.

Holds no policy: what gets written when is decided by the core (`umsg`).
"""
