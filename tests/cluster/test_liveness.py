"""The broker's liveness probe (deploy/k8s/base/engines/rabbitmq.yaml) against a
real three-node cluster: it passes on a whole cluster and on the majority side,
fails on a node stranded in a minority view or left unbooted while connected to
its peers, passes on a node that waits in a minority, and the restart it causes
makes the cluster whole again.

Both failing states are ones the partition tests met after a heal
(tests/chaos/README.md). Stranded: the node's broker runs, its Mnesia sees only
itself and lists its peers as partitioned, the peers go on as two. Here it is
made on purpose: node 0 runs with `cluster_partition_handling = ignore` (it
never pauses) and drops its distribution links (`erlang:disconnect_node/1`);
the links come back at once, Mnesia reports the partition and nothing re-merges
it. Unbooted: pause_minority restarted the broker on the heal and its boot hung
in Erlang's `global`, the node connected to both peers; here `stop_app` leaves a
node in the same place (VM up and connected, broker not booted)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cluster.liveness import Liveness, Probe
from tools import devstack


@pytest.fixture(scope="module")
def rabbit():
    if not devstack.PrivateRabbit.available():
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server): no cluster")
    base = Path(tempfile.mkdtemp(prefix="shop-liveness-rabbit-"))  # the nodes run as `rabbitmq`
    os.chmod(base, 0o755)
    cluster = devstack.RabbitCluster(base, prefix="live")
    # node 0 never pauses: a dropped link leaves it stranded instead of recovering
    cluster.nodes[0].config = ("cluster_partition_handling = ignore",)
    try:
        cluster.start()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()
        shutil.rmtree(base, ignore_errors=True)


def whole(cluster: devstack.RabbitCluster) -> bool:
    return not cluster.not_whole()


def restarts_by_probe(rabbit: devstack.RabbitCluster, probe: Probe) -> list[str]:
    """Run the manifest's probe, checked every second instead of every 30 s, until it
    has restarted a node and the cluster is whole again; the nodes it restarted."""
    liveness = Liveness(rabbit, probe=dataclasses.replace(probe, period=1)).start()
    try:
        devstack.wait_until(lambda: liveness.restarts, 300, interval=1, what="a restart by the probe")
        devstack.wait_until(lambda: whole(rabbit), 120, interval=2, what="the cluster whole again")
    finally:
        liveness.stop()
    return liveness.restarts


def strand(node: devstack.PrivateRabbit) -> None:
    node.ctl("eval", "[erlang:disconnect_node(N) || N <- nodes()].")
    devstack.wait_until(lambda: node.cluster_status().get("partitions"), 60, interval=1,
                        what=f"{node.nodename} to see its peers as partitioned")


def test_the_probe_comes_from_the_manifest_and_waits_longer_than_a_heal():
    probe = Probe.from_manifest()
    assert "rabbit_mnesia:cluster_nodes(running)" in probe.expression
    # pause_minority's own recovery takes seconds after a heal: the probe gives it minutes
    assert probe.period * probe.failure_threshold >= 120
    assert probe.timeout <= probe.period


def test_the_probe_passes_on_a_whole_cluster(rabbit):
    probe = Probe.from_manifest()
    for node in rabbit.nodes:
        passed, said = probe.passes(node)
        assert passed, f"{node.nodename}: {said}"
        assert said == "{running,3,members,3}"


def test_a_stranded_node_fails_the_probe_and_its_restart_makes_the_cluster_whole(rabbit):
    stranded, *majority = rabbit.nodes
    strand(stranded)
    assert not whole(rabbit)
    assert sorted(stranded.cluster_status()["running_nodes"]) == [stranded.nodename]

    probe = Probe.from_manifest()
    passed, said = probe.passes(stranded)
    assert not passed and "stranded_in_a_minority_view" in said
    for node in majority:  # two of three: they go on serving, the probe leaves them be
        passed, said = probe.passes(node)
        assert passed and said == "{running,2,members,3}", f"{node.nodename}: {said}"

    assert restarts_by_probe(rabbit, probe) == [stranded.nodename]
    for node in rabbit.nodes:
        assert probe.passes(node) == (True, "{running,3,members,3}")


def test_a_node_left_unbooted_among_its_peers_fails_the_probe_and_its_restart_makes_the_cluster_whole(rabbit):
    unbooted = rabbit.nodes[1]
    unbooted.ctl("stop_app")
    probe = Probe.from_manifest()
    passed, said = probe.passes(unbooted)
    assert not passed and "not_booted_with_a_majority_connected" in said
    for node in (rabbit.nodes[0], rabbit.nodes[2]):
        assert probe.passes(node) == (True, "{running,2,members,3}"), node.nodename

    assert restarts_by_probe(rabbit, probe) == [unbooted.nodename]
    for node in rabbit.nodes:
        assert probe.passes(node) == (True, "{running,3,members,3}")


def test_a_node_not_booted_in_a_minority_passes_the_probe(rabbit):
    """A node paused in a real minority, or booting while it waits for its peers:
    restarting it would change nothing, so the probe leaves it be. (Last in the
    module: it kills two of the three nodes.)"""
    waiting, peers = rabbit.nodes[1], [rabbit.nodes[0], rabbit.nodes[2]]
    waiting.ctl("stop_app")
    for node in peers:
        node.kill()
    passed, said = Probe.from_manifest().passes(waiting)
    assert passed and said == "{not_booted,connected,1,members,3}", said
