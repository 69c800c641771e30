"""The `umsg` command line: serve, migrate, check a configuration, create API tokens.

    umsg serve [--config FILE] [--data-dir DIR] [--http-host H] [--http-port N]
    umsg migrate [--config FILE] [--data-dir DIR]
    umsg config check FILE
    umsg channels list|rename OLD NEW [--config FILE]
    umsg token create --role admin|supervisor|agent [--agent LOGIN] [--label L] [--expires-in 30d]
                      [--config FILE]
    umsg token revoke TOKEN [--config FILE]

The configuration file may also be named by the `UMSG_CONFIG` environment
variable. Settings are layered defaults < TOML file < `UMSG_*` environment <
flags. A user mistake (bad configuration, unreachable database) is reported as
`error: key: reason` lines on stderr, never as a traceback; configuration
errors exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tomllib
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from storage.types import utcnow
from umsg import __version__
from umsg.cli import channel_names as cli_channels
from umsg.cli import routes as cli_routes
from umsg.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, settings_from_args, store_engine
from umsg.cli.importer import add_import_command, cmd_import
from umsg.config import Settings, check_file
from umsg.errors import ConfigError, UmsgError

ROLES = ("admin", "supervisor", "agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="umsg", description="Unified messaging gateway.")
    parser.add_argument("--version", action="version", version=f"umsg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, metavar="FILE",
                       help="TOML configuration file (default: $UMSG_CONFIG, else built-in defaults)")
        p.add_argument("--data-dir", type=Path, metavar="DIR", help="data folder (SQLite store, blobs)")

    serve = sub.add_parser("serve", help="run the gateway")
    with_config(serve)
    serve.add_argument("--http-host", metavar="HOST", help="address the web server binds")
    serve.add_argument("--http-port", type=int, metavar="PORT", help="web server port (0: any free port)")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    migrate = sub.add_parser("migrate", help="bring the database schema to the newest revision")
    with_config(migrate)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a configuration file and report every problem")
    check.add_argument("file", type=Path, metavar="FILE")

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create an API token and print it")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--agent", metavar="LOGIN", help="the agent the token acts as (role agent)")
    create.add_argument("--label", metavar="TEXT", help="a note to recognise the token by")
    create.add_argument("--expires-in", metavar="DURATION", type=_duration,
                        help="the token stops working after this long: 3600, 90m, 12h, 30d (default: never)")
    with_config(create)
    revoke = token_sub.add_parser("revoke", help="revoke an API token (it answers 401 from then on)")
    revoke.add_argument("token", metavar="TOKEN", help="the token as `token create` printed it")
    with_config(revoke)
    add_import_command(sub, with_config)
    cli_routes.add_to(sub, with_config)
    cli_channels.add_to(sub, with_config)
    return parser


def _shown_url(settings: Settings) -> str:
    masked: str = settings.masked()["database"]["url"]
    return masked or settings.database_url


# --- serve -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from umsg.app.gc_tuning import settle_after_start
    from umsg.app.serve import run_service

    settings = settings_from_args(args)
    # This process is the service's own: tune its collector once everything has started.
    asyncio.run(run_service(settings, ready=lambda _url: settle_after_start()))
    return EXIT_OK


# --- migrate -----------------------------------------------------------------------------


class _PrintHandler(logging.Handler):
    """Shows Alembic's per-revision messages ("Running upgrade 0001 -> 0002") as progress."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # Alembic also announces its dialect settings; only the revision steps are progress.
        if message.startswith("Running "):
            print(f"  {message.replace('  ', ' ')}", file=self.out, flush=True)


@contextlib.contextmanager
def _alembic_progress(out: TextIO) -> Iterator[None]:
    logger = logging.getLogger("alembic.runtime.migration")
    handler = _PrintHandler(out)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def _migrate(settings: Settings, out: TextIO) -> None:
    from alembic.script import ScriptDirectory

    from storage.db import create_engine
    from storage.migrate import alembic_config, current_revision, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url, schema = settings.database_url, settings.database.schema_name
    head = ScriptDirectory.from_config(alembic_config(url, schema)).get_current_head()
    engine = create_engine(url, schema=schema)
    try:
        current = await current_revision(engine)
        print(f"database {_shown_url(settings)}" + (f" (schema {schema})" if schema else ""), file=out)
        if current == head:
            print(f"already at the newest revision {head}; nothing to do", file=out)
            return
        print(f"migrating {current or '(empty)'} -> {head}", file=out, flush=True)
        with _alembic_progress(out):
            await upgrade(engine, url, schema)
        print(f"done: database at revision {await current_revision(engine)}", file=out)
    finally:
        await engine.dispose()


def cmd_migrate(args: argparse.Namespace) -> int:
    asyncio.run(_migrate(settings_from_args(args), sys.stdout))
    return EXIT_OK


# --- config check ------------------------------------------------------------------------


def _channel_problems(path: Path) -> list[tuple[str, str]]:
    """Build every configured channel through the registry, reporting what it refuses, and
    every name that refers to an instance but is dangling or ambiguous (umsg/cli/channel_check.py).

    Works on the raw file so that channel problems are listed even when other
    keys are wrong too; structural problems were already reported by `check_file`.
    A file without channels is not checked: its routes can only see messages posted
    through the API, which may carry any channel name.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    channels = raw.get("channels")
    if not isinstance(channels, dict) or not channels:
        return []
    from umsg.cli.channel_check import check_channels  # only a file with channels needs the adapters

    return check_channels(raw)


def config_problems(path: Path) -> list[tuple[str, str]]:
    """Every problem of a configuration file: settings validation plus channel construction."""
    problems = list(check_file(path))
    for problem in _channel_problems(path):
        if problem not in problems:
            problems.append(problem)
    return problems


def cmd_config_check(args: argparse.Namespace) -> int:
    problems = config_problems(args.file)
    for key, reason in problems:
        print(f"{key}: {reason}" if key else reason)
    if problems:
        return EXIT_FAILURE
    print("ok")
    return EXIT_OK


# --- token create ------------------------------------------------------------------------


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> timedelta:
    """`3600`, `90m`, `12h` or `30d` as a positive timedelta (argparse type)."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:], None)
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 3600, 90m, 12h, 30d)") from None
    if not 0 < seconds <= 100 * 365 * 86400:
        raise argparse.ArgumentTypeError("a duration must be positive and under 100 years")
    return timedelta(seconds=seconds)


async def _create_token(settings: Settings, role: str, agent_login: str | None, label: str | None,
                        expires_in: timedelta | None = None) -> str:
    from storage.db import session_factory
    from storage.models import Agent
    from umsg.tokens import create_token

    async with store_engine(settings) as engine:
        sessions = session_factory(engine)
        agent_id: int | None = None
        if agent_login is not None:
            async with sessions() as session:
                agent_id = await session.scalar(select(Agent.id).where(Agent.login == agent_login))
            if agent_id is None:
                raise ConfigError([("agent", f"no agent with login {agent_login!r}")])
        expires_at = None if expires_in is None else utcnow() + expires_in
        return await create_token(sessions, role, agent_id=agent_id, label=label, expires_at=expires_at)


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.role == "agent" and not args.agent:
        raise ConfigError([("agent", "--agent LOGIN is required for role agent")])
    if args.role != "agent" and args.agent:
        raise ConfigError([("agent", f"only an agent token acts as an agent, not role {args.role}")])
    token = asyncio.run(_create_token(settings_from_args(args), args.role, args.agent, args.label,
                                      args.expires_in))
    print(token)
    return EXIT_OK


async def _revoke_token(settings: Settings, token: str) -> bool:
    from storage.db import session_factory
    from storage.models import ApiToken
    from umsg.tokens import hash_token, revoke

    async with store_engine(settings) as engine:
        sessions = session_factory(engine)
        async with sessions() as session:
            token_id = await session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))
        if token_id is None:
            raise ConfigError([("token", "no such token")])
        return await revoke(sessions, token_id)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    was_live = asyncio.run(_revoke_token(settings_from_args(args), args.token.strip()))
    print("revoked" if was_live else "already revoked")
    return EXIT_OK


def _token_command(args: argparse.Namespace) -> int:
    return cmd_token_revoke(args) if args.token_command == "revoke" else cmd_token_create(args)


# --- entry point -------------------------------------------------------------------------


def _report(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)


def _database_error(exc: BaseException) -> str:
    # SQLAlchemy's text carries the statement and a help link; the driver's first line says enough.
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"database: {first}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `umsg` command; returns the process exit status."""
    args = _parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve,
        "migrate": cmd_migrate,
        "config": cmd_config_check,
        "token": _token_command,
        "import": cmd_import,
        "routes": cli_routes.run,
        "channels": cli_channels.run,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        _report([f"{key}: {reason}" if key else reason for key, reason in exc.problems])
        return EXIT_CONFIG
    except UmsgError as exc:
        _report([str(exc)])
        return EXIT_FAILURE
    except SQLAlchemyError as exc:
        _report([_database_error(exc)])
        return EXIT_FAILURE
    except OSError as exc:
        _report([str(exc)])
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
