"""Slack sending files (issue 18): OutgoingMessage.attachments through the real slack_sdk files_upload_v2 against the
loopback fake Slack (tests/fakes/slack_files.py: getUploadURLExternal, the upload host, completeUploadExternal):
the text as the files' comment, several files in one share, buttons posted first with the files after them, the
token kept off the upload host, an upload URL off Slack refused, and each error class."""
import asyncio
import base64

import pytest

from connectors import services
from connectors.delivery.sender import Sender
from connectors.models import Connector, Delivery, InboundMessage
from tests.conftest import SYSTEM
from tests.connectors.test_slack import BOT_TOKEN, TEAM, fixture, post_event
from tests.deliveries import retry_now, send_now
from tests.fakes.slack_server import FakeSlack

pytestmark = pytest.mark.django_db(transaction=True)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0b3a8"
    "0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
CHANNEL, ADA = "C0LAN2Q65", "U061F7AUR"
BUTTONS = [{"id": "yes", "label": "Approve"}, {"id": "no", "label": "Reject"}]


def b64(data):
    return base64.b64encode(data).decode()


def png(name="chart.png", **extra):
    return {"data": b64(PNG), "file_name": name, **extra}


def pdf(name="report.pdf", **extra):
    return {"data": b64(PDF), "file_name": name, **extra}


@pytest.fixture(autouse=True)
def attachment_dir(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "attachments": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    return tmp_path


@pytest.fixture
def fake():
    server = FakeSlack(bot_tokens={BOT_TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture
def slack(make_connector, fake, settings):
    settings.PUBLIC_BASE_URL = "https://brain.example.org"
    make_connector("slack_main", kind="slack", config={"api_base_url": fake.url},
                   credentials={"bot_token": BOT_TOKEN, "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"})
    return Connector.objects.get(pk="slack_main")


def methods(fake):
    """The Web API methods called after start (auth.test), in order."""
    return [call.method for call in fake.calls if call.method != "auth.test"]


def test_an_image_with_text_is_one_upload_with_the_text_as_its_comment(slack, fake):
    delivery = send_now("slack_main", CHANNEL, "**Your** chart & notes", attachments=[png()])
    assert delivery.status == "sent", delivery.last_error
    assert methods(fake) == ["files.getUploadURLExternal", "files.completeUploadExternal"]  # no chat.postMessage
    [ask] = fake.calls_to("files.getUploadURLExternal")
    assert (ask.params["filename"], ask.params["length"], ask.token) == ("chart.png", str(len(PNG)), BOT_TOKEN)
    [share] = fake.shared
    assert (share["channel"], share["thread_ts"]) == (CHANNEL, None)
    assert share["initial_comment"] == "*Your* chart &amp; notes"  # mrkdwn, as a text message's
    [uploaded] = share["files"]
    assert (uploaded["name"], uploaded["title"], uploaded["data"]) == ("chart.png", "chart.png", PNG)
    # Slack's documented answer names the files only: the delivery keeps the file's id.
    assert delivery.platform_message_id == uploaded["id"] and uploaded["id"].startswith("F")
    assert fake.sent == []


def test_two_files_go_to_a_person_in_one_share_and_keep_the_share_ts(slack, fake):
    fake.shares_in_response = True  # Slack's full answer, once the share is done: the message's ts
    delivery = send_now("slack_main", f"{TEAM}:{ADA}", "", attachments=[png(), pdf(caption="Q3 report")])
    assert delivery.status == "sent", delivery.last_error
    assert [c.params["users"] for c in fake.calls_to("conversations.open")] == [ADA]
    assert len(fake.calls_to("files.getUploadURLExternal")) == 2
    [complete] = fake.calls_to("files.completeUploadExternal")  # both files, one call, one message
    [share] = fake.shared
    assert share["channel"] == FakeSlack.dm_id(ADA) and share["initial_comment"] is None
    assert [(f["name"], f["title"], f["data"]) for f in share["files"]] == [
        ("chart.png", "chart.png", PNG), ("report.pdf", "Q3 report", PDF)]
    assert delivery.platform_message_id == share["ts"]
    assert "initial_comment" not in complete.params


def test_files_with_buttons_post_the_buttons_first_then_the_files_in_the_same_thread(slack, fake):
    assert post_event("slack_main", fixture("app_mention")).json()["stored"] == 1
    inbound = InboundMessage.objects.get()
    thread = "1733312400.000300"  # the mention's ts: replies go in its thread
    fake.sent.clear()
    before = len(fake.calls)
    delivery, _ = services.send_message(SYSTEM, "slack_main", inbound.sender, "Approve this **invoice**?",
                                        buttons=BUTTONS, attachments=[pdf("invoice.pdf")], in_reply_to=inbound)
    delivery.refresh_from_db()
    assert delivery.status == "sent", delivery.last_error
    assert [c.method for c in fake.calls[before:]] == [
        "chat.postMessage", "files.getUploadURLExternal", "files.completeUploadExternal"]
    [post] = fake.calls_to("chat.postMessage")[-1:]
    [posted] = fake.sent
    assert (posted["channel"], posted["thread_ts"]) == (CHANNEL, thread)
    assert "*invoice*" in str(post.params["blocks"]) and "Approve" in str(post.params["blocks"])
    [share] = fake.shared
    assert (share["channel"], share["thread_ts"], share["initial_comment"]) == (CHANNEL, thread, None)
    assert share["files"][0]["data"] == PDF
    assert delivery.platform_message_id == posted["ts"]  # the delivery is known by its first message


def test_files_and_buttons_without_text_post_the_buttons_alone(slack, fake):
    delivery = send_now("slack_main", CHANNEL, "", buttons=BUTTONS, attachments=[png()])
    assert delivery.status == "sent", delivery.last_error
    [post] = fake.calls_to("chat.postMessage")
    assert "section" not in str(post.params["blocks"]) and "Reject" in str(post.params["blocks"])
    assert fake.shared[0]["channel"] == CHANNEL and fake.shared[0]["thread_ts"] is None


def test_a_long_text_goes_first_and_its_last_part_is_the_comment(slack, fake):
    paragraphs = [f"paragraph {n} " + "x" * 1500 for n in range(5)]
    delivery = send_now("slack_main", CHANNEL, "\n\n".join(paragraphs), attachments=[png()])
    assert delivery.status == "sent", delivery.last_error
    texts = [sent["text"] for sent in fake.sent] + [fake.shared[0]["initial_comment"]]
    assert len(texts) == 3 and all(len(text) <= 4000 for text in texts)
    assert "".join(texts).replace("\n", "") == "".join(paragraphs)
    assert methods(fake)[-1] == "files.completeUploadExternal"


def test_the_token_never_reaches_the_upload_host(slack, fake):
    assert send_now("slack_main", CHANNEL, "two files", attachments=[png(), pdf()]).status == "sent"
    assert [call.token for call in fake.calls if call.method != "auth.test"] == [BOT_TOKEN] * 3
    assert len(fake.upload_posts) == 2
    for path, headers, body in fake.upload_posts:
        assert path.startswith("/upload/v1/") and BOT_TOKEN not in path
        assert "Authorization" not in headers and not any(BOT_TOKEN in value for value in headers.values())
        assert body in (PNG, PDF)


def test_an_upload_url_off_slacks_host_is_refused_before_any_byte_leaves(slack, fake):
    elsewhere = FakeSlack().start()  # another origin (port): not the API's host
    try:
        fake.upload_base = f"http://127.0.0.1:{elsewhere.port}"
        delivery = send_now("slack_main", CHANNEL, "secret plans", attachments=[png()])
        assert delivery.status == "failed" and delivery.attempts == 1
        assert "upload URL is not on Slack's file host" in delivery.last_error
        assert elsewhere.upload_posts == [] and fake.upload_posts == []
        assert fake.calls_to("files.completeUploadExternal") == []
    finally:
        elsewhere.stop()


@pytest.mark.parametrize("refusal", ["not_in_channel", "channel_not_found"])
def test_a_channel_refusal_fails_the_delivery_at_once(slack, fake, refusal):
    (fake.kick_from if refusal == "not_in_channel" else fake.forget_channel)(CHANNEL)
    delivery = send_now("slack_main", CHANNEL, "chart", attachments=[png("quarterly-secret.png")])
    assert delivery.status == "failed" and delivery.attempts == 1
    assert refusal in delivery.last_error and "quarterly-secret" not in delivery.last_error
    assert fake.shared == [] and Connector.objects.get(pk="slack_main").status == "CONNECTED"


def test_ratelimited_completion_is_retried_after_retry_after(slack, fake):
    fake.retry_after = 7
    fake.fail("ratelimited", method="files.completeUploadExternal", times=1)
    delivery = send_now("slack_main", CHANNEL, "chart", attachments=[png()])
    assert delivery.status == "queued" and "rate limit" in delivery.last_error
    assert 6 <= (delivery.next_attempt_at - delivery.updated_at).total_seconds() <= 9
    assert retry_now(delivery).status == "sent"
    [share] = fake.shared  # the retry uploads anew: the first upload was never shared
    assert share["files"][0]["data"] == PNG and share["initial_comment"] == "chart"


def test_the_upload_host_failing_is_retried_without_naming_the_file(slack, fake):
    fake.fail_uploads(status=503)
    delivery = send_now("slack_main", CHANNEL, "chart", attachments=[png("quarterly-secret.png")])
    assert delivery.status == "queued" and "HTTP 503" in delivery.last_error
    assert "quarterly-secret" not in delivery.last_error
    assert retry_now(delivery).status == "sent"
    assert [f["data"] for f in fake.uploaded] == [PNG]


def test_the_upload_host_refusing_fails_the_delivery(slack, fake):
    fake.fail_uploads(status=413)
    delivery = send_now("slack_main", CHANNEL, "chart", attachments=[png()])
    assert delivery.status == "failed" and "HTTP 413" in delivery.last_error and fake.shared == []


def test_a_failed_upload_after_the_buttons_does_not_post_them_again(slack, fake):
    fake.fail("server_error", method="files.completeUploadExternal", times=1)
    delivery = send_now("slack_main", CHANNEL, "Approve?", buttons=BUTTONS, attachments=[pdf()])
    assert delivery.status == "queued"
    assert retry_now(delivery).status == "sent"
    assert len(fake.sent) == 1 and len(fake.shared) == 1
    assert Delivery.objects.get(pk=delivery.pk).platform_message_id == fake.sent[0]["ts"]
    assert not any(key.startswith("sending:") for key in Connector.objects.get(pk="slack_main").platform_state)


def test_the_batch_sender_uploads_files_too(settings, slack, fake):
    settings.DELIVERY_ENGINE = "sender"
    services.send_message(SYSTEM, "slack_main", CHANNEL, "from the sender", attachments=[png()])
    services.send_message(SYSTEM, "slack_main", CHANNEL, "text only")
    asyncio.run(Sender(poll_seconds=0.05).run(until_idle=True))
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    assert [(s["initial_comment"], s["files"][0]["data"]) for s in fake.shared] == [("from the sender", PNG)]
    assert [s["text"] for s in fake.sent] == ["text only"]


def test_slack_declares_attachments_with_no_cap_below_ours():
    from connectors.platforms.slack.connector import SlackConnector

    assert SlackConnector.supports_attachments is True and SlackConnector.attachment_max_bytes == {}
    assert SlackConnector.attachments_need_public_url is False



def test_a_file_sent_without_a_name_keeps_the_stored_name(slack, fake):
    assert send_now("slack_main", CHANNEL, "", attachments=[{"data": b64(PDF)}]).status == "sent"
    [uploaded] = fake.uploaded
    assert uploaded["name"] == uploaded["title"] == "document-1" and uploaded["data"] == PDF
