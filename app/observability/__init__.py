"""What operators watch: Prometheus metrics, input drift, logs, request IDs and tracing."""
