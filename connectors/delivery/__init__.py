"""The delivery pipeline: outbound sends, attempts and retries, receipts, inbound, BRAIN replies, the sweeper."""
