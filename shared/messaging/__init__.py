"""The chassis' messaging: how a service's events and calls cross the broker —
the outbox and its relay (publisher, routing), the inbox and failure counts of
event handlers, subscriptions and the queue topology, RPC and its request
idempotency."""
