"""Helpers that start real local peers (Postfix, Dovecot) for integration tests."""
