"""Operating a running proxy: approvals of withheld calls, freezes, drills and Prometheus metrics."""
