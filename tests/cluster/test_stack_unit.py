"""Pure parts of the local stack: what `make up` does without a broker, and
failover URIs on a virtual host."""
from tools import devstack, stack


def test_without_a_broker_root_with_apt_installs_else_prints_the_command():
    assert stack.missing_broker_action(is_root=True, has_apt=True) == "install"
    assert stack.missing_broker_action(is_root=False, has_apt=True) == "tell"
    assert stack.missing_broker_action(is_root=True, has_apt=False) == "tell"
    assert stack.INSTALL_COMMAND == "sudo apt-get install -y rabbitmq-server"


def test_a_failover_uri_moves_every_alternative_to_the_vhost():
    uri = "amqp://guest:guest@127.0.0.1:5691/;amqp://guest:guest@127.0.0.1:5692/"
    assert devstack.with_vhost(uri, "v1") == ("amqp://guest:guest@127.0.0.1:5691/v1;"
                                              "amqp://guest:guest@127.0.0.1:5692/v1")
    assert devstack.with_vhost("amqp://g:g@h:1/", "x") == "amqp://g:g@h:1/x"


def test_a_cluster_uri_names_every_node_and_member(tmp_path):
    rabbit = devstack.RabbitCluster(tmp_path / "r", [5691, 5692, 5693])
    assert rabbit.uri.split(";") == [f"amqp://guest:guest@127.0.0.1:{p}/" for p in (5691, 5692, 5693)]
    assert len({node.nodename for node in rabbit.nodes}) == 3
    mongo = devstack.MongoReplicaSet(tmp_path / "m", [27031, 27032, 27033], replset="rs-shop")
    assert mongo.uri == "mongodb://127.0.0.1:27031,127.0.0.1:27032,127.0.0.1:27033/?replicaSet=rs-shop"
