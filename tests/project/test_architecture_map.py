"""docs/architecture.md's map lists every product package and module, each with a one-line docstring."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_map_script():
    # docs/ is not a package (the script is stdlib-only and runs before any install), so load it by path.
    spec = importlib.util.spec_from_file_location("architecture_map", REPO_ROOT / "docs" / "map.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


architecture_map = load_map_script()


def test_the_map_lists_every_package_and_module_of_the_tree():
    differences = architecture_map.map_differences(REPO_ROOT)
    assert not differences, (
        f"docs/architecture.md's map differs from the tree in {len(differences)} place(s); run "
        "`python docs/map.py --write`:\n" + "\n".join(differences)
    )


def test_every_package_and_module_has_a_one_line_docstring():
    problems = architecture_map.docstring_problems(architecture_map.collect(REPO_ROOT))
    assert not problems, (
        f"{len(problems)} module(s) without a one-line docstring saying their one responsibility (fix them, then "
        "run `python docs/map.py --write`):\n" + "\n".join(problems)
    )


def make_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


MAP_DOC = """\
# Architecture

## Map

<!-- map:start -->
{body}
<!-- map:end -->

## After the map
"""


def test_the_check_reports_every_kind_of_problem_at_once(tmp_path):
    make_tree(
        tmp_path,
        {
            "app/__init__.py": '"""The app."""\n',
            "app/documented.py": '"""Does one thing."""\n',
            "app/undocumented.py": "VALUE = 1\n",
            "app/wrapped.py": '"""A summary that was wrapped\nonto a second line.\n\nDetails."""\n',
            "app/named.py": '"""app.named."""\n',
            "app/inner/__init__.py": "",
            "app/inner/tool.py": '"""A tool."""\n',
            "app/loose/helper.py": '"""In a folder without __init__.py."""\n',
            "app/migrations/0001_initial.py": "",
            "app/tests/test_app.py": "",
            "docs/architecture.md": MAP_DOC.format(
                body="- `app/` — The app.\n  - `app/documented.py` — Did another thing.\n  - `app/gone.py` — Removed."
            ),
        },
    )

    problems = architecture_map.check(tmp_path, packages=("app",))

    assert "missing from the map: app/undocumented.py" in problems
    assert "missing from the map: app/inner/tool.py" in problems
    assert "missing from the map: app/loose/helper.py" in problems
    assert "listed but gone: app/gone.py" in problems
    assert any(p.startswith("summary changed: app/documented.py") for p in problems)
    assert any(p.startswith("no docstring: app/undocumented.py") for p in problems)
    assert any(p.startswith("no docstring: app/inner/__init__.py") for p in problems)
    assert any(p.startswith("no docstring: app/loose/__init__.py") for p in problems)
    assert any(p.startswith("summary spans 2 lines: app/wrapped.py") for p in problems)
    assert any(p.startswith("docstring only names the module: app/named.py") for p in problems)
    assert not any("migrations" in p or "tests" in p for p in problems)
    assert not any("app/documented.py" in p for p in problems if not p.startswith("summary changed"))


def test_write_makes_the_map_true_and_leaves_the_rest_of_the_document_alone(tmp_path):
    make_tree(
        tmp_path,
        {
            "app/__init__.py": '"""The app."""\n',
            "app/models.py": '"""Its tables."""\n',
            "app/api/__init__.py": '"""Its REST API."""\n',
            "app/api/views.py": '"""Its views."""\n',
            "docs/architecture.md": MAP_DOC.format(body="- `app/old.py` — Gone."),
        },
    )

    assert architecture_map.write(tmp_path, packages=("app",)) is True

    text = (tmp_path / "docs/architecture.md").read_text()
    assert text == MAP_DOC.format(
        body=(
            "- `app/` — The app.\n"
            "  - `app/models.py` — Its tables.\n"
            "  - `app/api/` — Its REST API.\n"
            "    - `app/api/views.py` — Its views."
        )
    )
    assert architecture_map.check(tmp_path, packages=("app",)) == []
    assert architecture_map.write(tmp_path, packages=("app",)) is False


def test_a_document_without_the_markers_is_refused(tmp_path):
    make_tree(tmp_path, {"app/__init__.py": '"""The app."""\n', "docs/architecture.md": "# Architecture\n"})

    with pytest.raises(ValueError, match="map:start"):
        architecture_map.check(tmp_path, packages=("app",))
