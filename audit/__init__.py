"""The audit app: an append-only, HMAC-chained log of who did what."""
