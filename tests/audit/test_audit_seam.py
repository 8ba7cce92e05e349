"""The public audit seam for services: `record_action` and `audited` (refusals `denied`, other errors `failure`)."""

import pytest

from audit import services as audit
from audit.models import AuditEvent
from brain_connectors.shared.errors import (
    Hidden,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
    audit_result,
    audit_result_limits_denied,
)
from connectors.permissions import Principal

pytestmark = pytest.mark.django_db

ACTOR = Principal.system_actor("seam", via="command")


def test_record_action_adds_the_principals_via_and_a_detail_named_via_wins():
    row = audit.record_action("x.do", ACTOR, "thing", 7, count=2)
    assert (row.principal, row.target_type, row.target_id, row.result) == (str(ACTOR), "thing", "7", "success")
    assert row.details == {"via": "command", "count": 2}
    assert audit.record_action("x.do", ACTOR, "thing", 7, via="webhook").details["via"] == "webhook"
    assert audit.record_action("x.do", "system:plain", "", "").details["via"] == ""


@pytest.mark.parametrize(
    ("error", "classify", "result"),
    [
        (PermissionDenied("no"), audit_result, "denied"),
        (Hidden("gone"), audit_result, "denied"),
        (NotFound("gone"), audit_result, "failure"),
        (ValidationFailed("bad", code="bad_thing"), audit_result, "failure"),
        (RateLimited("slow", retry_after=3), audit_result, "failure"),
        (RateLimited("slow", retry_after=3), audit_result_limits_denied, "denied"),
        (Hidden("gone"), audit_result_limits_denied, "denied"),
    ],
)
def test_audited_records_the_escaping_error_as_classified_and_re_raises(error, classify, result):
    with pytest.raises(type(error)), audit.audited("x.do", ACTOR, "thing", "t1", classify=classify, extra=1):
        raise error
    row = AuditEvent.objects.get()
    assert (row.action, row.target_type, row.target_id, row.result) == ("x.do", "thing", "t1", result)
    assert row.details == {"via": "command", "error": error.code, "message": error.message, "extra": 1}


def test_audited_trims_the_message_only_when_asked_and_ignores_what_classify_does_not_know():
    with pytest.raises(ValidationFailed), audit.audited("x.do", ACTOR, "t", "", classify=audit_result, message_limit=3):
        raise ValidationFailed("abcdef")
    assert AuditEvent.objects.get().details["message"] == "abc"
    with pytest.raises(KeyError), audit.audited("x.do", ACTOR, "t", "", classify=audit_result):
        raise KeyError("not a service error")
    with audit.audited("x.do", ACTOR, "t", "", classify=audit_result):
        pass
    assert AuditEvent.objects.count() == 1
