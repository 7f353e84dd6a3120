"""The analytics service: the event stream becomes the KPIs (RPC, HTTP, Prometheus, dashboard)."""
