"""Routes of the conversations app: search and the privacy controls.

Under /api/v1/conversations/, included at the site root by ``brain_connectors/urls.py``; names are global
(no namespace)."""
from django.urls import path

from conversations.api import ConversationSearchView
from conversations.api_privacy import PersonEraseView, PersonExportView, PersonSentimentView

urlpatterns = [
    path(
        "api/v1/conversations/people/<str:username>/export/",
        PersonExportView.as_view(),
        name="conversation-person-export",
    ),
    path(
        "api/v1/conversations/people/<str:username>/sentiment/",
        PersonSentimentView.as_view(),
        name="conversation-person-sentiment",
    ),
    path("api/v1/conversations/people/<str:username>/", PersonEraseView.as_view(), name="conversation-person-erase"),
    path("api/v1/conversations/search/", ConversationSearchView.as_view(), name="conversation-search"),
]
