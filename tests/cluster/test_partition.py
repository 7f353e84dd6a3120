"""Network partitions while orders flow: three hosts (network namespaces on one
bridge, `network.py`), each running one RabbitMQ node and one mongod member; the
services (two replicas each) and this test on a fourth host. One host is cut
off from all the others by taking its link down, then healed.

- RabbitMQ (`cluster_partition_handling = pause_minority`): the cut node finds
  itself in the minority and pauses; the two others keep every quorum queue's
  majority, elect new leaders and serve; on healing the paused node rejoins by
  itself. `net_ticktime = 10` so peers notice within about 15 s (default 60 s).
- MongoDB: a cut primary cannot see a majority and steps down, the others elect
  a new one within the election timeout (2 s); on healing the old primary
  rejoins as a secondary and rolls back whatever was not majority-committed
  (every write is `w: majority`, so nothing a client was told).

Each test drains and reconciles against the client's ledger: 0 lost, 0 duplicated.
Skipped without root or `ip`."""
from __future__ import annotations

import json
from contextlib import suppress

import pytest

from shared import devstack
from tests.chaos.harness import Driver, Infra, OrderStream, Shop, drain, log, reconcile
from tests.cluster.network import Network
from tests.cluster.test_failover import settle

NET_TICKTIME = 10
# Clients notice a connection to a cut node by AMQP heartbeats only (the packets
# are dropped, nothing is refused): two missed beats of 10 s, not of 30 s.
PARTITION_ENV = {"AMQP_HEARTBEAT": "10"}


@pytest.fixture(scope="module")
def network():
    reason = Network.unavailable()
    if reason is None and not devstack.PrivateRabbit.available():
        reason = "rabbitmq-server is not installed (apt-get install rabbitmq-server): no cluster"
    if reason:
        pytest.skip(f"partitions: {reason}")
    net = Network.create(hosts=3)
    try:
        with net.entered("clients"):
            yield net
    finally:
        net.destroy()


@pytest.fixture(scope="module")
def cluster(network, tmp_path_factory):
    infra = Infra.start(tmp_path_factory.mktemp("partition-infra"), cluster=True,
                        hosts=network.hosts, net_ticktime=NET_TICKTIME)
    log(f"partition cluster: mongo {infra.mongo_uri}, broker {infra.amqp_uri}")
    yield infra
    infra.stop()


@pytest.fixture(scope="module")
def shop(cluster, tmp_path_factory):
    shop = Shop.start(cluster, tmp_path_factory.mktemp("partition-logs"), env=PARTITION_ENV, replicas=2)
    yield shop
    shop.stop()


def quietly(check):
    """A wait_until check that reads "not yet" from a broker or mongod still settling."""
    def run():
        with suppress(Exception):
            return check()
        return None
    return run


def running_nodes(cluster) -> list[str]:
    return json.loads(cluster.rabbit.ctl("cluster_status", "--formatter", "json"))["running_nodes"]


def replica_states(shop) -> dict[str, str]:
    status = shop.mongo.admin.command("replSetGetStatus")
    return {m["name"]: m["stateStr"] if m.get("health") == 1 else "unreachable" for m in status["members"]}


def whole(shop, cluster) -> bool:
    """Every broker node running in one cluster with no partition recorded, and a
    primary with two healthy secondaries."""
    status = json.loads(cluster.rabbit.ctl("cluster_status", "--formatter", "json"))
    states = sorted(replica_states(shop).values())
    return (len(status["running_nodes"]) == len(cluster.rabbit.nodes) and not status.get("partitions")
            and states == ["PRIMARY", "SECONDARY", "SECONDARY"])


def victim_host(network, cluster, target: str) -> tuple[str, list[str]]:
    """The host holding `target` (the mongod primary, or the leader of the queue
    that will be busiest: analytics', which consumes every event), and all it holds."""
    queue = "evt--analytics"
    held: dict[str, list[str]] = {name: [] for name in network.names}
    held[network.name_of(cluster.mongo.wait_primary().address)].append("mongod primary")
    held[network.name_of(cluster.rabbit.queue_members()[queue]["leader"])].append(f"quorum leader of {queue}")
    victim = next(name for name, roles in held.items() if any(r.startswith(target) for r in roles))
    return victim, held[victim]


@pytest.mark.parametrize("target", ["mongod primary", "quorum leader"])
def test_partition_one_host_then_heal(shop, cluster, network, world, kpis_before, target):
    """Cut off the host of the mongod primary (or of analytics' quorum leader)
    while orders flow: the majority side elects a primary and a leader and goes on
    accepting orders; heal; the cut node and member rejoin; nothing lost, nothing
    applied twice."""
    victim, roles = victim_host(network, cluster, target)
    node = next(n for n in cluster.rabbit.nodes if n.host == network.host(victim))
    stream = OrderStream(shop, world, count=30, workers=3, pause=0.1,
                         seed_value=21 if target == "mongod primary" else 22)
    with Driver(shop, world, stream.ledger):
        stream.start()
        stream.wait_placed(4)
        network.partition(victim)
        log(f"partitioned {victim} ({', '.join(roles)}; node {node.nodename}) after {stream.placed} orders")

        primary = devstack.wait_until(quietly(cluster.mongo.primary), 90, interval=1,
                                      what="a primary on the majority side")
        assert network.name_of(primary.address) != victim
        devstack.wait_until(quietly(lambda: node.nodename not in running_nodes(cluster)), 120, interval=2,
                            what=f"the majority to see {node.nodename} gone")
        queue = "evt--analytics"
        leader = devstack.wait_until(
            quietly(lambda: cluster.rabbit.queue_members()[queue]["leader"] != node.nodename
                    and cluster.rabbit.queue_members()[queue]["leader"]), 120, interval=2,
            what=f"a leader of {queue} on the majority side")
        during = stream.placed
        log(f"majority side: primary {primary.address}, {queue} led by {leader}; {during} orders placed")
        # the majority side accepts orders while the host is still cut off
        stream.wait_placed(during + 6, timeout=300)
        log(f"{stream.placed - during} more orders accepted while {victim} was cut off")

        network.heal(victim)
        devstack.wait_until(quietly(lambda: whole(shop, cluster)), 300, interval=2,
                            what="the cluster and the replica set whole again")
        log(f"healed {victim}: members {replica_states(shop)}, {stream.placed} orders placed")
        stream.wait(timeout=400)
        drain(shop, world, stream.ledger, timeout=240)
    settle(reconcile(shop, world, stream, kpis_before, f"partition: host of the {target}"), stream)
