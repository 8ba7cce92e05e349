"""The layering contracts in pyproject.toml: the tree keeps them, and each one breaks on an import it forbids."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ROOT_PACKAGES = ["brain_connectors", "connectors", "routing", "conversations", "audit"]

# One import each contract forbids, as (contract id, module to add, its source).
VIOLATIONS = [
    ("app-layers", "connectors/lint_probe.py", "import brain_connectors.mcp.server\n"),
    ("audit-lowest", "audit/lint_probe.py", "import brain_connectors.shared.errors\n"),
    ("connectors-no-apps-above", "connectors/lint_probe.py", "import routing.models\n"),
    ("routing-no-conversations", "routing/lint_probe.py", "import conversations.models\n"),
    ("conversations-routing-public", "conversations/lint_probe.py", "import routing.api\n"),
    ("shared-no-domain", "brain_connectors/shared/lint_probe.py", "import connectors.permissions\n"),
    ("services-no-drf-channels", "connectors/registry/lint_probe.py", "from rest_framework import serializers\n"),
    ("connectors-layers", "connectors/platforms/lint_probe.py", "import connectors.delivery.brain\n"),
]


def lint_imports(cwd, *contracts):
    args = [str(LINT_IMPORTS), "--no-cache", *[f"--contract={c}" for c in contracts]]
    # A clean environment: the packages are found from `cwd` (which lint-imports puts first on the path), never from
    # a PYTHONPATH that points at another tree.
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_configured():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert sorted(config["root_packages"]) == sorted(ROOT_PACKAGES)
    assert sorted(contract["id"] for contract in config["contracts"]) == sorted(cid for cid, _, _ in VIOLATIONS)


def test_the_tree_keeps_every_contract():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """The product packages and pyproject.toml, copied so that a probe module never lands in the real tree."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copy(REPO / "pyproject.toml", root)
    for package in ROOT_PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    return root


@pytest.mark.parametrize(("contract", "module", "source"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_each_contract_breaks_on_a_forbidden_import(tree_copy, contract, module, source):
    probe = tree_copy / module
    assert not probe.exists()
    probe.write_text(f'"""A forbidden import, for the contract test."""\n\n{source}')
    try:
        result = lint_imports(tree_copy, contract)
    finally:
        probe.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout
    assert "lint_probe" in result.stdout
