"""Analysis, sentiment trend, retention, export and erasure of conversation memory."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from brain_connectors.shared.errors import NotFound, PermissionDenied
from connectors.permissions import Principal
from conversations import analysis, privacy
from conversations.models import Conversation, Message, MessageAnalysis, RetentionPolicy, SearchToken
from routing.models import ChannelIdentity

SYSTEM = Principal.system_actor("tests", via="test")
POSITIVE = "I love this wonderful assistant, it is great and makes me very happy!"
NEGATIVE = "This is terrible, awful and horrible. I hate it and I am very angry."


def _conversation(connector, address="addr-1", person=None):
    return Conversation.objects.create(connector=connector, address=address, person=person, last_message_at=timezone.now())


def _message(conversation, content, *, role="user", age_days=0, tokens=("d1", "d2")):
    at = timezone.now() - timedelta(days=age_days)
    message = Message.objects.create(conversation=conversation, role=role, content=content, created_at=at)
    for digest in tokens:
        SearchToken.objects.create(message=message, digest=f"{digest}-{message.pk}", key_id="k")
    return message


@pytest.fixture
def connector(make_connector):
    return make_connector("locmem_priv")


@pytest.fixture
def alice(make_user):
    return make_user("alice")


def _audits(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- analysis ---------------------------------------------------------------------------------


def test_analysis_gives_the_right_sign_and_topics(connector, alice):
    conversation = _conversation(connector, person=alice)
    happy = _message(conversation, POSITIVE)
    sad = _message(conversation, NEGATIVE)
    about = _message(conversation, "The invoice for the bicycle repair arrived; the bicycle repair shop wants payment.")
    for message in (happy, sad, about):
        analysis.analyse_message(message.pk)
    assert MessageAnalysis.objects.get(message=happy).sentiment > 0.5
    assert MessageAnalysis.objects.get(message=sad).sentiment < -0.5
    stored = MessageAnalysis.objects.get(message=about)
    topics = analysis.topics_of(stored)
    assert 0 < len(topics) <= 5
    assert any("bicycle" in t for t in topics)
    # Topics are encrypted at rest: the raw column does not contain the keyword.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT topics FROM conversations_messageanalysis WHERE id = %s", [stored.pk])
        assert "bicycle" not in cursor.fetchone()[0]


def test_analysis_task_runs_and_a_gone_message_is_skipped(connector, alice):
    from conversations.tasks import analyse_message

    message = _message(_conversation(connector, person=alice), POSITIVE)
    analyse_message.apply(args=[message.pk])
    assert MessageAnalysis.objects.filter(message=message).exists()
    assert analysis.analyse_message(999_999) is None


def test_sentiment_trend_per_day_for_user_messages_only(connector, alice):
    conversation = _conversation(connector, person=alice)
    for content, age in ((POSITIVE, 2), (NEGATIVE, 2), (POSITIVE, 0)):
        analysis.analyse_message(_message(conversation, content, age_days=age).pk)
    analysis.analyse_message(_message(conversation, NEGATIVE, role="assistant").pk)  # not the person's
    analysis.analyse_message(_message(conversation, NEGATIVE, age_days=40).pk)  # outside the window
    trend = analysis.sentiment_trend(alice, days=30)
    assert [row["messages"] for row in trend] == [2, 1]
    assert trend[1]["average"] > 0.5
    assert abs(trend[0]["average"]) < 0.5  # a happy and an angry message the same day


def test_sentiment_api_own_staff_and_refused(connector, alice, make_user, api, token_for, grant):
    from django.contrib.auth.models import Permission

    analysis.analyse_message(_message(_conversation(connector, person=alice), POSITIVE).pk)
    response = api(token_for(alice)).get("/api/v1/conversations/people/alice/sentiment/")
    assert response.status_code == 200, response.content
    assert response.json()["trend"][0]["average"] > 0.5
    bob = make_user("bob")
    assert api(token_for(bob)).get("/api/v1/conversations/people/alice/sentiment/").status_code == 403
    staff = make_user("carol", staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    # A trend is read from Alice's words: also read_conversations on her connector (test_read_permission).
    assert api(token_for(staff)).get("/api/v1/conversations/people/alice/sentiment/?days=7").status_code == 403
    grant(staff, "read_conversations", connector)
    assert api(token_for(staff)).get("/api/v1/conversations/people/alice/sentiment/?days=7").status_code == 200
    assert api(token_for(alice)).get("/api/v1/conversations/people/alice/sentiment/?days=0").status_code == 400


# --- retention --------------------------------------------------------------------------------


def test_purge_uses_the_global_setting_and_connector_policies(settings, make_connector, alice):
    settings.CONVERSATION_RETENTION_DAYS = 30
    default = make_connector("locmem_default")
    short = make_connector("locmem_short")
    forever = make_connector("locmem_forever")
    privacy.set_retention_policy(SYSTEM, "locmem_short", 7)
    privacy.set_retention_policy(SYSTEM, "locmem_forever", 0)

    d = _conversation(default, person=alice)
    d_old, d_new = _message(d, "old", age_days=31), _message(d, "new", age_days=10)
    s_only_old = _conversation(short, "s-addr")
    s_old = _message(s_only_old, "old short", age_days=8)
    analysis.analyse_message(s_old.pk)
    f = _conversation(forever, "f-addr")
    f_old = _message(f, "ancient", age_days=3000)

    assert privacy.purge_expired(dry_run=True) == {"messages": 2, "conversations": 1, "attachments": 0, "dry_run": True}
    assert Message.objects.count() == 4

    seen = []
    result = privacy.purge_expired(progress=seen.append, batch_size=1)
    assert result == {"messages": 2, "conversations": 1, "attachments": 0, "dry_run": False}
    assert sum(seen) == 2
    assert set(Message.objects.values_list("pk", flat=True)) == {d_new.pk, f_old.pk}
    assert not SearchToken.objects.filter(message_id__in=[d_old.pk, s_old.pk]).exists()
    assert not MessageAnalysis.objects.exists()
    assert not Conversation.objects.filter(pk=s_only_old.pk).exists()
    assert Conversation.objects.filter(pk=d.pk).exists()
    row = _audits("conversations.purge")[-1]
    assert row.details["messages"] == 2 and row.details["conversations"] == 1


def test_zero_global_retention_keeps_everything(settings, connector):
    settings.CONVERSATION_RETENTION_DAYS = 0
    _message(_conversation(connector), "very old", age_days=5000)
    assert privacy.purge_expired()["messages"] == 0
    assert Message.objects.count() == 1


def test_retention_policy_service_is_audited_and_guarded(connector, make_user):
    policy = privacy.set_retention_policy(SYSTEM, connector.pk, 14)
    assert RetentionPolicy.objects.get(connector=connector).days == policy.days == 14
    assert _audits("conversations.retention.set")[-1].details["days"] == 14
    nobody = Principal.for_user(make_user("nobody"), via="test")
    with pytest.raises(PermissionDenied):
        privacy.set_retention_policy(nobody, connector.pk, 1)
    assert RetentionPolicy.objects.get(connector=connector).days == 14
    privacy.delete_retention_policy(SYSTEM, connector.pk)
    assert not RetentionPolicy.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_purge_command_progress_dry_run_and_audit(manage, make_connector, settings):
    connector = make_connector("locmem_cmd")
    conversation = _conversation(connector)
    for _ in range(3):
        _message(conversation, "expired words", age_days=400)
    _message(conversation, "fresh", age_days=1)

    dry = manage("purge_conversations", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "3 messages" in dry.stdout and "would be deleted" in dry.stdout
    assert Message.objects.count() == 4

    run = manage("purge_conversations", "--batch-size", "2")
    assert run.returncode == 0, run.stderr
    assert "Purged 3 messages and 0 empty conversations" in run.stdout
    assert "expired words" not in run.stdout + run.stderr
    assert Message.objects.count() == 1
    rows = _audits("conversations.purge")
    assert [r.details["dry_run"] for r in rows] == [True, False]
    assert rows[-1].details["messages"] == 3


def test_beat_runs_the_purge_daily(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["purge-conversations"]
    assert entry["task"] == "conversations.tasks.purge_conversations"
    assert entry["schedule"] == 86400.0


# --- export and erasure -----------------------------------------------------------------------


@pytest.fixture
def alice_history(connector, make_connector, alice, make_user):
    """Alice: one conversation linked to her account and one on a paired address (person unset);
    Bob: one conversation that must survive."""
    other = make_connector("locmem_other")
    ChannelIdentity.objects.create(user=alice, connector=other, address="alice-addr", verified_at=timezone.now())
    linked = _conversation(connector, "a-1", person=alice)
    m1 = _message(linked, POSITIVE)
    _message(linked, "Noted, anything else?", role="assistant")
    paired = _conversation(other, "alice-addr")
    _message(paired, "canary-alice-9f3 about the bicycle repair")
    analysis.analyse_message(m1.pk)
    bob = make_user("bob")
    bobs = _conversation(connector, "b-1", person=bob)
    _message(bobs, "bob's own words")
    return {"linked": linked, "paired": paired, "bobs": bobs, "bob": bob}


def test_export_contains_decrypted_history_and_is_audited_without_content(alice, alice_history):
    data = privacy.export_person(Principal.for_user(alice, via="test"), "alice")
    json.dumps(data)  # serialisable
    assert data["person"] == "alice"
    assert {c["connector"] for c in data["conversations"]} == {"locmem_priv", "locmem_other"}
    messages = [m for c in data["conversations"] for m in c["messages"]]
    assert len(messages) == 3
    happy = next(m for m in messages if m["content"] == POSITIVE)
    assert happy["role"] == "user" and happy["sentiment"] > 0.5 and happy["topics"]
    assert any(m["role"] == "assistant" for m in messages)
    assert "bob's own words" not in json.dumps(data)
    row = _audits("conversations.export")[-1]
    assert row.details["messages"] == 3 and row.details["conversations"] == 2
    assert "canary" not in json.dumps(row.details)


def test_export_api(alice, alice_history, api, token_for):
    response = api(token_for(alice)).get("/api/v1/conversations/people/alice/export/")
    assert response.status_code == 200
    assert "canary-alice-9f3" in response.content.decode()
    assert api(token_for(alice_history["bob"])).get("/api/v1/conversations/people/alice/export/").status_code == 403


def test_erasure_removes_everything_of_the_person_only(alice, alice_history, api, token_for):
    ids = [alice_history["linked"].pk, alice_history["paired"].pk]
    message_ids = list(Message.objects.filter(conversation_id__in=ids).values_list("pk", flat=True))
    response = api(token_for(alice)).delete("/api/v1/conversations/people/alice/")
    assert response.status_code == 200, response.content
    assert response.json()["erased"] == {"conversations": 2, "messages": 4 - 1, "index_rows": 6, "analyses": 1,
                                         "attachments": 0}
    assert not Conversation.objects.filter(pk__in=ids).exists()
    assert not Message.objects.filter(pk__in=message_ids).exists()
    assert not SearchToken.objects.filter(message_id__in=message_ids).exists()
    assert not MessageAnalysis.objects.exists()
    assert Message.objects.filter(conversation=alice_history["bobs"]).count() == 1
    row = _audits("conversations.erase")[-1]
    assert row.details["messages"] == 3 and row.result == "success"
    assert "canary" not in json.dumps(row.details)


def test_erasure_is_atomic_when_the_audit_write_fails(alice, alice_history, monkeypatch):
    before = (Conversation.objects.count(), Message.objects.count(), SearchToken.objects.count(), MessageAnalysis.objects.count())

    def broken(*args, **kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(privacy.audit, "record", broken)
    with pytest.raises(RuntimeError):
        privacy.erase_person(SYSTEM, alice)
    after = (Conversation.objects.count(), Message.objects.count(), SearchToken.objects.count(), MessageAnalysis.objects.count())
    assert after == before


def test_erasure_of_an_unknown_person_is_a_clear_not_found(api, alice, token_for):
    with pytest.raises(NotFound, match="No person with the username 'ghost'"):
        privacy.erase_person(SYSTEM, "ghost")
    assert api(token_for(alice)).delete("/api/v1/conversations/people/ghost/").status_code == 404


def test_erasure_permissions(alice, alice_history, make_user, api, token_for):
    from django.contrib.auth.models import Permission

    bob = alice_history["bob"]
    assert api(token_for(bob)).delete("/api/v1/conversations/people/alice/").status_code == 403
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    assert api(token_for(viewer)).delete("/api/v1/conversations/people/alice/").status_code == 403
    assert Conversation.objects.filter(person=alice).exists()
    assert _audits("conversations.erase")[-1].result == "denied"
    eraser = make_user("eraser", staff=True)
    eraser.user_permissions.add(Permission.objects.get(codename="delete_conversation"))
    assert api(token_for(eraser)).delete("/api/v1/conversations/people/alice/").status_code == 200
    assert not Conversation.objects.filter(person=alice).exists()


def test_admin_actions_export_and_forget(client, make_user, alice, alice_history):
    admin_user = make_user("root", superuser=True)
    client.force_login(admin_user)
    url = "/admin/conversations/conversation/"
    assert client.get(url).status_code == 200
    linked = alice_history["linked"]
    assert client.get(f"{url}{linked.pk}/change/").status_code == 200
    exported = client.post(url, {"action": "export_people", "_selected_action": [linked.pk]})
    assert exported.status_code == 200 and exported["Content-Type"] == "application/json"
    assert json.loads(exported.content)[0]["person"] == "alice"
    client.post(url, {"action": "forget_people", "_selected_action": [linked.pk]})
    assert not Conversation.objects.filter(pk__in=[linked.pk, alice_history["paired"].pk]).exists()
    assert Conversation.objects.filter(pk=alice_history["bobs"].pk).exists()
