"""Keys of conversation memory: `rotate_keys` re-encrypts message content and analysis topics,
and `rebuild_search_index` moves the blind index to a new SEARCH_INDEX_KEY, resumably."""
import re
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from conversations import search
from conversations.models import Conversation, IndexState, Message, MessageAnalysis, SearchToken

OLD_INDEX_KEY = "old-index-key-" + "a" * 32
NEW_INDEX_KEY = "new-index-key-" + "b" * 32
TEXTS = [
    "The quarterly budget meeting moved to Thursday",
    "Please water the orchids while I am travelling",
    "Canary zebra-kumquat appears only here",
    "Budget approved, orchids watered",
    "Meeting notes: zebra crossing near the office",
    "Thursday dinner with the travelling team",
    "Nothing special today",
]


def new_key():
    return Fernet.generate_key().decode()


def raw(model, column):
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {q(model._meta.pk.column)}, {q(column)} FROM {q(model._meta.db_table)}")
        return dict(cursor.fetchall())


def store(connector, texts, index_key=None):
    """Messages written straight to the tables, indexed under `index_key` (or not at all)."""
    now = timezone.now()
    conversation, _ = Conversation.objects.get_or_create(
        connector=connector, address="+15550000001", defaults={"last_message_at": now}
    )
    messages = [Message.objects.create(conversation=conversation, role="user", content=t, created_at=now) for t in texts]
    if index_key:
        SearchToken.objects.bulk_create(
            SearchToken(message=m, digest=d, key_id=search.key_id(index_key))
            for m in messages
            for d in search.digests_for(m.content, index_key)
        )
    return messages


def found(word, key):
    """Ids of the messages whose index rows match every token of `word` hashed under `key`."""
    ids = None
    for token in search.tokenize(word):
        hits = set(SearchToken.objects.filter(digest=search.digest(token, key)).values_list("message_id", flat=True))
        ids = hits if ids is None else ids & hits
    return ids or set()


def rebuild(*args):
    out = StringIO()
    call_command("rebuild_search_index", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- rotate_keys covers memory -----------------------------------------------------------------


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_message_content_and_topics(settings, make_connector):
    key_old, key_new = new_key(), new_key()
    settings.FERNET_KEYS = [key_old]
    connector = make_connector()
    messages = store(connector, TEXTS[:3])
    for m in messages:
        MessageAnalysis.objects.create(message=m, sentiment=0.1, topics=f"topics of {m.content}")
    before = raw(Message, "content")
    assert all(Fernet(key_old).decrypt(v.encode()) for v in before.values())

    # New key first, old key kept: everything still reads, then rotate.
    settings.FERNET_KEYS = [key_new, key_old]
    assert [Message.objects.get(pk=m.pk).content for m in messages] == TEXTS[:3]
    out = StringIO()
    call_command("rotate_keys", "--batch-size", "2", stdout=out, stderr=StringIO())
    assert re.search(r"^conversations\.Message\.content: 3 re-encrypted, 0 already", out.getvalue(), re.M)
    assert re.search(r"^conversations\.MessageAnalysis\.topics: 3 re-encrypted, 0 already", out.getvalue(), re.M)
    for model, column in ((Message, "content"), (MessageAnalysis, "topics")):
        for token in raw(model, column).values():
            Fernet(key_new).decrypt(token.encode())
            with pytest.raises(InvalidToken):
                Fernet(key_old).decrypt(token.encode())

    # The old key removed: content and topics still read.
    settings.FERNET_KEYS = [key_new]
    for m, text in zip(messages, TEXTS[:3], strict=True):
        assert Message.objects.get(pk=m.pk).content == text
        assert MessageAnalysis.objects.get(message_id=m.pk).topics == f"topics of {text}"


# --- rebuild_search_index --------------------------------------------------------------------


@pytest.mark.django_db
def test_rebuild_moves_the_index_to_the_new_key(settings, make_connector):
    settings.SEARCH_INDEX_KEY = OLD_INDEX_KEY
    messages = store(make_connector(), TEXTS, index_key=OLD_INDEX_KEY)
    zebra = {messages[2].pk, messages[4].pk}
    assert found("zebra", OLD_INDEX_KEY) == zebra

    # The key changes: queries hashed under the new key find nothing until the rebuild.
    settings.SEARCH_INDEX_KEY = NEW_INDEX_KEY
    assert found("zebra", NEW_INDEX_KEY) == set()

    output = rebuild("--batch-size", "3")
    assert "Search index rebuilt" in output
    assert found("zebra", NEW_INDEX_KEY) == zebra
    assert found("budgets meeting", NEW_INDEX_KEY) == {messages[0].pk}
    assert found("travelling", NEW_INDEX_KEY) == {messages[1].pk, messages[5].pk}
    assert found("absentword", NEW_INDEX_KEY) == set()
    # The old key's rows are gone, every message has rows under the new key only.
    assert found("zebra", OLD_INDEX_KEY) == set()
    assert set(SearchToken.objects.values_list("key_id", flat=True)) == {search.key_id(NEW_INDEX_KEY)}
    for m in messages:
        assert set(SearchToken.objects.filter(message=m).values_list("digest", flat=True)) == set(
            search.digests_for(m.content, NEW_INDEX_KEY)
        )
    state = IndexState.objects.get(key_fingerprint=search.key_id(NEW_INDEX_KEY))
    assert state.last_message_id == messages[-1].pk and state.completed_at is not None

    event = AuditEvent.objects.filter(action="conversations.index.rebuild").get()
    assert event.details["complete"] is True and event.details["messages"] == len(TEXTS)
    assert event.target_id == search.key_id(NEW_INDEX_KEY)
    assert "zebra" not in str(event.details).lower() and NEW_INDEX_KEY not in str(event.details)


@pytest.mark.django_db
def test_an_interrupted_rebuild_resumes_where_it_stopped(settings, make_connector):
    settings.SEARCH_INDEX_KEY = OLD_INDEX_KEY
    messages = store(make_connector(), TEXTS, index_key=OLD_INDEX_KEY)
    settings.SEARCH_INDEX_KEY = NEW_INDEX_KEY
    new_id, old_id = search.key_id(NEW_INDEX_KEY), search.key_id(OLD_INDEX_KEY)

    output = rebuild("--batch-size", "2", "--max-batches", "2")
    assert "Stopped after 2 batches" in output
    state = IndexState.objects.get(key_fingerprint=new_id)
    assert state.last_message_id == messages[3].pk and state.completed_at is None
    done, rest = messages[:4], messages[4:]
    assert set(SearchToken.objects.filter(message__in=done).values_list("key_id", flat=True)) == {new_id}
    assert set(SearchToken.objects.filter(message__in=rest).values_list("key_id", flat=True)) == {old_id}
    # Half-way, each key finds its part of the history (what SEARCH_INDEX_PREVIOUS_KEY covers).
    assert found("zebra", NEW_INDEX_KEY) == {messages[2].pk}
    assert found("zebra", OLD_INDEX_KEY) == {messages[4].pk}

    # The rerun continues after the last message done: it touches only the rest.
    output = rebuild("--batch-size", "2")
    assert "Search index rebuilt" in output and ": 3 messages" in output
    assert found("zebra", NEW_INDEX_KEY) == {messages[2].pk, messages[4].pk}
    assert set(SearchToken.objects.values_list("key_id", flat=True)) == {new_id}
    runs = list(AuditEvent.objects.filter(action="conversations.index.rebuild").order_by("id"))
    assert [(e.details["messages"], e.details["complete"]) for e in runs] == [(4, False), (3, True)]
    assert runs[1].details["from_message_id"] == messages[3].pk

    # Done stays done; --restart goes over everything again and changes nothing.
    rows = set(SearchToken.objects.values_list("message_id", "digest", "key_id"))
    assert ": 0 messages" in rebuild()
    assert ": 7 messages" in rebuild("--restart", "--batch-size", "4")
    assert set(SearchToken.objects.values_list("message_id", "digest", "key_id")) == rows


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", None])
def test_rebuild_refuses_without_an_index_key(settings, make_connector, key):
    settings.SEARCH_INDEX_KEY = OLD_INDEX_KEY
    store(make_connector(), TEXTS[:2], index_key=OLD_INDEX_KEY)
    settings.SEARCH_INDEX_KEY = key
    with pytest.raises(CommandError, match="SEARCH_INDEX_KEY is not set"):
        rebuild()
    assert set(SearchToken.objects.values_list("key_id", flat=True)) == {search.key_id(OLD_INDEX_KEY)}
    assert not IndexState.objects.exists()


@pytest.mark.django_db
def test_rebuild_stops_clearly_at_content_no_fernet_key_decrypts(settings, make_connector):
    key_lost, key_current = new_key(), new_key()
    settings.FERNET_KEYS = [key_current]
    settings.SEARCH_INDEX_KEY = OLD_INDEX_KEY
    connector = make_connector()
    first = store(connector, TEXTS[:2], index_key=OLD_INDEX_KEY)
    settings.FERNET_KEYS = [key_lost]
    lost = store(connector, TEXTS[2:3], index_key=OLD_INDEX_KEY)
    settings.FERNET_KEYS = [key_current]
    settings.SEARCH_INDEX_KEY = NEW_INDEX_KEY

    with pytest.raises(CommandError, match="FERNET_KEYS") as excinfo:
        rebuild("--batch-size", "2")
    assert "zebra" not in str(excinfo.value).lower()
    # The batch before the bad message is done and stays done; the bad batch changed nothing.
    state = IndexState.objects.get(key_fingerprint=search.key_id(NEW_INDEX_KEY))
    assert state.last_message_id == first[-1].pk
    assert set(SearchToken.objects.filter(message=lost[0]).values_list("key_id", flat=True)) == {
        search.key_id(OLD_INDEX_KEY)
    }


@pytest.mark.django_db
@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--max-batches", "0"]])
def test_rebuild_refuses_bad_arguments(settings, args):
    settings.SEARCH_INDEX_KEY = NEW_INDEX_KEY
    with pytest.raises(CommandError, match="at least 1"):
        rebuild(*args)
