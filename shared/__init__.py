"""The Shop chassis: what every service is built from. At the top the small
parts every layer uses (config, errors, ids, clock, validation, green, retry),
the ShopService base and the process runner; in sub-packages messaging (outbox,
inbox, subscriptions, topology, RPC), storage (store, read models), security
(guard, credentials), web (@http), observability (logs, metrics, context,
entrypoint instrumentation) and events (every event's schema). Services import
from here and their own package only, never from each other nor from tools/."""
