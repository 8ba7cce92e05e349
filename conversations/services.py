"""Conversation memory services (being built: storage, context, search, privacy)."""


def context_for_inbound(inbound):
    """BRAIN_CONTEXT_PROVIDER: the conversation before `inbound`, oldest first."""
    from connectors.services import conversation_context

    return conversation_context(inbound)
