"""Counter shards: the hash is stable and in range, leases never hand one shard to
two in-flight events of a process, and queries sum shard documents."""
import zlib
from collections import Counter
from dataclasses import dataclass, field

import pytest

from services.analytics import config, domain, store, usecases, views


def test_shard_of_is_crc32_of_the_event_id_modulo_the_shards():
    assert domain.shard_of("evt_abc", 16) == zlib.crc32(b"evt_abc") % 16
    assert domain.shard_of("evt_abc", 1) == 0
    spread = Counter(domain.shard_of(f"evt_{i:06d}", 16) for i in range(1600))
    assert set(spread) == set(range(16)) and max(spread.values()) < 200
    with pytest.raises(ValueError):
        domain.shard_of("evt_abc", 0)


def test_leases_give_concurrent_events_distinct_shards_then_fall_back_to_the_hash():
    leases = usecases.ShardLeases(4)
    held = [leases.lease(f"e{i}") for i in range(4)]
    shards = [h.__enter__() for h in held]
    assert sorted(shards) == [0, 1, 2, 3]
    with leases.lease("overflow") as extra:  # all leased: the event's hash shard
        assert extra == domain.shard_of("overflow", 4)
    assert len(leases.free) == 0
    held[1].__exit__(None, None, None)
    with leases.lease("next") as again:
        assert again == shards[1]
    assert list(leases.free) == [shards[1]]


def test_a_lease_is_returned_when_the_transaction_fails():
    leases = usecases.ShardLeases(2)
    with pytest.raises(RuntimeError), leases.lease("e1"):
        raise RuntimeError("write conflict")
    assert sorted(leases.free) == [0, 1]


@dataclass
class FakeSettings:
    extra: dict = field(default_factory=dict)

    def option(self, key, default, cast=None):
        return (cast or type(default))(self.extra.get(key, default))


def test_counter_shards_setting_defaults_to_16_and_must_be_positive():
    assert config.counter_shards(FakeSettings()) == 16 == store.DEFAULT_SHARDS
    assert config.counter_shards(FakeSettings({"counter_shards": "4"})) == 4
    with pytest.raises(ValueError):
        config.counter_shards(FakeSettings({"counter_shards": 0}))


def test_add_counters_sums_shards_and_skips_the_key_fields():
    target = Counter()
    for shard in range(3):
        views.add_counters(target, {"_id": f"hour|b|total|all|{shard}", "grain": "hour", "bucket": "b",
                                      "dim": "total", "key": "all", "shard": shard, "orders": 1,
                                      "events": {"order_paid": 2}})
    assert target == {"orders": 3, "events.order_paid": 6}
