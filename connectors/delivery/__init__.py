"""Messages in and out: send, attempts, receipts, inbound, BRAIN replies and backends, the sweeper."""
