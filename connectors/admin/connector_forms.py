"""The connector admin's forms: a connector (credentials write-only) and a test message to send."""

from django import forms

from brain_connectors.shared.parsers import SafeJSONFormField
from connectors.models import Connector
from connectors.registry.kinds import UnknownKind, available_kinds, get_connector_class


class ConnectorAdminForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=())
    config = SafeJSONFormField(required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 4}))
    new_credentials = SafeJSONFormField(
        required=False,
        label="New credentials",
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Write-only JSON object. Leave empty to keep the current credentials; they are never shown.",
    )

    class Meta:
        model = Connector
        fields = ["id", "kind", "display_name", "config", "quota_per_minute", "recipient_quota_per_minute"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "kind" in self.fields:
            self.fields["kind"].choices = [(k, k) for k in available_kinds()]

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind") or self.instance.kind
        try:
            kind_class = get_connector_class(kind)
        except UnknownKind as exc:
            self.add_error(None, str(exc))
            return cleaned
        config = cleaned.get("config")
        if config is None:
            cleaned["config"] = config = {}
        if not isinstance(config, dict):
            self.add_error("config", "Must be a JSON object.")
        else:
            for path, error in kind_class.validate_config(config).items():
                self.add_error("config", f"{path}: {error}")
        credentials = cleaned.get("new_credentials")
        if credentials not in (None, "", {}):
            if not isinstance(credentials, dict):
                self.add_error("new_credentials", "Must be a JSON object.")
            else:
                for path, error in kind_class.validate_credentials(credentials).items():
                    self.add_error("new_credentials", f"{path}: {error}")
        return cleaned


class SendTestForm(forms.Form):
    recipient = forms.CharField(max_length=255, help_text="A platform address: chat id, phone number, e-mail, CLI user.")
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), initial="Test message from BRAIN Connectors.", max_length=10_000
    )
