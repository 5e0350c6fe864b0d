"""The metrics component: Prometheus collectors and the /metrics, /healthz HTTP server."""
