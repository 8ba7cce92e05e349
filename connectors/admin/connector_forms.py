"""The connector admin's forms: one field per setting of the connector's kind (credentials write-only), a test send."""

import re

from django import forms

from brain_connectors.shared.parsers import SafeJSONFormField
from connectors.admin.schema_fields import fields_from_schema, label_of, values_from
from connectors.models import Connector
from connectors.registry.kinds import available_kinds, get_connector_class

CONFIG, CREDENTIALS = "config__", "credentials__"
REQUIRED = re.compile(r"^'(\w+)' is a required property$")


class RawJSONField(SafeJSONFormField):
    """An optional JSON box that starts empty: forms.JSONField shows an empty value as `null`."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


def kind_choices():
    return [(kind, f"{get_connector_class(kind).label or kind} ({kind})") for kind in available_kinds()]


class ConnectorAdminForm(forms.ModelForm):
    """Generic part: id, name, quotas and the advanced raw JSON boxes. `connector_form_for` adds one kind's fields."""

    kind_name = ""  # set on each kind's form class
    kind = forms.ChoiceField(choices=(), widget=forms.HiddenInput)
    config = RawJSONField(
        required=False, label="Extra settings (raw JSON)", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Advanced: a JSON object merged over the settings above, for a key the form does not show. "
                  "Usually left empty.",
    )
    new_credentials = RawJSONField(
        required=False, label="Replace all credentials (raw JSON)",
        widget=forms.Textarea(attrs={"rows": 2, "autocomplete": "off"}),
        help_text="Advanced: a JSON object that replaces every stored credential (with the fields above typed over "
                  "it). Usually left empty; never shown.",
    )

    class Meta:
        model = Connector
        fields = ["id", "kind", "display_name", "quota_per_minute", "recipient_quota_per_minute"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What is stored now: Django's form writes the new config onto the instance before save_model compares.
        self.stored_config = dict(self.instance.config or {})
        if "kind" in self.fields:
            self.fields["kind"].choices = [(k, k) for k in available_kinds()]
            self.fields["kind"].initial = self.kind_name
        if "config" in self.fields:
            self.initial["config"] = None  # its settings have their own fields: the box adds to them only
        for name, value in (self.instance.config or {}).items():
            if f"{CONFIG}{name}" in self.fields:
                self.initial[f"{CONFIG}{name}"] = value

    def clean(self):
        cleaned = super().clean()
        kind_class = get_connector_class(self.kind_name)
        cleaned["config"] = self.clean_part("config", CONFIG, kind_class.config_schema, kind_class.validate_config)
        if any(name.startswith(CREDENTIALS) for name in self.fields) or "new_credentials" in self.fields:
            cleaned["new_credentials"] = self.clean_credentials(kind_class)
        return cleaned

    def clean_part(self, box, prefix, schema, validate):
        """The object the fields (and the raw box) describe, checked by the platform: its errors go on their
        field, and only where that field has no error already (one error per field, never a false second one)."""
        values = values_from(self.cleaned_data, prefix, schema)
        raw = self.cleaned_data.get(box)
        if self.has_error(box):
            return None
        if raw not in (None, ""):
            if not isinstance(raw, dict):
                self.add_error(box, "Enter a JSON object, like {\"key\": \"value\"}.")
                return None
            values = {**values, **raw}
            for name in raw:  # a required field left empty is given by the box: no error for it
                if f"{prefix}{name}" in self.errors and self.data.get(f"{prefix}{name}") in (None, ""):
                    del self.errors[f"{prefix}{name}"]
        if any(self.has_error(name) for name in self.fields if name.startswith(prefix)):
            return None  # the platform's check would repeat what the fields already say
        self.add_platform_errors(validate(values), prefix, box)
        return values

    def clean_credentials(self, kind_class):
        schema = kind_class.credentials_schema
        raw = self.cleaned_data.get("new_credentials")
        if raw not in (None, "", {}):
            return self.clean_part("new_credentials", CREDENTIALS, schema, kind_class.validate_credentials)
        given = values_from(self.cleaned_data, CREDENTIALS, schema)
        if self.instance.pk and not given:
            return None  # nothing typed: keep the current credentials
        if any(self.has_error(name) for name in self.fields if name.startswith(CREDENTIALS)):
            return None
        # An empty field keeps that credential's current value; the stored ones are read here, never shown.
        credentials = {**(self.instance.get_credentials() if self.instance.pk else {}), **given}
        self.add_platform_errors(kind_class.validate_credentials(credentials), CREDENTIALS, "new_credentials")
        return credentials

    def add_platform_errors(self, errors, prefix, box):
        for path, message in errors.items():
            missing = REQUIRED.match(message)
            name = missing.group(1) if missing else path
            field = f"{prefix}{name}"
            if field in self.fields:
                text = "this field is required." if missing else message
                self.add_error(field, f"{label_of(name)}: {text}")
            elif box in self.fields:
                self.add_error(box, f"{name}: {message}")
            else:
                self.add_error(None, f"{label_of(name)}: {message}")


def connector_form_for(kind, *, with_credentials, editing):
    """The form class for one kind: its config fields, and its credential fields for those who may set them."""
    kind_class = get_connector_class(kind)
    attrs = {"kind_name": kind, **fields_from_schema(kind, kind_class.config_schema, CONFIG)}
    if with_credentials:
        attrs.update(fields_from_schema(kind, kind_class.credentials_schema, CREDENTIALS, secret=True, optional=editing))
    return type(f"{kind.capitalize()}ConnectorForm", (ConnectorAdminForm,), attrs)


def field_names(kind, prefix):
    kind_class = get_connector_class(kind)
    schema = kind_class.config_schema if prefix == CONFIG else kind_class.credentials_schema
    return [f"{prefix}{name}" for name in schema.get("properties", {})]


class KindChoiceForm(forms.Form):
    """The add page's first step: which platform."""

    kind = forms.ChoiceField(choices=kind_choices, label="Kind", help_text="The platform this connector talks to.")


class SendTestForm(forms.Form):
    recipient = forms.CharField(max_length=255, help_text="A platform address: chat id, phone number, e-mail, CLI user.")
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), initial="Test message from BRAIN Connectors.", max_length=10_000
    )
