"""The precompiled payload check says yes only where marshmallow's load does: every
event's example, and thousands of mutations of them (a field dropped, nulled, or
replaced by a value of another kind or out of its bounds), are decided the same way
by `Precompiled.check` and by `schema.load`."""
from __future__ import annotations

import copy
import random

import pytest
from marshmallow import ValidationError

from shared.events.base import TOLERATED_MISSING, load_all
from shared.validation import Precompiled

ODD_VALUES = [None, "", "x", "CNY", "2026-11-26T11:58:02Z", "2026-11-26", 0, -1, 1, 3.5,
              float("nan"), True, False, [], [{}], {}, {"product_id": "p", "quantity": 0},
              "a" * 300, 10**12]


def mutations(example: dict, rnd: random.Random):
    keys = list(example)
    for key in keys:
        dropped = dict(example)
        del dropped[key]
        yield dropped
    for _ in range(60):
        changed = copy.deepcopy(example)
        key = rnd.choice(keys)
        value = changed[key]
        if isinstance(value, list) and value and isinstance(value[0], dict) and rnd.random() < 0.5:
            inner = rnd.choice(list(value[0]))
            value[0][inner] = rnd.choice(ODD_VALUES)
        else:
            changed[key] = rnd.choice(ODD_VALUES)
        yield changed
    yield "not a mapping"


def loads(schema, data, partial) -> bool:
    try:
        schema.load(data, partial=partial)
        return True
    except ValidationError:
        return False


def checks(check: Precompiled, data, partial) -> bool:
    try:
        check.check(data, partial)
        return True
    except ValidationError:
        return False


SPECS = sorted(load_all().items())


@pytest.mark.parametrize("key,spec", SPECS, ids=[f"{s}.{t}" for (s, t), _ in SPECS])
def test_the_check_decides_as_marshmallow_does(key, spec):
    schema = spec.schema()
    check = Precompiled(schema)
    partial = tuple(n for n in TOLERATED_MISSING if n in schema.fields)
    rnd = random.Random(str(key))
    assert checks(check, spec.example, partial)
    fast_decided = 0
    for data in mutations(spec.example, rnd):
        for p in ((), partial):
            assert checks(check, data, p) == loads(schema, data, p), data
            if check.fast is not None and check.fast(data, p):
                fast_decided += 1
                assert loads(schema, data, p), data  # a yes of the fast path is marshmallow's yes
    assert check.fast is None or fast_decided > 0


def test_every_payload_schema_but_one_with_a_hook_compiles():
    uncompiled = [key for key, spec in load_all().items() if Precompiled(spec.schema()).fast is None]
    assert uncompiled == [("marketing", "experiment_created")]
