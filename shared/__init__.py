"""The Shop chassis: what every service is built from (config, store with
outbox and inbox, subscriptions, RPC with timeouts, typed errors, logs,
metrics, health). Services import from here and never from each other."""
