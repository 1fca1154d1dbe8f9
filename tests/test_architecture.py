"""The import boundary is enforced, not described: ``lint-imports`` (part of the README's test
command) keeps the core free of plugin imports and the built-in plugins independent."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_every_plugin_package_is_under_both_contracts() -> None:
    plugins = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists())
    cfg = _config()
    forbidden, independent = cfg["contracts"]
    assert sorted(forbidden["forbidden_modules"]) == plugins
    assert sorted(independent["modules"]) == plugins
    assert sorted(cfg["root_packages"]) == sorted(["wrapgrad", *plugins])


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": f"{tree}{':' + str(tree / 'plugins')}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the sources, so a violation can be planted without touching the checkout."""
    shutil.copytree(
        ROOT / "wrapgrad", tmp_path / "wrapgrad", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        ROOT / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is installed by scripts/setup.sh test")
def test_the_contracts_hold_and_a_planted_violation_breaks_them(tree: Path) -> None:
    clean = _lint(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # The core imports a plugin: the first contract breaks.
    (tree / "wrapgrad" / "_violation.py").write_text("import wrapgrad_noise  # noqa\n")
    core = _lint(tree)
    assert core.returncode != 0
    assert "The core (wrapgrad) never imports a plugin BROKEN" in core.stdout
    (tree / "wrapgrad" / "_violation.py").unlink()
    # One plugin imports another: the independence contract breaks.
    (tree / "plugins" / "wrapgrad_metrics" / "_violation.py").write_text(
        "from wrapgrad_noise import perturbers  # noqa\n"
    )
    plugin = _lint(tree)
    assert plugin.returncode != 0
    assert "reach each other only through the registry BROKEN" in plugin.stdout
