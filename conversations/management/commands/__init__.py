"""Commands: purge_conversations, rebuild_search_index."""
