"""Monitoring: periodic health checks, downtime incidents and alerts, Prometheus metrics, the staff dashboard."""
