"""The connector registry: kinds, records, lifecycle, leases, grants and destinations."""
