"""The connector registry: kinds, records, lifecycle, leases, grants, platform state, destinations, the runner."""
