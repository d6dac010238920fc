"""The small HTTP server: customer pages, /healthz and /metrics."""
