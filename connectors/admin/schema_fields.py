"""Django form fields generated from a platform's JSON schema (config or credentials), with plain-word errors."""

import re

from django import forms
from django.core.validators import RegexValidator
from django.utils.text import capfirst

from brain_connectors.shared.parsers import SafeJSONFormField
from connectors.admin.field_help import help_for

# A boolean the schema leaves optional has three states: absent (the platform's default), true, false.
BOOLEAN_CHOICES = [("", "Default"), ("true", "Yes"), ("false", "No")]


# Words people write in capitals (API base URL, Account SID).
ACRONYMS = {"api": "API", "url": "URL", "sid": "SID"}


def label_of(name):
    return capfirst(" ".join(ACRONYMS.get(word, word) for word in name.split("_")))


def prefixed(label, messages):
    """Each message names its field, so it reads alone too (the form's top summary, a screen reader)."""
    return {code: f"{label}: {text}" for code, text in messages.items()}


def field_for(kind, name, spec, *, required, secret=False):
    """One form field for one schema property. Unsupported shapes (objects, arrays) get a JSON box of their own."""
    label = label_of(name)
    description, example = help_for(kind, name, spec)
    help_text = description + (f" Example: {example}" if example else "")
    common = {"label": label, "required": required, "help_text": help_text.strip()}
    messages = {"required": "this field is required."}
    if "enum" in spec:
        choices = [(str(v), str(v)) for v in spec["enum"]]
        # A blank first entry: "Default" leaves it to the platform; for a required one, the person chooses.
        choices = [("", "Choose…" if required else "Default"), *choices]
        return forms.TypedChoiceField(
            choices=choices, coerce=enum_coercer(spec["enum"]), empty_value=None,
            error_messages=prefixed(label, {**messages, "invalid_choice": "choose one of the listed values."}), **common,
        )
    kind_of_value = spec.get("type")
    if kind_of_value == "boolean":
        if required:
            return forms.BooleanField(**{**common, "required": False})
        return forms.TypedChoiceField(
            choices=BOOLEAN_CHOICES, coerce=lambda v: v == "true", empty_value=None,
            error_messages=prefixed(label, messages), **common,
        )
    if kind_of_value in ("integer", "number"):
        return number_field(kind_of_value, spec, label, messages, common)
    if kind_of_value == "string":
        return string_field(spec, label, messages, common, example, secret)
    return SafeJSONFormField(error_messages=prefixed(label, messages), **common)


def enum_coercer(values):
    by_text = {str(v): v for v in values}
    return lambda text: by_text.get(text, text)


def number_field(kind_of_value, spec, label, messages, common):
    low, high = spec.get("minimum"), spec.get("maximum")
    bounds = " to ".join(str(b) for b in (low, high) if b is not None)
    messages = {**messages, "invalid": "enter a number.", "min_value": f"enter a number from {bounds}.",
                "max_value": f"enter a number from {bounds}."}
    field_class = forms.IntegerField if kind_of_value == "integer" else forms.FloatField
    validators = []
    if "exclusiveMinimum" in spec:
        floor = spec["exclusiveMinimum"]
        validators.append(lambda v: v is not None and v <= floor and _raise(f"{label}: enter a number above {floor}."))
    return field_class(min_value=low, max_value=high, validators=validators,
                       error_messages=prefixed(label, messages), **common)


def string_field(spec, label, messages, common, example, secret):
    validators = []
    if "pattern" in spec:
        shape = f" like {example}" if example and not secret else ""
        validators.append(RegexValidator(re.compile(spec["pattern"]), message=f"{label}: enter a value{shape} in the expected format."))
    low, high = spec.get("minLength"), spec.get("maxLength")
    messages = {**messages, "min_length": f"enter at least {low} characters.",
                "max_length": f"enter at most {high} characters."}
    widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}) if secret else None
    if not secret and high and high > 500:
        widget = forms.Textarea(attrs={"rows": 2})
    return forms.CharField(
        min_length=low, max_length=high, validators=validators, widget=widget, strip=False,
        error_messages=prefixed(label, messages), **common,
    )


def _raise(message):
    raise forms.ValidationError(message)


def fields_from_schema(kind, schema, prefix, *, secret=False, optional=False):
    """{form field name: field} for each property of an object schema; `optional` makes every field optional
    (an edit, where an empty credential keeps its value)."""
    required = set(schema.get("required", ()))
    return {
        f"{prefix}{name}": field_for(kind, name, spec, required=name in required and not optional, secret=secret)
        for name, spec in schema.get("properties", {}).items()
    }


def values_from(cleaned, prefix, schema):
    """The object the fields describe: only the keys given a value (an empty field is an absent key)."""
    values = {}
    for name in schema.get("properties", {}):
        value = cleaned.get(f"{prefix}{name}")
        if value not in (None, ""):
            values[name] = value
    return values
