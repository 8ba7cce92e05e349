"""Sentiment (VADER, a lexicon shipped with the package) and topics (YAKE keywords) of messages.

Both run offline: nothing is downloaded at run time. Topics are words of the message, so they are
stored encrypted like the message itself.
"""
import json
from datetime import timedelta
from functools import lru_cache

from django.db import transaction
from django.db.models import Avg, Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from conversations.models import Message, MessageAnalysis, Role

TOPIC_COUNT = 5


@lru_cache(maxsize=1)
def _sentiment_analyzer():
    """One analyzer per process: loading the lexicon is the slow part."""
    # Imported on first use: only the analysis worker needs the lexicon.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text):
    """VADER's compound score, from -1 (negative) to 1 (positive)."""
    return float(_sentiment_analyzer().polarity_scores(text or "")["compound"])


def topics(text, count=TOPIC_COUNT):
    """Up to `count` keywords (lowercased, most relevant first)."""
    if not (text or "").strip():
        return []
    import yake  # on first use: only the analysis worker needs it, and it is slow to import

    extractor = yake.KeywordExtractor(lan="en", n=2, top=count)
    seen, found = set(), []
    for keyword, _score in extractor.extract_keywords(text):
        keyword = keyword.lower()
        if keyword not in seen:
            seen.add(keyword)
            found.append(keyword)
    return found[:count]


def analysis_for(message):
    """An unsaved MessageAnalysis of one stored message (the batch that stores it saves it)."""
    return MessageAnalysis(message=message, sentiment=sentiment(message.content),
                           topics=json.dumps(topics(message.content)))


def analyse_message(message_id):
    """Compute and store the analysis of one message; returns it, or None if the message is gone
    (erased or purged before the task ran)."""
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return None
    score, keywords = sentiment(message.content), topics(message.content)
    with transaction.atomic():
        if not Message.objects.filter(pk=message_id).exists():
            return None  # erased meanwhile: do not write an analysis for it
        analysis, _ = MessageAnalysis.objects.update_or_create(
            message_id=message_id, defaults={"sentiment": score, "topics": json.dumps(keywords)}
        )
    return analysis


def topics_of(analysis):
    try:
        return json.loads(analysis.topics) if analysis and analysis.topics else []
    except ValueError:
        return []


def sentiment_trend(person, days=30):
    """Per-day average sentiment of the person's own (role user) messages over the last `days`
    days, oldest first: [{"date": "YYYY-MM-DD", "average": float, "messages": int}]."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        MessageAnalysis.objects.filter(
            message__conversation__person=person, message__role=Role.USER, message__created_at__gte=since
        )
        .annotate(day=TruncDate("message__created_at"))
        .values("day")
        .annotate(average=Avg("sentiment"), messages=Count("id"))
        .order_by("day")
    )
    return [{"date": r["day"].isoformat(), "average": round(r["average"], 4), "messages": r["messages"]} for r in rows]
