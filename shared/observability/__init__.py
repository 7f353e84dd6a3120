"""The chassis' observability: JSON logs, Prometheus metrics, the correlation
context that follows a request across services, and the instrumentation that
wraps every entrypoint with RED metrics and a log line."""
