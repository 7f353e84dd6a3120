"""Failover under load: the suite on a three-member mongod replica set and a
three-node RabbitMQ cluster (quorum queues on every node), two replicas of every
service, orders flowing while nodes, members and processes are killed with
SIGKILL. Each test drains (nothing may be left) and reconciles against the
client's ledger: 0 lost, 0 duplicated."""
from __future__ import annotations

import random
import time

import eventlet

from tests.chaos.harness import Driver, OrderStream, drain, log, reconcile
from tools import devstack


def leader_other_than(cluster, queue: str, dead: str) -> str | None:
    leader = cluster.rabbit.queue_members().get(queue, {}).get("leader")
    return leader if leader and leader != dead else None


def settle(report, stream) -> None:
    assert report.accepted == stream.count and report.lost == 0 and report.duplicated == 0


def test_kill_9_quorum_leader_of_busiest_queue(shop, cluster, world, kpis_before):
    """kill -9 the node leading the Raft group of the busiest event queue: the
    other two elect a leader, the consumers and publishers connected to the dead
    node fail over to the next address of the URI, unacked messages return."""
    members = cluster.rabbit.queue_members()
    assert all(len(info["members"]) == 3 for name, info in members.items()
               if name.startswith("evt--")), members
    stream = OrderStream(shop, world, count=24, workers=3, pause=0.1, seed_value=11)
    with Driver(shop, world, stream.ledger):
        stream.start()
        stream.wait_placed(6)
        queue = cluster.busiest_queue()
        node = cluster.kill_queue_leader(queue)
        log(f"killed {node.nodename}, leader of {queue}, after {stream.placed} orders")
        new_leader = devstack.wait_until(lambda: leader_other_than(cluster, queue, node.nodename), 90,
                                         interval=1, what=f"a new leader of {queue}")
        log(f"{queue} now led by {new_leader}")
        stream.wait_placed(14)
        node.start()
        log(f"{node.nodename} back; {queue} led by {cluster.rabbit.queue_members()[queue]['leader']}")
        stream.wait()
        drain(shop, world, stream.ledger, timeout=180)
    settle(reconcile(shop, world, stream, kpis_before, "kill -9 quorum leader"), stream)


def test_kill_9_mongod_primary(shop, cluster, world, kpis_before):
    """kill -9 the replica set's primary mid-stream (no step-down): writes in
    flight fail, the driver retries, a secondary is elected; the old primary comes
    back as a secondary and rolls back whatever was not majority-committed (all
    writes use majority, so nothing the client was told)."""
    stream = OrderStream(shop, world, count=24, workers=3, pause=0.1, seed_value=12)
    with Driver(shop, world, stream.ledger):
        stream.start()
        stream.wait_placed(6)
        killed = cluster.kill_mongo_primary()
        started = time.monotonic()
        elected = cluster.mongo.wait_primary()
        log(f"killed primary :{killed.port} after {stream.placed} orders; :{elected.port} elected "
            f"in {time.monotonic() - started:.1f}s")
        assert elected.port != killed.port
        stream.wait_placed(14)
        killed.start()
        stream.wait()
        drain(shop, world, stream.ledger, timeout=180)
    settle(reconcile(shop, world, stream, kpis_before, "kill -9 mongod primary"), stream)


def test_restart_everything_at_once(shop, cluster, world, kpis_before):
    """Every service process, every broker node and every mongod killed together
    (a power cut), then all started again: the clients retry with the same keys."""
    stream = OrderStream(shop, world, count=20, workers=3, pause=0.1, seed_value=13)
    with Driver(shop, world, stream.ledger):
        stream.start()
        stream.wait_placed(6)
        shop.kill_all()
        cluster.restart_broker(down_seconds=0.5, kill=True)
        cluster.restart_mongod(down_seconds=0.5, kill=True)
        log(f"everything killed and infrastructure back after {stream.placed} orders")
        shop.start_all_again()
        stream.wait(timeout=400)
        drain(shop, world, stream.ledger, timeout=240)
    settle(reconcile(shop, world, stream, kpis_before, "restart everything at once"), stream)


def test_crash_loop_one_consumer(shop, world, kpis_before):
    """One replica of one consumer killed 10 times, each time soon after it was
    started again (sometimes before it is ready): CrashLoopBackOff, while its
    other replica and the rest of the suite go on."""
    rng = random.Random(14)
    victim = "catalog"
    stream = OrderStream(shop, world, count=20, workers=3, pause=0.15, seed_value=14)
    with Driver(shop, world, stream.ledger):
        stream.start()
        for _ in range(10):
            eventlet.sleep(rng.uniform(0.5, 2.5))
            shop.kill(victim)
            shop.suite.start(victim)
        eventlet.sleep(rng.uniform(0.5, 2.5))
        shop.kill(victim)
        log(f"{victim} killed 11 times, {stream.placed} orders placed; last restart")
        shop.restart(victim)
        stream.wait()
        drain(shop, world, stream.ledger, timeout=180)
    settle(reconcile(shop, world, stream, kpis_before, f"crash loop ({victim} x11)"), stream)
