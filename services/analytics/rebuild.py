"""`python -m services.analytics.rebuild`: recompute every aggregate from the raw
store (MONGO_URI, ANALYTICS_DB, SHOP_TIMEZONE, ANALYTICS_COUNTER_SHARDS: give it the
services' value so the shard documents come out identical). Stop the consumers first."""
from __future__ import annotations

import json
import sys
from zoneinfo import ZoneInfo

from services.analytics import config, store
from shared.config import Settings
from shared.storage.store import connect


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env("analytics")
    client = connect(settings.mongo_uri)
    try:
        db = client[settings.database]
        shards = config.counter_shards(settings)
        result = store.rebuild(db, ZoneInfo(settings.timezone), shards=shards)
    finally:
        client.close()
    print(json.dumps({"database": settings.database, "counter_shards": shards, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
