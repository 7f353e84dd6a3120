"""Structural checks of the rendered manifests against the chassis they run."""
from __future__ import annotations

import re

import pytest
from nameko.rpc import RPC_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TEMPLATE

from shared.messaging import topology
from tests.deploy.conftest import K8S, OVERLAYS, ROOT, SERVICES, by_name, of_kind

WORKLOADS = ("Deployment",)


def pod_specs(docs):
    for d in of_kind(docs, "Deployment"):
        yield d, d["spec"]["template"]["spec"]


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_probes_resources_and_security(rendered, overlay):
    deployments = by_name(rendered[overlay], "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == name
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        # Longer than the longest handler: an RPC timeout plus retries.
        assert spec["terminationGracePeriodSeconds"] >= 30
        writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"], c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["seccompProfile"]["type"] == "RuntimeDefault"
            for key in ("cpu", "memory"):
                assert c["resources"]["requests"][key] and c["resources"]["limits"][key], c["name"]
            assert {m["name"] for m in c.get("volumeMounts", [])} <= writable
        main = next(c for c in spec["containers"] if c["name"] == name)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["httpGet"]["port"] == "http", probe
        assert main["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert main["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert main["startupProbe"]["httpGet"]["path"] == "/health/live"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_runs_the_command_that_starts_its_service(rendered, overlay):
    for d, spec in pod_specs(rendered[overlay]):
        name = d["metadata"]["name"]
        main = next(c for c in spec["containers"] if c["name"] == name)
        assert main["command"] + main.get("args", []) == ["python", "-m", "shared.run", name]
        init = spec["initContainers"][0]
        assert init["command"] == ["python", "-m", "tools.admin", "declare", name]
        # Same image: the service is chosen by command only.
        assert init["image"] == main["image"] and ":" in main["image"]
        assert (ROOT / "shared" / "run.py").exists() and (ROOT / "tools" / "admin.py").exists()
        if (ROOT / "services" / name / "service.py").exists():
            from shared.run import service_class
            assert service_class(name).name == name


def engine_pod_labels(docs) -> list[dict]:
    """The labels the operators put on the pods they create: `app: <name>-svc`
    (MongoDB Community) and `app.kubernetes.io/name: <name>` (RabbitMQ)."""
    return [{"app": f"{m['metadata']['name']}-svc"} for m in of_kind(docs, "MongoDBCommunity")] + \
        [{"app.kubernetes.io/name": r["metadata"]["name"]} for r in of_kind(docs, "RabbitmqCluster")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_a_deployment(rendered, overlay):
    docs = rendered[overlay]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")]
    pod_labels += engine_pod_labels(docs)
    for d in of_kind(docs, "Deployment"):
        assert matches(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
    for kind, path in [("Service", ("spec", "selector")),
                       ("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
                       ("NetworkPolicy", ("spec", "podSelector", "matchLabels")),
                       ("ServiceMonitor", ("spec", "selector", "matchLabels"))]:
        for obj in of_kind(docs, kind):
            selector = obj
            for key in path:
                selector = selector[key]
            assert any(matches(selector, labels) for labels in pod_labels), (kind, obj["metadata"]["name"])
    services = by_name(docs, "Service")
    for monitor in of_kind(docs, "ServiceMonitor"):
        service = services[monitor["metadata"]["name"]]
        assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        for obj in of_kind(docs, kind):
            target = obj["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment" and target["name"] in by_name(docs, "Deployment")
    assert not (of_kind(docs, "ScaledObject") and of_kind(docs, "HorizontalPodAutoscaler")), \
        "KEDA makes its own HPA: never both on one Deployment"


def external_secrets() -> set[str]:
    """The Secrets the README tells the platform engineer to create."""
    text = (K8S / "README.md").read_text()
    block = text.split("<!-- external-secrets -->")[1].split("<!-- /external-secrets -->")[0]
    return set(re.findall(r"`([a-z0-9-]+)`", block))


def produced_secrets(docs) -> set[str]:
    """Secrets an operator in the cluster creates from a rendered object."""
    out = set()
    for u in of_kind(docs, "User"):
        out.add(f"{u['metadata']['name']}-user-credentials")
    for m in of_kind(docs, "MongoDBCommunity"):
        for user in m["spec"]["users"]:
            # The operator's naming: the given name plus "-scram-credentials".
            out.add(f"{user['scramCredentialsSecretName']}-scram-credentials")
            out.add(user.get("connectionStringSecretName")
                    or f"{m['metadata']['name']}-{user['db']}-{user['name']}")
    for r in of_kind(docs, "RabbitmqCluster"):
        out.add(f"{r['metadata']['name']}-default-user")
    for ing in of_kind(docs, "Ingress"):
        if "cert-manager.io/cluster-issuer" in ing["metadata"].get("annotations", {}):
            out |= {t["secretName"] for t in ing["spec"].get("tls", [])}
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_configmap_and_secret_exists(rendered, overlay):
    docs = rendered[overlay]
    configmaps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    assert not secrets, "Secrets are referenced, never committed"
    available = produced_secrets(docs) | external_secrets()
    for _, spec in pod_specs(docs):
        for c in spec["containers"] + spec.get("initContainers", []):
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm = configmaps[ref["configMapKeyRef"]["name"]]
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] in available, ref
    for m in of_kind(docs, "MongoDBCommunity"):
        for user in m["spec"]["users"]:
            assert user["passwordSecretRef"]["name"] in external_secrets()
    for ta in of_kind(docs, "TriggerAuthentication"):
        for ref in ta["spec"]["secretTargetRef"]:
            assert ref["name"] in available
    for ing in of_kind(docs, "Ingress"):
        for tls in ing["spec"].get("tls", []):
            assert tls["secretName"] in available


def test_external_secret_list_is_exactly_what_is_needed(rendered):
    docs = rendered["prod"]
    needed = {u["passwordSecretRef"]["name"] for m in of_kind(docs, "MongoDBCommunity")
              for u in m["spec"]["users"]}
    # ...and every Secret a pod reads that no operator produces (the HTTP and tracking keys).
    needed |= {env["valueFrom"]["secretKeyRef"]["name"] for _, spec in pod_specs(docs)
               for c in spec["containers"] + spec.get("initContainers", []) for env in c.get("env", [])
               if "secretKeyRef" in env.get("valueFrom", {})} - produced_secrets(docs)
    assert external_secrets() == needed


def declared_queues(service: str) -> set[str]:
    """The queues `service` consumes, from the chassis and nameko themselves."""
    queues = set()
    if (ROOT / "services" / service / "service.py").exists():
        from nameko.rpc import Rpc

        from shared.messaging.subscriptions import EventHandlerEntrypoint
        from shared.run import service_class
        cls = service_class(service)
        entrypoints = [e for attr in vars(cls).values() for e in getattr(attr, "nameko_entrypoints", ())]
        if any(isinstance(e, EventHandlerEntrypoint) for e in entrypoints) or \
                service in topology.consuming_services():
            queues.add(topology.service_queue_name(service))
        if any(isinstance(e, Rpc) for e in entrypoints):
            queues.add(RPC_QUEUE_TEMPLATE.format(service))
    else:
        queues = {RPC_QUEUE_TEMPLATE.format(service)}
        if service in topology.consuming_services():
            queues.add(topology.service_queue_name(service))
    return queues


def test_keda_scales_on_the_queues_each_service_consumes(rendered):
    scaled = by_name(rendered["prod"], "ScaledObject")
    assert set(scaled) == set(SERVICES)
    configmap = next(d for d in of_kind(rendered["prod"], "ConfigMap")
                     if d["metadata"]["name"].startswith("shop-config"))
    for service, obj in scaled.items():
        queues = {t["metadata"]["queueName"] for t in obj["spec"]["triggers"]}
        assert queues == declared_queues(service), service
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "rabbitmq"
            host = configmap["data"][trigger["metadata"]["hostFromEnv"]]
            assert host.endswith("/" + configmap["data"]["AMQP_VHOST"])


def queue_policies(docs):
    return [p for p in of_kind(docs, "Policy") if p["spec"]["applyTo"] in ("queues", "all", "quorum_queues")]


def matching(policies, queue: str) -> list[dict]:
    return [p for p in policies if re.search(p["spec"]["pattern"], queue)]


REPLY_UUID = "0b2c6f9e-4a5d-4f3e-9f55-5e2d1c1d2e3f"


def test_event_queue_policies_carry_the_chassis_arguments_and_never_touch_rpc_queues(rendered):
    docs = rendered["prod"]
    policies = queue_policies(docs)
    configmap = next(d for d in of_kind(docs, "ConfigMap")
                     if d["metadata"]["name"].startswith("shop-config"))
    # One value for the services' setting, the queues' argument and the policies.
    limit = int(configmap["data"]["EVENT_DELIVERY_LIMIT"])
    assert limit == topology.DEFAULT_DELIVERY_LIMIT
    rpc_queues = [RPC_QUEUE_TEMPLATE.format(s) for s in SERVICES] + \
        [RPC_REPLY_QUEUE_TEMPLATE.format(s, REPLY_UUID) for s in SERVICES]
    for queue in rpc_queues:
        assert not any("delivery-limit" in p["spec"]["definition"] for p in matching(policies, queue)), queue
    for service in topology.consuming_services():
        queue = topology.service_queue_name(service)
        hits = matching(policies, queue)
        assert len(hits) == 1, queue
        definition = hits[0]["spec"]["definition"]
        args = topology.service_queue(service, [], limit).queue_arguments
        # Same values as the chassis' declaration arguments (which win on a conflict).
        assert definition["dead-letter-exchange"] == args["x-dead-letter-exchange"]
        assert definition["dead-letter-strategy"] == args["x-dead-letter-strategy"]
        assert definition["overflow"] == args["x-overflow"]
        assert definition["delivery-limit"] == args["x-delivery-limit"]
        # ...and no policy touches the dead-letter queue itself.
        assert not matching(policies, topology.dead_letter_queue_name(service))
    assert limit == definition["delivery-limit"]


def test_rpc_queues_are_mirrored_to_every_broker_node_by_their_own_service_policy(rendered):
    """As in the test clusters that kill broker nodes under RPC load (tests/cluster):
    a classic RPC queue whose node is down would stall every call to the service."""
    docs = rendered["prod"]
    policies = queue_policies(docs)
    for service in SERVICES:
        requests = RPC_QUEUE_TEMPLATE.format(service)
        replies = RPC_REPLY_QUEUE_TEMPLATE.format(service, REPLY_UUID)
        for queue in (requests, replies):
            hits = matching(policies, queue)
            assert [p["metadata"]["name"] for p in hits] == [f"rpc-{service}"], queue
            assert hits[0]["spec"]["definition"] == topology.RPC_QUEUE_MIRRORING
            assert hits[0]["metadata"]["labels"]["app.kubernetes.io/name"] == service
    mirroring = [p for p in policies if "ha-mode" in p["spec"]["definition"]]
    for service in topology.consuming_services():
        assert not matching(mirroring, topology.service_queue_name(service))
    assert not matching(mirroring, RPC_REPLY_QUEUE_TEMPLATE.format("standalone_rpc_proxy", "0b2c6f9e"))
    # Classic mirroring is gone in RabbitMQ 4.0 (topology.RPC_QUEUE_MIRRORING): an upgrade
    # of the broker image must move the RPC queues to quorum queues first.
    image = next(d for d in of_kind(docs, "RabbitmqCluster"))["spec"]["image"]
    assert int(image.split(":")[1].split(".")[0]) < 4, image


def test_broker_permissions_are_least_privilege(rendered):
    """Names only (test_broker_permissions.py runs every permission on a real
    broker): nobody may declare, bind, consume or publish what another
    service owns."""
    docs = rendered["prod"]
    perms = {p["spec"]["userReference"]["name"]: p["spec"]["permissions"]
             for p in of_kind(docs, "Permission")}
    users = {u["metadata"]["name"] for u in of_kind(docs, "User")}
    assert set(perms) == users == {f"shop-{s}" for s in SERVICES}
    assert not of_kind(docs, "TopicPermission")
    for service in SERVICES:
        p = perms[f"shop-{service}"]
        for other in SERVICES:
            if other == service:
                continue
            for queue in (topology.service_queue_name(other), topology.dead_letter_queue_name(other),
                          RPC_QUEUE_TEMPLATE.format(other),
                          RPC_REPLY_QUEUE_TEMPLATE.format(other, "0b2c6f9e-4a5d-4f3e-9f55-5e2d1c1d2e3f")):
                for right in ("configure", "write", "read"):
                    assert not re.match(p[right], queue), (service, right, queue)
            assert not re.match(p["write"], f"{other}.events")
            assert not re.match(p["configure"], topology.dead_letter_exchange_name(other))
        assert not re.match(p["write"], "amq.default") and not re.match(p["write"], "")


def test_network_policies_default_deny_then_allow_what_is_needed(rendered):
    docs = rendered["prod"]
    policies = by_name(docs, "NetworkPolicy")
    deny = policies["default-deny-services"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert policies["allow-dns"]["spec"]["egress"][0]["ports"][0]["port"] == 53
    for service in SERVICES:
        spec = policies[f"{service}-allow"]["spec"]
        egress_ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
        assert egress_ports == [5672, 27017]
        mongo = [rule for rule in spec["egress"] if rule["ports"][0]["port"] == 27017][0]
        assert mongo["to"][0]["podSelector"]["matchLabels"] == {"app": f"shop-{service}-mongo-svc"}
        sources = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                   for rule in spec["ingress"] for peer in rule["from"]]
        assert sources == (["monitoring", "ingress-nginx"] if service == "analytics" else ["monitoring"])
    ingress = by_name(docs, "Ingress")["analytics"]
    paths = {p["path"]: p["pathType"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/track": "Exact", "/dashboard": "Prefix", "/dashboard.js": "Exact"}
    # The engines' pods: only their own service (and their peers) reach each mongod...
    for service in SERVICES:
        spec = policies[f"shop-{service}-mongo-allow"]["spec"]
        assert spec["podSelector"]["matchLabels"] == {"app": f"shop-{service}-mongo-svc"}
        peers = [peer["podSelector"]["matchLabels"] for rule in spec["ingress"] for peer in rule["from"]]
        assert peers == [{"app.kubernetes.io/name": service, "app.kubernetes.io/component": "service"},
                         {"app": f"shop-{service}-mongo-svc"}]
        assert {p["port"] for rule in spec["ingress"] for p in rule["ports"]} == {27017}
    # ...and the broker takes AMQP from the services and KEDA, its API from the operators.
    broker = policies["shop-rabbitmq-allow"]["spec"]
    assert broker["policyTypes"] == ["Ingress"]
    opened = {(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"),
               tuple(p["port"] for p in rule.get("ports", [])))
              for rule in broker["ingress"] for peer in rule["from"]}
    assert opened == {(None, (5672,)), (None, ()), ("rabbitmq-system", (15672,)), ("keda", (5672,)),
                      ("monitoring", (15692,))}


def test_prod_spreads_across_zones_and_dev_is_small(rendered):
    for overlay, scaler, key in (("prod", "ScaledObject", "minReplicaCount"),
                                 ("prod-hpa", "HorizontalPodAutoscaler", "minReplicas")):
        for d in of_kind(rendered[overlay], "Deployment"):
            # The autoscaler owns the scale: an apply must not reset it.
            assert "replicas" not in d["spec"], (overlay, d["metadata"]["name"])
            spread = {c["topologyKey"]: c["whenUnsatisfiable"]
                      for c in d["spec"]["template"]["spec"]["topologySpreadConstraints"]}
            # A preference: clusters without zone labels still schedule the pods.
            assert spread == {"topology.kubernetes.io/zone": "ScheduleAnyway",
                              "kubernetes.io/hostname": "ScheduleAnyway"}
        scalers = of_kind(rendered[overlay], scaler)
        assert {s["spec"]["scaleTargetRef"]["name"] for s in scalers} == set(SERVICES)
        assert all(s["spec"][key] >= 3 for s in scalers)
    for d in of_kind(rendered["dev"], "Deployment"):
        assert d["spec"]["replicas"] == 1
        main = d["spec"]["template"]["spec"]["containers"][0]
        assert main["resources"]["limits"]["memory"] == "384Mi"
    assert not of_kind(rendered["dev"], "ScaledObject")
    assert not of_kind(rendered["dev"], "HorizontalPodAutoscaler")
    assert all(m["spec"]["members"] == 3 for m in of_kind(rendered["prod"], "MongoDBCommunity"))
    assert of_kind(rendered["prod"], "RabbitmqCluster")[0]["spec"]["replicas"] == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_engines_have_resources_disruption_budgets_and_their_service_account(rendered, overlay):
    docs = rendered[overlay]
    budgets = by_name(docs, "PodDisruptionBudget")
    for mongo in of_kind(docs, "MongoDBCommunity"):
        name = mongo["metadata"]["name"]
        template = mongo["spec"]["statefulSet"]["spec"]["template"]
        containers = {c["name"]: c for c in template["spec"]["containers"]}
        assert set(containers) == {"mongod", "mongodb-agent"}
        for c in containers.values():
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
        assert budgets[name]["spec"] == {"maxUnavailable": 1,
                                         "selector": {"matchLabels": {"app": f"{name}-svc"}}}
    rabbit = of_kind(docs, "RabbitmqCluster")[0]
    assert budgets[rabbit["metadata"]["name"]]["spec"]["maxUnavailable"] == 1
    assert "disk_free_limit" in rabbit["spec"]["rabbitmq"]["additionalConfig"]
    template = rabbit["spec"]["override"]["statefulSet"]["spec"]["template"]
    spread = template["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "topology.kubernetes.io/zone"
    # the probe that restarts a node stranded after a partition (tests/cluster/test_liveness.py)
    broker = {c["name"]: c for c in template["spec"]["containers"]}["rabbitmq"]
    assert broker["livenessProbe"]["exec"]["command"][:2] == ["rabbitmqctl", "eval"]
    # The operator runs mongod pods as this account of the resource's own namespace.
    assert "mongodb-database" in by_name(docs, "ServiceAccount")
    role = by_name(docs, "Role")["mongodb-database"]
    assert {(tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in role["rules"]} == \
        {(("secrets",), ("get",)), (("pods",), ("delete", "get", "patch"))}
    binding = by_name(docs, "RoleBinding")["mongodb-database"]
    assert binding["roleRef"]["name"] == "mongodb-database"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mongodb-database",
                                    "namespace": "shop"}]


def test_alerts_cover_the_issue_list(rendered):
    rules = [r for g in of_kind(rendered["prod"], "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    needed = {"ShopHighErrorRatio": "shop_request", "ShopHighLatencyP99": "shop_request_seconds_bucket",
              "ShopQueueGrowing": "rabbitmq_queue_messages_ready",
              "ShopDeadLetteredEvents": "shop_dead_letter",
              "ShopOutboxBacklogOld": "shop_outbox_oldest_pending_seconds",
              "ShopEventsHeldForAMissingQueue": "shop_events_publish_failures_total",
              "ShopQueueNoConsumers": "rabbitmq_queue_consumers",
              "ShopLowStockProducts": "shop_low_stock_products",
              "ShopBrokerNodeCutOff": "erlang_vm_dist_node_state",
              "ShopBrokerNodeRestartedByLiveness": "kube_pod_container_status_restarts_total",
              "ShopConsumerLost": "shop_consumer_restarts_total"}
    for alert, metric in needed.items():
        assert metric in alerts[alert] or any(metric in r.get("expr", "") for r in rules), alert
    from shared.observability import metrics
    exposed = metrics.exposition().decode()
    for metric in ("shop_requests_total", "shop_request_seconds", "shop_outbox_oldest_pending_seconds",
                   "shop_dead_letter_messages", "shop_events_publish_failures_total"):
        assert f"# TYPE {metric}" in exposed or f"# HELP {metric}" in exposed


def test_dockerfile_is_multistage_slim_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert len(stages) >= 2 and all(s.startswith("${BASE_IMAGE}") for s in stages)
    assert "slim" in base and ":" in base and not base.endswith(":latest")
    final = text.split("\nFROM ")[-1]
    assert "build-essential" not in final and "apt-get install" not in final and "pip install" not in final
    # Nothing is downloaded during the build: the wheelhouse comes from the host.
    assert "--no-index" in text and "COPY wheels/" in text
    user = re.findall(r"^USER (\S+)", final, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "COPY shared/" in text and "COPY services/" in text
    ignore = (ROOT / ".dockerignore").read_text()
    assert "!shared/" in ignore and "!services/" in ignore and "!wheels/" in ignore
