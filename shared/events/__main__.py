"""`python -m shared.events markdown|asyncapi`: print docs/events.md or docs/asyncapi.json."""
from __future__ import annotations

import json
import sys

from shared.events import asyncapi, events_markdown

USAGE = "usage: python -m shared.events markdown|asyncapi"


def main(argv: list[str]) -> int:
    if argv == ["markdown"]:
        sys.stdout.write(events_markdown())
    elif argv == ["asyncapi"]:
        sys.stdout.write(json.dumps(asyncapi(), indent=2, ensure_ascii=False) + "\n")
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
