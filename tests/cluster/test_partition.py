"""Network partitions while orders flow: three hosts (network namespaces on one
bridge, `network.py`), each running one RabbitMQ node and one mongod member; the
services (two replicas each) and this test on a fourth host. One host is cut
off from all the others by taking its link down, then healed.

- RabbitMQ (`cluster_partition_handling = pause_minority`): the cut node finds
  itself in the minority and pauses; the two others keep every quorum queue's
  majority, elect new leaders and serve; on healing the paused node rejoins by
  itself. `net_ticktime = 10` so peers notice within about 15 s (default 60 s).
  A node can come back stranded instead (its broker runs, its Mnesia sees only
  itself and never re-merges), or hung in the boot pause_minority starts on the
  heal (Erlang's `global` hangs; the node is connected, never listens): the pods'
  liveness probe restarts it, and so does `liveness.py` here, with the
  manifest's probe (test_liveness.py).
- MongoDB: a cut primary cannot see a majority and steps down, the others elect
  a new one within the election timeout (2 s); on healing the old primary
  rejoins as a secondary and rolls back whatever was not majority-committed
  (every write is `w: majority`, so nothing a client was told).

Each test drains and reconciles against the client's ledger: 0 lost, 0 duplicated.
The soak (RUNSLOW=1) runs here too: only this cluster can be partitioned.
Skipped without root or `ip`."""
from __future__ import annotations

import os
import random
import time
from collections import Counter
from contextlib import suppress

import eventlet
import pymongo
import pytest

from tests.chaos.harness import (
    REPORTS,
    Driver,
    Infra,
    OrderStream,
    Report,
    Shop,
    drain,
    kpis,
    log,
    reconcile,
    seed,
)
from tests.cluster.liveness import Liveness, Probe
from tests.cluster.network import Network
from tests.cluster.test_failover import settle
from tools import devstack

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


@pytest.fixture(scope="module", autouse=True)
def liveness(cluster):
    """The kubelet's part: the broker pods' liveness probe, which restarts a node
    left stranded in a minority view after a heal (liveness.py)."""
    probe = Liveness(cluster.rabbit).start()
    yield probe
    probe.stop()
    log(f"liveness restarts: {probe.restarts or 'none'}")


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


def cluster_status(cluster) -> dict:
    """`rabbitmqctl cluster_status` from a reachable node: running_nodes, partitions, ..."""
    return cluster.rabbit.running_node().cluster_status()


def running_nodes(cluster) -> list[str]:
    return cluster_status(cluster)["running_nodes"]


def replica_states(shop) -> dict[str, str]:
    status = shop.mongo.admin.command("replSetGetStatus")
    return {m["name"]: m["stateStr"] if m.get("health") == 1 else "unreachable" for m in status["members"]}


def not_whole(shop, cluster) -> list[str]:
    """What keeps the cluster and the replica set from being whole; [] when they are."""
    wrong = cluster.rabbit.not_whole()
    states = replica_states(shop)
    if sorted(states.values()) != ["PRIMARY", "SECONDARY", "SECONDARY"]:
        wrong.append(f"replica set: {states}")
    return wrong


def heal_timeout(probe: Probe) -> float:
    """How long a healed cluster may take to be whole: pause_minority's own recovery
    takes seconds, but a node can come back stranded or hung in its boot, and then
    waits for the liveness probe's restart (period x threshold, then a boot); room
    for two of those, as a restarted node's boot can hang once more."""
    return 60 + 2 * (probe.period * probe.failure_threshold + 60)


def wait_whole(shop, cluster) -> None:
    """Wait for the cluster and the replica set to be whole; on a timeout, say what was not."""
    timeout = heal_timeout(Probe.from_manifest())
    seen: list[str] = []

    def check():
        try:
            seen[:] = not_whole(shop, cluster)
        except Exception as exc:
            seen[:] = [f"status unavailable: {type(exc).__name__}: {str(exc)[:200]}"]
        return not seen

    try:
        devstack.wait_until(check, timeout, interval=2, what="the cluster and the replica set whole again")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last seen: {'; '.join(seen)}") from None


def step_down(member: devstack.Mongod) -> None:
    """Ask the primary to step down (it may not run again for 30 s): another member is elected."""
    client = pymongo.MongoClient(f"mongodb://{member.address}/?directConnection=true",
                                 serverSelectionTimeoutMS=10000)
    try:
        with suppress(pymongo.errors.AutoReconnect):
            client.admin.command("replSetStepDown", 30)
    finally:
        client.close()


def primary_other_than(cluster, member: devstack.Mongod) -> devstack.Mongod | None:
    found = cluster.mongo.primary()
    return found if found is not None and found is not member else None


def victim_host(network, cluster, target: str) -> tuple[str, str | None, list[str]]:
    """The host to cut off: for "mongod primary" the primary's; for "quorum leader"
    the one leading the most event queues, after moving the primary away from it
    (a step-down) so that the two faults are apart. Returns it, one event queue it
    leads (None if it leads none) and what it holds."""
    led: dict[str, list[str]] = {name: [] for name in network.names}
    for queue, info in sorted(cluster.rabbit.queue_members().items()):
        if queue.startswith("evt--") and not queue.endswith(".dlq") and info["leader"]:
            led[network.name_of(info["leader"])].append(queue)
    member = cluster.mongo.wait_primary()
    primary = network.name_of(member.address)
    if target == "mongod primary":
        victim = primary
    else:
        victim = max(led, key=lambda name: len(led[name]))
        if victim == primary:
            step_down(member)
            elected = devstack.wait_until(quietly(lambda: primary_other_than(cluster, member)), 90,
                                          interval=1, what="a primary on another host after the step-down")
            primary = network.name_of(elected.address)
    roles = (["mongod primary"] if victim == primary else []) + [f"quorum leader of {q}" for q in led[victim]]
    return victim, (led[victim] or [None])[0], roles


@pytest.mark.parametrize("target", ["mongod primary", "quorum leader"])
def test_partition_one_host_then_heal(shop, cluster, network, world, kpis_before, target):
    """Cut off the host of the mongod primary (or of quorum leaders, not the
    primary's where possible) while orders flow: the majority side elects a primary and a leader and goes on
    accepting orders; heal; the cut node and member rejoin; nothing lost, nothing
    applied twice."""
    victim, queue, roles = victim_host(network, cluster, target)
    node = next(n for n in cluster.rabbit.nodes if n.host == network.host(victim))
    stream = OrderStream(shop, world, count=30, workers=3, pause=0.1,
                         seed_value=21 if target == "mongod primary" else 22)
    with Driver(shop, world, stream.ledger):
        stream.start()
        stream.wait_placed(4)
        network.partition(victim)
        at_cut = stream.placed
        log(f"partitioned {victim} ({', '.join(roles) or 'no leader, a secondary'}; node {node.nodename}) "
            f"after {at_cut} orders")

        primary = devstack.wait_until(quietly(cluster.mongo.primary), 90, interval=1,
                                      what="a primary on the majority side")
        assert network.name_of(primary.address) != victim
        devstack.wait_until(quietly(lambda: node.nodename not in running_nodes(cluster)), 120, interval=2,
                            what=f"the majority to see {node.nodename} gone")
        if queue is not None:
            leader = devstack.wait_until(
                quietly(lambda: cluster.rabbit.queue_members()[queue]["leader"] != node.nodename
                        and cluster.rabbit.queue_members()[queue]["leader"]), 120, interval=2,
                what=f"a leader of {queue} on the majority side")
            log(f"majority side: primary {primary.address}, {queue} now led by {leader}")
        # the majority side accepts orders while the host is still cut off
        stream.wait_placed(at_cut + 6, timeout=300)
        log(f"{stream.placed - at_cut} orders accepted while {victim} was cut off")

        network.heal(victim)
        wait_whole(shop, cluster)
        log(f"healed {victim}: members {replica_states(shop)}, {stream.placed} orders placed")
        stream.wait(timeout=400)
        drain(shop, world, stream.ledger, timeout=240)
    settle(reconcile(shop, world, stream, kpis_before, f"partition: host of the {target}"), stream)


# ---------------------------------------------------------------- the soak (RUNSLOW=1)

SOAK_FAULTS = ("broker node", "primary", "service", "partition")


def inject(fault: str, rng: random.Random, shop, cluster, network) -> str:
    """One fault of the matrix, brought back afterwards; returns what it did."""
    if fault == "broker node":
        # any node: leaders gather on the survivors of earlier faults, so most nodes lead
        # some queue (and choosing by `rabbitmqctl list_queues` can take minutes under load)
        node = rng.choice(cluster.rabbit.nodes)
        node.kill()
        eventlet.sleep(rng.uniform(1, 5))
        node.start()
        return f"killed {node.nodename}"
    if fault == "primary":
        member = cluster.kill_mongo_primary()
        cluster.mongo.wait_primary()
        eventlet.sleep(rng.uniform(1, 5))
        member.start()
        return f"killed primary {member.address}"
    if fault == "service":
        label = rng.choice(shop.labels)
        shop.kill(label)
        shop.restart(label)
        return f"killed {label}"
    victim = rng.choice(network.names[:-1])
    network.partition(victim)
    eventlet.sleep(rng.uniform(20, 40))
    network.heal(victim)
    wait_whole(shop, cluster)
    return f"partitioned {victim}"


@pytest.mark.slow
def test_soak_matrix(shop, cluster, network, liveness):
    """Soak: SOAK_ORDERS orders (default 10,000) in rounds of SOAK_ROUND (500),
    each on a world of its own, while the faults of the matrix run one after the
    other: a broker node or the mongod primary killed with SIGKILL, a random
    service replica killed, a host partitioned; each brought back. Every round
    drains and reconciles (its table is printed as it ends, so a soak stopped
    early still has figures for the rounds it finished), then one row for all."""
    total = int(os.environ.get("SOAK_ORDERS", "10000"))
    size = int(os.environ.get("SOAK_ROUND", "500"))
    rng = random.Random(15)
    faults: Counter = Counter()
    started = time.monotonic()
    reports = []
    for number, first in enumerate(range(0, total, size), start=1):
        shop.wait_all_ready()
        world = seed(shop)
        before = kpis(shop)
        stream = OrderStream(shop, world, count=min(size, total - first), workers=6, pause=0.02,
                             seed_value=15 + number)
        with Driver(shop, world, stream.ledger, interval=0.5):
            stream.start()
            while not stream.done():
                eventlet.sleep(rng.uniform(5, 15))
                fault = rng.choice(SOAK_FAULTS)
                done = inject(fault, rng, shop, cluster, network)
                faults[fault] += 1
                log(f"soak round {number}: {done}; {first + stream.placed}/{total} placed after "
                    f"{time.monotonic() - started:.0f}s, faults {dict(faults)}")
            stream.wait(timeout=3600)
            drain(shop, world, stream.ledger, timeout=1800)
        report = reconcile(shop, world, stream, before, f"soak round {number}")
        settle(report, stream)
        reports.append(report)
    log(f"soak: {total} orders, faults {dict(faults)}, {time.monotonic() - started:.0f}s, "
        f"liveness restarts {liveness.restarts or 'none'}")
    REPORTS.append(Report.total(f"soak {total} orders ({len(reports)} rounds)", reports))
