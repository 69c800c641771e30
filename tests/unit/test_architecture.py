"""The layering is true and checked: import contracts hold, and every module imports on its own.

`lint-imports` (import-linter, configured in pyproject.toml) is what `scripts/test-all` runs;
here it is also shown to fail on a deliberately bad copy of the tree, so a contract that
can never break would be noticed. Every module is then imported alone in an interpreter
that has loaded none of ours, which is where an import cycle shows at run time.

The tests keep a rule of their own: fixtures are shared through a conftest.py per folder and
helpers through modules not named `test_*`, so no file under tests/ imports a test module.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("umsg", "channels", "converters", "storage")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            if "migrations" in rel.parts or rel.name == "__main__":
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found.append(".".join(parts))
    return found


def _copy_tree(dest: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "*.wav"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache"], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold_on_the_tree() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# A bad change of each kind the contracts forbid: (file, line appended, contract name that must break).
BAD_CHANGES = [
    ("storage/types.py", "import umsg.model", "storage imports nothing of ours above it"),
    ("umsg/model.py", "import umsg.core", "no import cycles"),
    ("umsg/queue.py", "import channels.base", "only the composition root"),
    ("channels/sms/gsm.py", "import umsg.queue", "channels use only the core's API"),
    ("converters/base.py", "import storage.models", "converters use nothing of the core"),
    ("umsg/routes/filters.py", "import umsg.ingest.rows", "channel routes do not import the ingest pipeline"),
    ("umsg/web/api/inbox.py", "from sqlalchemy import select", "web API handlers run no SQL"),
]


@pytest.mark.parametrize(("path", "line", "contract"), BAD_CHANGES, ids=[c[0] for c in BAD_CHANGES])
def test_a_bad_import_breaks_its_contract(tmp_path: Path, path: str, line: str, contract: str) -> None:
    _copy_tree(tmp_path)
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{line}  # deliberately bad\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def test_every_ignored_breach_still_exists() -> None:
    """An `ignore_imports` entry that no longer matches an import is stale: import-linter says so
    (its default alerting is an error), and this makes sure nobody turned that off."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in config["contracts"]:
        assert contract.get("unmatched_ignore_imports_alerting", "error") == "error", contract["id"]


# Imports every module of ours in a process forked from one that has loaded only third-party
# libraries: each import starts with none of our modules loaded, as in a fresh interpreter,
# without paying an interpreter's start (and SQLAlchemy's import) per module.
_FORK_EACH = textwrap.dedent("""
    import importlib, os, sys, traceback
    for name in sys.argv[2].split(","):
        if name:
            importlib.import_module(name)
    failed = 0
    for module in sys.argv[1].split(","):
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(module)
            except BaseException:
                print(f"FAIL {module}: " + traceback.format_exc().strip().splitlines()[-1], flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    print(f"failed {failed}")
""")


def test_every_module_imports_alone() -> None:
    modules = _modules()
    assert len(modules) > 150  # the whole tree, not an empty walk
    # The third-party libraries our modules use, found by importing them all once.
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib, sys\n"
         f"for m in {modules!r}: importlib.import_module(m)\n"
         f"print(','.join(sorted({{n.split('.')[0] for n in sys.modules}} - {set(PACKAGES)!r})))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    third_party = [n for n in probe.stdout.strip().split(",") if n and not n.startswith("_")]
    result = subprocess.run([sys.executable, "-c", _FORK_EACH, ",".join(modules), ",".join(third_party)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("failed 0"), result.stdout


# A test module imported by another is collected once more under the importer's name (its tests
# run twice, its fixtures leak into the importer), and a fixture that only works when imported
# has to hide behind a noqa for an unused import. Fixtures go in a conftest.py per folder, shared
# helpers in modules whose names do not start with `test_`; the imports are read with `ast`, so a
# comment, a string or a line break cannot hide one or fake one.
TESTS = ROOT / "tests"
# How a module of the test tree is named when imported: a top-level `test_x` (pytest puts each
# test folder on sys.path), `tests.…`, a folder of tests/ (`integration.test_x`), or relative.
TEST_ROOTS = frozenset({"tests"} | {p.name for p in TESTS.iterdir() if p.is_dir()})


def _is_test_module(dotted: str, relative: bool = False) -> bool:
    parts = dotted.split(".")
    ours = relative or parts[0].startswith("test_") or parts[0] in TEST_ROOTS
    return ours and any(part.startswith("test_") for part in parts)  # not aiohttp.test_utils


def _test_module_imports(source: str, filename: str = "<test>") -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a module named `test_*`: `import test_x`, `from test_x
    import y`, `from pkg.test_x import y`, `from pkg import test_x`, `from . import test_x`, and
    `importlib.import_module("test_x")` / `__import__("test_x")` with a literal name."""
    for node in ast.walk(ast.parse(source, filename)):
        relative = False
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base, relative = node.module or "", node.level > 0
            names = [base] + [f"{base}.{alias.name}".lstrip(".") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            if name and _is_test_module(name, relative):
                yield node.lineno, name
                break


def _test_sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_file_under_tests_imports_a_test_module() -> None:
    sources = _test_sources()
    assert len(sources) > 80 and TESTS / "integration" / "conftest.py" in sources  # the whole tree was read
    found = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
             for path in sources
             for line, module in _test_module_imports(path.read_text(encoding="utf-8"), str(path))]
    assert found == [], "share fixtures through conftest.py and helpers through a module not named test_*:\n" \
        + "\n".join(found)


# The check itself must be able to fail: each of these is a way to import a test module.
BAD_IMPORTS = [
    "from test_api import Api",
    "import test_api",
    "import os, test_api as harness",
    "from tests.integration.test_outbound import message",
    "from integration import test_outbound",
    "from . import test_outbound",
    "def f():\n    from test_router_store import add_agent\n    return add_agent",
    "import importlib\nimportlib.import_module('test_outbound')",
    "__import__('test_outbound')",
]
GOOD_IMPORTS = [
    "from api_harness import Api",
    "import router_driver",
    "from outbound_helpers import message  # test_outbound used to hold it",
    "text = 'from test_api import Api'",
    "from aiohttp.test_utils import TestClient",
    "from aiohttp import test_utils",
]


def test_the_check_finds_each_way_to_import_a_test_module() -> None:
    missed = [source for source in BAD_IMPORTS if not list(_test_module_imports(source))]
    assert missed == []
    wrongly = [source for source in GOOD_IMPORTS if list(_test_module_imports(source))]
    assert wrongly == []


# What each allow-list contract lets through; every other module of the core must be forbidden by
# name, so that a module added later is forbidden until someone decides otherwise.
ALLOWED_OF_THE_CORE = {
    "converters": {"umsg.errors"},
    "channel-api": {"umsg.errors", "umsg.model", "umsg.identity", "umsg.config", "umsg.services",
                    "umsg.channel_jobs", "umsg.instances", "umsg.chat_support", "umsg.channel_state", "umsg.workers",
                    "umsg.secrets_mask"},
}


@pytest.mark.parametrize("contract_id", sorted(ALLOWED_OF_THE_CORE))
def test_every_module_of_the_core_is_allowed_or_forbidden(contract_id: str) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["id"] == contract_id)
    children = {f"umsg.{p.stem if p.suffix else p.name}" for p in (ROOT / "umsg").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    forbidden = {m for m in contract["forbidden_modules"] if m.startswith("umsg.")}
    assert forbidden | ALLOWED_OF_THE_CORE[contract_id] == children, (
        f"neither allowed nor forbidden: {sorted(children - forbidden - ALLOWED_OF_THE_CORE[contract_id])}")
