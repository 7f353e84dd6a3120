"""`python -m services.analytics.rebuild`: recompute every aggregate from the raw
store (MONGO_URI, ANALYTICS_DB, SHOP_TIMEZONE). Stop the consumers first."""
from __future__ import annotations

import json
import sys
from zoneinfo import ZoneInfo

from services.analytics import store
from shared.config import Settings
from shared.store import connect


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env("analytics")
    client = connect(settings.mongo_uri)
    try:
        db = client[settings.database]
        result = store.rebuild(db, ZoneInfo(settings.timezone))
    finally:
        client.close()
    print(json.dumps({"database": settings.database, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
