"""ask_user and get_question_answer through the official MCP client against `manage.py runmcp` (stdio): the person's
numbered SMS reply is the answer, a wait with no answer is timed_out, another sender's reply does not count, an answer
after the wait is read by question id, a question by username goes to the router's channel, and all of it is audited."""
import asyncio
import threading

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from connectors.models import Question
from routing.models import ChannelIdentity, ConnectorPreference
from tests.connectors import twilio_support
from tests.connectors.twilio_support import fixture, post_twilio
from tests.mcp_client import error_text, run, stdio_session, structured

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector

ADA = "+14155550199"  # the sms_inbound fixture's sender
MALLORY = "+14155550123"
OPTIONS = [{"id": "approve", "label": "Approve"}, {"id": "deny", "label": "Deny"}]


def reply_when_asked(twilio_fake, sender, body, *, after_messages=1, message_sid="SM" + "1" * 32):
    """In a thread: once the question reached Twilio, the person's SMS reply arrives at the webhook, signed."""
    def reply():
        try:
            deadline = timezone.now().timestamp() + 20
            while len(twilio_fake.messages) < after_messages and timezone.now().timestamp() < deadline:
                threading.Event().wait(0.05)
            post_twilio(Client(), "/webhooks/twilio/sms_ask/", fixture(
                "sms_inbound", From=sender, Body=body, MessageSid=message_sid, SmsSid=message_sid,
                SmsMessageSid=message_sid))
        finally:
            connection.close()
    return reply


def ask(subprocess_env, token, arguments, *, during=None, then=None):
    async def scenario():
        async with stdio_session({**subprocess_env, "BRAIN_MCP_TOKEN": token}) as session:
            call = asyncio.create_task(session.call_tool("ask_user", arguments))
            if during is not None:
                await asyncio.to_thread(during)
            result = await call
            later = None
            if then is not None:
                await asyncio.to_thread(then)
                question_id = structured(result)["question_id"]
                later = await session.call_tool("get_question_answer", {"question_id": question_id})
            return result, later

    return run(scenario())


@pytest.fixture
def claude(make_user, token_for):
    return token_for(make_user("claude", superuser=True))


def test_ask_user_returns_the_persons_numbered_choice(twilio_connector, twilio_fake, claude, subprocess_env):
    twilio_connector("sms_ask", "sms")
    result, _ = ask(subprocess_env, claude, {
        "connector_id": "sms_ask", "recipient": ADA, "question": "Deploy v2 to production?", "options": OPTIONS,
        "wait_seconds": 30,
    }, during=reply_when_asked(twilio_fake, ADA, "2"))
    answer = structured(result)
    assert answer["status"] == "answered" and answer["answer"] == {"id": "deny", "label": "Deny"}
    assert answer["answered_by"] == ADA
    assert twilio_fake.messages[0].form["Body"].endswith("Reply 1 for Approve\nReply 2 for Deny")
    question = Question.objects.get()
    assert question.status == "answered" and question.answer_inbound.content == "2"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"question.ask", "question.answer", "question.get", "message.queued"} <= actions
    [asked] = AuditEvent.objects.filter(action="question.ask", target_type="question")
    assert asked.principal == "user:claude" and "Deploy" not in str(asked.details)


def test_another_senders_reply_does_not_count_and_a_later_answer_is_read_by_id(
    twilio_connector, twilio_fake, claude, subprocess_env
):
    twilio_connector("sms_ask", "sms")
    result, later = ask(subprocess_env, claude, {
        "connector_id": "sms_ask", "recipient": ADA, "question": "Deploy v2?", "options": OPTIONS, "wait_seconds": 3,
    }, during=reply_when_asked(twilio_fake, MALLORY, "1"),
        then=reply_when_asked(twilio_fake, ADA, "1", message_sid="SM" + "2" * 32))
    waited = structured(result)
    assert waited["status"] == "timed_out" and waited["answer"] is None and waited["still_open"] is True
    answered = structured(later)
    assert answered["status"] == "answered" and answered["answer"]["id"] == "approve"
    assert answered["answered_by"] == ADA
    assert not AuditEvent.objects.filter(action="question.answer", details__inbound_id__isnull=False).exclude(
        details__answer="approve").exists()


def test_a_question_past_its_open_time_is_timed_out(twilio_connector, twilio_fake, claude, subprocess_env):
    twilio_connector("sms_ask", "sms")
    result, _ = ask(subprocess_env, claude, {
        "connector_id": "sms_ask", "recipient": ADA, "question": "Deploy?", "options": OPTIONS, "wait_seconds": 0})
    question_id = structured(result)["question_id"]
    Question.objects.filter(pk=question_id).update(expires_at=timezone.now())
    post_twilio(Client(), "/webhooks/twilio/sms_ask/", fixture("sms_inbound", Body="1"))

    async def read():
        async with stdio_session({**subprocess_env, "BRAIN_MCP_TOKEN": claude}) as session:
            return await session.call_tool("get_question_answer", {"question_id": question_id})

    assert structured(run(read()))["status"] == "timed_out"
    assert Question.objects.get().answer == ""


def test_ask_user_by_username_goes_to_the_routers_channel(twilio_connector, twilio_fake, make_user, claude,
                                                          subprocess_env):
    twilio_connector("sms_ask", "sms")
    ada = make_user("ada")
    identity = ChannelIdentity.objects.create(user=ada, connector_id="sms_ask", address=ADA, verified_at=timezone.now())
    ConnectorPreference.objects.create(user=ada, identity=identity, priority=1, notification_types=["standard"])
    result, _ = ask(subprocess_env, claude, {"username": "ada", "question": "Deploy?", "options": OPTIONS,
                                             "wait_seconds": 30}, during=reply_when_asked(twilio_fake, ADA, "1"))
    answer = structured(result)
    assert (answer["status"], answer["connector_id"], answer["recipient"]) == ("answered", "sms_ask", ADA)


def test_ask_user_without_send_permission_is_a_tool_error(twilio_connector, twilio_fake, make_user, token_for,
                                                           subprocess_env):
    twilio_connector("sms_ask", "sms")
    nobody = token_for(make_user("nobody"))
    result, _ = ask(subprocess_env, nobody, {"connector_id": "sms_ask", "recipient": ADA, "question": "Deploy?",
                                             "options": OPTIONS, "wait_seconds": 0})
    assert "does not exist" in error_text(result) or "permission" in error_text(result).lower()
    assert not Question.objects.exists() and not twilio_fake.messages
    assert AuditEvent.objects.filter(action="question.ask", result="denied").exists()


def test_send_message_takes_buttons_over_mcp(twilio_connector, twilio_fake, claude, subprocess_env):
    twilio_connector("sms_ask", "sms")

    async def send():
        async with stdio_session({**subprocess_env, "BRAIN_MCP_TOKEN": claude}) as session:
            ok = await session.call_tool("send_message", {"connector_id": "sms_ask", "recipient": ADA,
                                                          "content": "Deploy?", "buttons": OPTIONS})
            bad = await session.call_tool("send_message", {"connector_id": "sms_ask", "recipient": ADA,
                                                           "content": "Deploy?", "buttons": OPTIONS + OPTIONS})
            return ok, bad

    ok, bad = run(send())
    assert structured(ok)["status"] == "queued"
    assert twilio_fake.messages[0].form["Body"] == "Deploy?\n\nReply 1 for Approve\nReply 2 for Deny"
    assert "used twice" in error_text(bad) and len(twilio_fake.messages) == 1
