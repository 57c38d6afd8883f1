"""The admin listener: health, readiness, Prometheus metrics and the JSON operations API, on a socket of
its own (never the proxy port), behind bearer tokens."""
