"""The `umsg` command line (`umsg.cli.main`): serve, migrate, config check, tokens, import, routes."""

from umsg.cli.main import main

__all__ = ["main"]
