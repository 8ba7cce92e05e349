"""Conversation memory: storage through the connectors' services, context for BRAIN, and search
over encrypted content through the blind index."""
import subprocess

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from audit.models import AuditEvent
from brain_connectors.shared.errors import NotFound, ValidationFailed
from connectors import services
from connectors.permissions import Principal
from connectors.platforms.base import IncomingMessage
from conversations import search as index
from conversations.models import Conversation, Message, SearchToken
from conversations.recording import record_pending
from conversations.services import get_context, search
from routing.models import ChannelIdentity
from tests.conftest import SYSTEM
from tests.connectors import twilio_support
from tests.connectors.broken import CountingBrain


@pytest.fixture
def counting_brain(settings):
    settings.BRAIN_BACKEND = "tests.connectors.broken.CountingBrain"
    CountingBrain.calls.clear()
    yield CountingBrain.calls
    CountingBrain.calls.clear()


twilio_fake = twilio_support.twilio_fake
twilio_connector = twilio_support.twilio_connector


def receive(connector_id, text, msg_id, sender="ada"):
    return services.receive_message(connector_id, IncomingMessage(sender=sender, content=text, platform_message_id=msg_id))[0]


def as_user(user):
    return Principal.for_user(user, via="test")


@pytest.mark.django_db
def test_inbound_and_outbound_are_stored_with_roles(make_connector):
    make_connector("mem_a")
    receive("mem_a", "hello there", "m1")
    services.send_message(SYSTEM, "mem_a", "ada", "operator note")
    services.send_message(services.BRAIN, "mem_a", "ada", "brain answer")
    record_pending()  # in this one-transaction test, on-commit kicks never run: the consumer's turn
    conversation = Conversation.objects.get(connector_id="mem_a", address="ada")
    assert [(m.role, m.content) for m in conversation.messages.order_by("created_at", "id")] == [
        ("user", "hello there"), ("system", "operator note"), ("assistant", "brain answer"),
    ]
    assert conversation.last_message_at == Message.objects.order_by("-created_at").first().created_at
    assert SearchToken.objects.filter(message__conversation=conversation).count() == 6


@pytest.mark.django_db
def test_storing_a_message_reads_no_connector_row(make_connector):
    """The signal carries the connector's kind, so memory does not read it again for every message
    (webhook ingest pays for each query), neither when marking it nor when storing it."""
    make_connector("mem_q")
    with CaptureQueriesContext(connection) as queries:
        receive("mem_q", "hello there", "q1")
        services.send_message(SYSTEM, "mem_q", "ada", "operator note")
        record_pending()
    kind_reads = [q["sql"] for q in queries.captured_queries
                  if q["sql"].startswith('SELECT "connectors_connector"."kind" AS "kind" FROM')]
    assert kind_reads == []
    assert Conversation.objects.get(connector_id="mem_q", address="ada").messages.count() == 2


@pytest.mark.django_db
def test_whatsapp_prefix_is_normalised_and_person_is_set(twilio_connector, make_user):
    # The prefix is WhatsApp's (WhatsAppConnector.normalize_address): other kinds keep it, as
    # routing's identities on them do (tests/connectors/test_addresses.py).
    twilio_connector("mem_wa", "whatsapp")
    user = make_user("wanda")
    ChannelIdentity.objects.create(user=user, connector_id="mem_wa", address="+15550001", verified_at=timezone.now())
    receive("mem_wa", "hi", "w1", sender="whatsapp:+15550001")
    receive("mem_wa", "again", "w2", sender="+15550001")
    record_pending()
    conversation = Conversation.objects.get()
    assert conversation.address == "+15550001" and conversation.person == user
    assert conversation.messages.count() == 2


@pytest.mark.django_db
def test_context_order_and_limit(make_connector):
    make_connector("mem_c")
    for i in range(5):
        receive("mem_c", f"message {i}", f"c{i}")
    record_pending()
    conversation = Conversation.objects.get()
    context = get_context(conversation, "mem_c", limit=3)
    assert [c["content"] for c in context] == ["message 2", "message 3", "message 4"]
    assert all(c["role"] == "user" and isinstance(c["time"], str) for c in context)


@pytest.mark.django_db
def test_cross_channel_context(make_connector, make_user, settings):
    make_connector("mem_tg")
    make_connector("mem_sms")
    user = make_user("cross")
    ChannelIdentity.objects.create(user=user, connector_id="mem_tg", address="111", verified_at=timezone.now())
    ChannelIdentity.objects.create(user=user, connector_id="mem_sms", address="+1555", verified_at=timezone.now())
    receive("mem_tg", "on telegram", "t1", sender="111")
    receive("mem_sms", "on sms", "s1", sender="+1555")
    assert [c["content"] for c in get_context(user, "mem_sms")] == ["on sms"]
    settings.CONVERSATION_CONTEXT_CROSS_CHANNEL = True
    assert [c["content"] for c in get_context(user, "mem_sms")] == ["on telegram", "on sms"]


@pytest.mark.django_db(transaction=True)
def test_brain_gets_the_stored_context_and_its_reply_is_stored(make_connector, counting_brain):
    make_connector("mem_b")
    receive("mem_b", "first", "b1")
    receive("mem_b", "second", "b2")
    receive("mem_b", "stranger", "b3", sender="bob")
    assert counting_brain[0].context == []
    assert [(c["role"], c["content"]) for c in counting_brain[1].context] == [("user", "first"), ("assistant", "reply #1")]
    assert counting_brain[2].context == []
    roles = list(Message.objects.filter(conversation__address="ada").values_list("role", "content"))
    assert roles == [("user", "first"), ("assistant", "reply #1"), ("user", "second"), ("assistant", "reply #2")]


def _dump():
    from django.conf import settings

    if connection.vendor == "sqlite":
        return "\n".join(connection.connection.iterdump())
    db = settings.DATABASES["default"]
    env = {"PGPASSWORD": db.get("PASSWORD") or "", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    cmd = ["pg_dump", "-h", db.get("HOST") or "127.0.0.1", "-p", str(db.get("PORT") or 5432),
           "-U", db.get("USER") or "postgres", db["NAME"]]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout


@pytest.mark.django_db(transaction=True)
def test_database_dump_holds_no_canary(make_connector, counting_brain):
    make_connector("mem_canary")
    canaries = ["zqxcanaryalpha", "zqxcanarybravo", "zqxcanarycharlie"]
    receive("mem_canary", f"secret {canaries[0]} words", "k1")
    services.send_message(SYSTEM, "mem_canary", "ada", f"note {canaries[1]}")
    receive("mem_canary", f"{canaries[2]} again", "k2")
    assert len(search(SYSTEM, canaries[0])) == 1  # indexed and searchable
    dump = _dump()
    assert "conversations_searchtoken" in dump or "searchtoken" in dump.lower()
    for canary in canaries:
        assert canary not in dump
        assert index.stem(canary) not in dump


WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)


@pytest.mark.django_db
@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(WORD, min_size=1, max_size=8), absent=WORD)
def test_any_word_finds_the_message_and_absent_words_find_nothing(make_connector, words, absent):
    from connectors.models import Connector

    if not Connector.objects.filter(pk="mem_prop").exists():
        make_connector("mem_prop")
    sender = f"p{Message.objects.count()}"
    msg = receive("mem_prop", " ".join(words), f"prop-{sender}", sender=sender)
    record_pending()
    stored = Message.objects.get(inbound_id=msg.pk)
    for word in words:
        found = search(SYSTEM, word, connector_id="mem_prop", limit=200)
        assert stored in found
    if index.stem(absent) not in {index.stem(w) for w in words}:
        assert stored not in search(SYSTEM, absent, connector_id="mem_prop", limit=200)


@pytest.mark.django_db
def test_and_semantics_and_quoted_phrases(make_connector):
    make_connector("mem_q")
    receive("mem_q", "the red car is fast", "q1")
    receive("mem_q", "a fast red bicycle", "q2")
    assert {m.content for m in search(SYSTEM, "red fast")} == {"the red car is fast", "a fast red bicycle"}
    assert [m.content for m in search(SYSTEM, "red car")] == ["the red car is fast"]
    assert [m.content for m in search(SYSTEM, '"fast red"')] == ["a fast red bicycle"]
    assert [m.content for m in search(SYSTEM, "Cars")] == ["the red car is fast"]  # stemming, case


@pytest.mark.django_db
def test_permission_scoping(make_connector, make_user, grant, api, token_for):
    make_connector("mem_p1")
    make_connector("mem_p2")
    person = make_user("person")
    staff = make_user("staff", staff=True)
    admin = make_user("boss", superuser=True)
    ChannelIdentity.objects.create(user=person, connector_id="mem_p1", address="pp", verified_at=timezone.now())
    receive("mem_p1", "shared keyword mine", "x1", sender="pp")
    receive("mem_p1", "shared keyword other", "x2", sender="zz")
    receive("mem_p2", "shared keyword elsewhere", "x3", sender="yy")
    grant(staff, "read_conversations", Connector_get("mem_p2"))  # view alone reads no one's (test_read_permission)

    assert [m.content for m in search(as_user(person), "shared keyword")] == ["shared keyword mine"]
    assert [m.content for m in search(as_user(staff), "shared keyword")] == ["shared keyword elsewhere"]
    assert len(search(as_user(admin), "shared keyword")) == 3
    with pytest.raises(NotFound):
        search(as_user(staff), "shared", connector_id="mem_p1")
    assert AuditEvent.objects.filter(action="conversation.search", result="denied").count() == 1
    ok = AuditEvent.objects.filter(action="conversation.search", result="success").first()
    assert ok.details["token_count"] == 2 and "shared" not in str(ok.details)

    response = api(token_for(staff)).get("/api/v1/conversations/search/", {"q": "keyword"})
    assert response.status_code == 200
    assert [(r["connector"], r["content"]) for r in response.json()["results"]] == [("mem_p2", "shared keyword elsewhere")]
    assert set(response.json()["results"][0]) == {"message_id", "conversation_id", "connector", "role", "time", "content"}
    assert api(token_for(staff)).get("/api/v1/conversations/search/", {"q": "x", "connector": "mem_p1"}).status_code == 404


def Connector_get(pk):
    from connectors.models import Connector

    return Connector.objects.get(pk=pk)


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["", "   ", "!!! ???", "x" * 201, " ".join(f"w{i}" for i in range(11))])
def test_bad_queries_are_refused(make_connector, make_user, api, token_for, query):
    with pytest.raises(ValidationFailed):
        search(SYSTEM, query)
    user = make_user("asker")
    response = api(token_for(user)).get("/api/v1/conversations/search/", {"q": query})
    assert response.status_code == 400
    assert query.strip() == "" or query not in response.content.decode()


def test_tokenize():
    assert index.tokenize("Café RUNNING, boxes & cats!") == ["cafe", "runn", "box", "cat"]
    assert index.tokenize("ﬁle") == ["file"]  # NFKC ligature


@pytest.mark.django_db(transaction=True)
def test_admin_search_finds_conversations_by_the_words_of_their_messages(make_connector, make_user, client):
    make_connector("adm_search")
    services.receive_message(
        "adm_search", IncomingMessage(platform_message_id="a-1", sender="ada", content="the zeppelin lands at noon")
    )
    services.receive_message(
        "adm_search", IncomingMessage(platform_message_id="b-1", sender="bob", content="nothing to see")
    )
    client.force_login(make_user("root", superuser=True))
    page = client.get("/admin/conversations/conversation/", {"q": "zeppelin"})
    assert page.status_code == 200
    assert page.context["cl"].result_count == 1
    assert page.context["cl"].result_list[0].address == "ada"


@pytest.mark.django_db(transaction=True)
def test_search_matches_messages_still_indexed_under_the_previous_key(make_connector, settings):
    make_connector("rekey")
    services.receive_message(
        "rekey", IncomingMessage(platform_message_id="r-1", sender="ada", content="walrus sightings")
    )
    old_key = settings.SEARCH_INDEX_KEY
    settings.SEARCH_INDEX_KEY = "a-brand-new-index-key-0123456789abcdef"
    assert search(SYSTEM, "walrus") == []  # rows are under the old key
    settings.SEARCH_INDEX_PREVIOUS_KEY = old_key
    found = [m.content for m in search(SYSTEM, "walrus")]
    assert "walrus sightings" in found and len(found) == 2  # the message and BRAIN's echo of it


@pytest.mark.django_db
def test_the_search_index_is_vacuumed_often_on_postgresql():
    """Search reads the index alone only on pages the visibility map marks all-visible; the newest
    rows, read first, must not wait for PostgreSQL's default 20%-of-the-table autovacuum."""
    if connection.vendor != "postgresql":
        pytest.skip("storage parameters are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [SearchToken._meta.db_table])
        options = dict(option.split("=") for option in cursor.fetchone()[0] or [])
    assert options == {"autovacuum_vacuum_insert_threshold": "10000", "autovacuum_vacuum_insert_scale_factor": "0.01"}
