"""Monitoring: health checks, incidents and alerts, Prometheus metrics, the staff dashboard."""
