"""Ids chosen by the owning service: a readable prefix and a sortable random part."""
from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """`ord_01kxyz...`: time-ordered (milliseconds) then 80 random bits."""
    millis = int(time.time() * 1000)
    stamp = ""
    for _ in range(9):
        stamp = _ALPHABET[millis & 31] + stamp
        millis >>= 5
    rand = int.from_bytes(os.urandom(10), "big")
    tail = ""
    for _ in range(16):
        tail += _ALPHABET[rand & 31]
        rand >>= 5
    return f"{prefix}_{stamp}{tail}"
