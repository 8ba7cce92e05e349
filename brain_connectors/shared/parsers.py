"""JSON request bodies with bounded nesting, for every REST view and the admin's JSON fields.

Python's decoder raises RecursionError (not ValueError) past ~1,000 levels, which DRF and Django
let through as a 500. And a body just under that still reaches code that recurses again with less
stack left (serializers, json.dumps of the audit row, the database adapter). No body this API
accepts needs more than a few levels, so anything nested past MAX_JSON_DEPTH is a 400 before any
serializer or service sees it.
"""
from django import forms
from django.forms.fields import InvalidJSONInput
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Containers (objects and arrays) inside one another, the outermost counted as 1.
MAX_JSON_DEPTH = 32
TOO_DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"


def too_deep(value, limit=MAX_JSON_DEPTH) -> bool:
    """Whether decoded JSON nests more than `limit` containers. Iterative: no recursion to exhaust."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class SafeJSONParser(JSONParser):
    """DRF's JSONParser, with too deep a body refused as a ParseError (400 `parse_error`, audited
    as `api.invalid_request` like any other malformed body) instead of a RecursionError."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - {TOO_DEEP}.") from None
        if too_deep(data):
            raise ParseError(f"JSON parse error - {TOO_DEEP}.")
        return data


class SafeJSONFormField(forms.JSONField):
    """forms.JSONField catches only JSONDecodeError: a deep value was a 500 in the admin, both when
    the form was cleaned and when it was shown again with its errors."""

    def to_python(self, value):
        try:
            converted = super().to_python(value)
            deep = too_deep(converted)
        except RecursionError:
            deep = True
        if deep:
            raise forms.ValidationError(f"Enter JSON nested at most {MAX_JSON_DEPTH} levels deep.", code="invalid")
        return converted

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)
