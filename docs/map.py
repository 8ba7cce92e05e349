"""Keep the "## Map" section of docs/architecture.md equal to the product packages and their module docstrings.

Usage (from the repository root, or anywhere: paths are relative to this file's repository):

    python docs/map.py            print the map
    python docs/map.py --write    rewrite the section between the map markers
    python docs/map.py --check    exit 1, listing each difference and each module without a one-line docstring

One line per package (its ``__init__.py`` docstring) and per module (its own docstring): the first paragraph
of the docstring, which should be a single line (PEP 257's summary line, then a blank line). Standard library
only, so it runs before the project's dependencies are installed.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = Path("docs/architecture.md")
PACKAGES = ("brain_connectors", "connectors", "routing", "conversations", "audit")
SKIPPED_DIRS = frozenset({"migrations", "tests", "static", "templates", "__pycache__"})
START_MARKER = "<!-- map:start -->"
END_MARKER = "<!-- map:end -->"
NO_DOCSTRING = "(no docstring)"
# A map line: indentation, then "- `path` — summary". The path is what the check compares.
LINE_PATTERN = re.compile(r"^\s*- `(?P<path>[^`]+)`(?: — (?P<summary>.*))?$")


@dataclass(frozen=True)
class Entry:
    """One package or module of the map."""

    path: str  # "connectors/api/" for a package, "connectors/api/views.py" for a module
    depth: int  # 0 for a top-level package
    summary: str | None  # first paragraph of the docstring, on one line; None without a docstring
    summary_lines: int  # how many source lines that first paragraph spans


def docstring_summary(source: str) -> tuple[str | None, int]:
    """The first paragraph of a module's docstring as one line, and how many lines it spans."""
    docstring = ast.get_docstring(ast.parse(source))
    if not docstring or not docstring.strip():
        return None, 0
    paragraph = []
    for line in docstring.strip().splitlines():
        if not line.strip():
            break
        paragraph.append(line.strip())
    return " ".join(paragraph), len(paragraph)


def _holds_python(directory: Path) -> bool:
    # A folder of modules without __init__.py is still code to map (and a missing docstring to report).
    return any(
        not SKIPPED_DIRS.intersection(file.relative_to(directory).parts[:-1]) for file in directory.rglob("*.py")
    )


def _entry(file: Path, path: str, depth: int) -> Entry:
    if not file.is_file():
        return Entry(path=path, depth=depth, summary=None, summary_lines=0)
    summary, lines = docstring_summary(file.read_text(encoding="utf-8"))
    return Entry(path=path, depth=depth, summary=summary, summary_lines=lines)


def _walk(root: Path, directory: Path, depth: int) -> list[Entry]:
    entries = [_entry(directory / "__init__.py", directory.relative_to(root).as_posix() + "/", depth)]
    for child in sorted(directory.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if child.is_file() and child.suffix == ".py" and child.name != "__init__.py":
            entries.append(_entry(child, child.relative_to(root).as_posix(), depth + 1))
        elif child.is_dir() and child.name not in SKIPPED_DIRS and _holds_python(child):
            entries.extend(_walk(root, child, depth + 1))
    return entries


def collect(root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Entry]:
    """Every product package and module under root, packages before their modules, in a stable order."""
    entries: list[Entry] = []
    for package in packages:
        if (root / package).is_dir():
            entries.extend(_walk(root, root / package, 0))
    return entries


def render(entries: list[Entry]) -> str:
    """The map section's body: one bullet per package and module, nested by depth."""
    lines = []
    for entry in entries:
        indent = "  " * entry.depth
        lines.append(f"{indent}- `{entry.path}` — {entry.summary or NO_DOCSTRING}")
    return "\n".join(lines)


def split_document(text: str) -> tuple[str, str, str]:
    """The text before the map's start marker (marker included), the map body, and the text from the end marker."""
    start = text.find(START_MARKER)
    end = text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the document needs {START_MARKER} and then {END_MARKER}")
    head_end = start + len(START_MARKER)
    return text[:head_end], text[head_end:end].strip("\n"), text[end:]


def parse_map(body: str) -> dict[str, str]:
    """Path → summary for every bullet of a map body."""
    listed = {}
    for line in body.splitlines():
        match = LINE_PATTERN.match(line)
        if match:
            listed[match["path"]] = (match["summary"] or "").strip()
    return listed


def docstring_problems(entries: list[Entry]) -> list[str]:
    """Modules and packages without a docstring, or whose summary is not a single line."""
    problems = []
    for entry in entries:
        what = f"{entry.path}__init__.py" if entry.path.endswith("/") else entry.path
        if entry.summary is None:
            problems.append(f"no docstring: {what} (one line saying its one responsibility)")
        elif entry.summary.rstrip(".") == entry.path.rstrip("/").removesuffix(".py").replace("/", "."):
            problems.append(f"docstring only names the module: {what} (say its one responsibility)")
        elif entry.summary_lines > 1:
            problems.append(f"summary spans {entry.summary_lines} lines: {what} (want one line, then a blank line)")
    return problems


def map_differences(
    root: Path = REPO_ROOT, doc_path: Path = DOC_PATH, packages: tuple[str, ...] = PACKAGES
) -> list[str]:
    """Every difference between the tree and the map in the document: missing, gone, changed or out of order."""
    entries = collect(root, packages)
    _, body, _ = split_document((root / doc_path).read_text(encoding="utf-8"))
    listed = parse_map(body)
    actual = {entry.path: entry.summary or NO_DOCSTRING for entry in entries}
    problems = [f"missing from the map: {path}" for path in actual if path not in listed]
    problems += [f"listed but gone: {path}" for path in listed if path not in actual]
    problems += [
        f"summary changed: {path} (map: {listed[path]!r}, docstring: {actual[path]!r})"
        for path in actual
        if path in listed and listed[path] != actual[path]
    ]
    if not problems and body != render(entries):
        problems.append("map order or layout differs from the tree")
    return problems


def check(root: Path = REPO_ROOT, doc_path: Path = DOC_PATH, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every difference between the tree and the map, then every module without a one-line docstring."""
    return map_differences(root, doc_path, packages) + docstring_problems(collect(root, packages))


def write(root: Path = REPO_ROOT, doc_path: Path = DOC_PATH, packages: tuple[str, ...] = PACKAGES) -> bool:
    """Rewrite the map section from the tree; True when the file changed."""
    document = root / doc_path
    text = document.read_text(encoding="utf-8")
    head, _, tail = split_document(text)
    new_text = f"{head}\n{render(collect(root, packages))}\n{tail}"
    if new_text == text:
        return False
    document.write_text(new_text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the map section of docs/architecture.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when the map or a docstring is wrong")
    args = parser.parse_args(argv)
    if args.write:
        changed = write()
        print(f"{DOC_PATH}: map {'rewritten' if changed else 'already up to date'}")
        problems = docstring_problems(collect())
    elif args.check:
        problems = check()
    else:
        print(render(collect()))
        return 0
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.check and problems:
        print(f"{len(problems)} problem(s); fix the docstrings, then run: python docs/map.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
