"""Every TOML example in the README is a configuration `umsg config check` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from umsg.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_passes_config_check(block: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(block, encoding="utf-8")
    code = main(["config", "check", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert out.out.strip() == "ok"
