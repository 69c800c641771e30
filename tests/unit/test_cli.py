"""The `umsg` command line: configuration checks, precedence of settings, migrate."""

from __future__ import annotations

from pathlib import Path

import pytest

from umsg.cli import main
from umsg.config import load_settings

GOOD = """
data_dir = "{data}"
project = "acme"
log_level = "WARNING"

[database]
url = "sqlite:///{data}/umsg.db"
pool_size = 5

[http]
host = "127.0.0.1"
port = 9000

[queue]
lease_seconds = 30
sweep_seconds = 2

[[routes]]
name = "vip"
sender = "+4470*"
queue = "vip"
priority = 10
"""

BAD = """
log_levl = "INFO"

[htp]
port = 8080

[http]
port = "eighty"

[database]
url = "mysql://root@localhost/umsg"

[queue]
lease_seconds = -1
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text.replace("{data}", str(tmp_path / "data")), encoding="utf-8")
    return path


def test_config_check_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["config", "check", str(write(tmp_path, "good.toml", GOOD))])
    out = capsys.readouterr().out
    assert (status, out.strip()) == (0, "ok")


def test_config_check_lists_every_problem_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["config", "check", str(write(tmp_path, "bad.toml", BAD))])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 1
    problems = dict(line.split(": ", 1) for line in lines)
    assert problems["log_levl"] == "unknown key (did you mean 'log_level'?)"
    assert problems["htp"] == "unknown key (did you mean 'http'?)"
    assert "integer" in problems["http.port"]
    assert "postgresql://" in problems["database.url"]
    assert "queue.lease_seconds" in problems
    assert len(lines) == 5, lines


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[http\nport = 1", "not valid TOML"),
        (None, "not found"),
    ],
    ids=["broken-toml", "missing-file"],
)
def test_config_check_reports_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, fragment: str
) -> None:
    path = tmp_path / "c.toml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    assert main(["config", "check", str(path)]) == 1
    assert fragment in capsys.readouterr().out


def test_config_check_names_an_unknown_channel_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[channels.support]\ntype = "no-such-channel-type"\n'
    status = main(["config", "check", str(write(tmp_path, "ch.toml", text))])
    out = capsys.readouterr().out
    assert status == 1
    key, reason = out.strip().split(": ", 1)
    assert key == "channels.support.type"
    assert "unknown channel type 'no-such-channel-type'" in reason


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", '[http]\nport = 1000\nhost = "10.0.0.1"\n[queue]\nmax_attempts = 3\n')
    from_file = load_settings(path, environ={})
    assert (from_file.http.port, from_file.http.host, from_file.queue.max_attempts) == (1000, "10.0.0.1", 3)

    env = {"UMSG_HTTP__PORT": "2000", "UMSG_QUEUE__MAX_ATTEMPTS": "7", "OTHER": "x"}
    from_env = load_settings(path, environ=env)
    assert (from_env.http.port, from_env.http.host, from_env.queue.max_attempts) == (2000, "10.0.0.1", 7)

    from_flags = load_settings(path, environ=env, overrides={"http": {"port": 3000}})
    flags = (from_flags.http.port, from_flags.http.host, from_flags.queue.max_attempts)
    assert flags == (3000, "10.0.0.1", 7)


def test_config_errors_go_to_stderr_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UMSG_CONFIG", str(write(tmp_path, "bad.toml", BAD)))
    assert main(["migrate"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: htp: unknown key (did you mean 'http'?)" in captured.err.splitlines()
    assert "Traceback" not in captured.err


def test_environment_value_that_does_not_validate_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UMSG_HTTP__PORT", "99999")
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: http.port: ")


def test_migrate_shows_progress_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("UMSG_CONFIG", "UMSG_DATABASE__URL", "UMSG_DATABASE__SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "fresh"
    assert main(["migrate", "--data-dir", str(data)]) == 0
    first = capsys.readouterr().out
    assert "migrating (empty) -> " in first
    assert "done: database at revision " in first
    assert (data / "umsg.db").exists()

    assert main(["migrate", "--data-dir", str(data)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_agent_token_needs_an_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--role", "agent"]) == 2
    assert capsys.readouterr().err.strip() == "error: agent: --agent LOGIN is required for role agent"


def test_token_create_prints_only_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("UMSG_CONFIG", "UMSG_DATABASE__URL", "UMSG_DATABASE__SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    args = ["token", "create", "--role", "admin", "--label", "ops", "--data-dir", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    second = capsys.readouterr().out
    assert len(first.splitlines()) == 1 and first.strip()
    assert first != second

    assert main(["token", "create", "--role", "agent", "--agent", "nobody", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: agent: no agent with login 'nobody'"


def test_the_readme_configuration_example_checks_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme.toml"
    path.write_text(example, encoding="utf-8")
    assert main(["config", "check", str(path)]) == 0, capsys.readouterr().out
