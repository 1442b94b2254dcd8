"""The proxy: upstream calls, SSE relay, metadata, failover and the ledger."""
