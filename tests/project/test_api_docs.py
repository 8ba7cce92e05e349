"""Every REST operation documents itself (issue 15): its own summary in Swagger, and no internal docstring as
its description (drf-spectacular falls back on the view's class docstring, inherited from a mixin if need be)."""
import inspect
import re
from collections import Counter

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator

PROJECT_PACKAGES = ("audit", "brain_connectors", "connectors", "conversations", "routing")
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (f"{method.upper()} {path}", op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _view_classes(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _view_classes(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
            if view is not None:
                yield view


def _inherited_docstrings():
    """First lines of the docstrings of the project's own base classes of API views (mixins and the like)."""
    lines = set()
    for view in _view_classes(get_resolver().url_patterns):
        for base in view.__mro__[1:]:
            if base.__module__.split(".")[0] in PROJECT_PACKAGES and base.__doc__:
                lines.add(inspect.cleandoc(base.__doc__).splitlines()[0])
    return lines


def test_the_schema_has_every_operation(operations):
    assert len(operations) >= 45


def test_every_operation_has_a_summary(operations):
    missing = [name for name, op in operations if not op.get("summary", "").strip()]
    assert not missing


def test_summaries_are_unique(operations):
    counts = Counter(op["summary"] for _, op in operations)
    assert not {summary: n for summary, n in counts.items() if n > 1}


def test_no_description_is_an_inherited_internal_docstring(operations):
    internal = _inherited_docstrings()
    leaked = [
        (name, line) for name, op in operations for line in internal if line in op.get("description", "")
    ]
    assert not leaked


def test_no_description_is_a_bare_route_line(operations):
    # e.g. "GET /api/v1/conversations/search/?q=&connector=&limit=": a note for the code's reader, not the API's
    route_line = re.compile(r"^\s*(GET|POST|PUT|PATCH|DELETE)\s+/")
    assert not [name for name, op in operations if route_line.match(op.get("description", ""))]
