"""Every overlay renders, validates against Kubernetes' schemas and the
operators' released CRDs, passes checkov and yamllint, and the generated
files are current."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, K8S, OVERLAYS, ROOT

# The operators' released CRDs (deploy/tools/crds.sh pins tags and checksums):
# SHOP_CRDS_DIR (CI: ../shared/crds), else where `make crds` downloads them.
CRDS_DIR = Path(os.environ.get("SHOP_CRDS_DIR") or ROOT / ".run" / "crds")

# Kinds kubernetes-validate knows (built in); everything else needs a vendored CRD.
BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2", "batch/v1",
                  "rbac.authorization.k8s.io/v1"}


def test_every_overlay_renders(rendered):
    assert set(rendered) >= {"dev", "prod", "prod-hpa"}
    for name, docs in rendered.items():
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"} <= kinds, name
        for doc in docs:
            if doc["kind"] != "Namespace":
                where = (name, doc["kind"], doc["metadata"]["name"])
                assert doc["metadata"].get("namespace") == "shop", where


def test_generated_files_are_current():
    done = subprocess.run([sys.executable, str(DEPLOY / "tools" / "generate.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_strict(tools, rendered, overlay, tmp_path):
    files = []
    for i, doc in enumerate(rendered[overlay]):
        if doc["apiVersion"] in BUILTIN_GROUPS:
            path = tmp_path / f"{i:03d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(doc))
            files.append(str(path))
    assert files
    done = subprocess.run([tools.bin("kubernetes-validate"), "--strict", "--quiet", *files],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of every upstream CRD."""
    files = sorted(CRDS_DIR.glob("*/*.yaml")) if CRDS_DIR.is_dir() else []
    if not files:
        pytest.skip(f"no upstream CRDs in {CRDS_DIR}: run `make crds` (downloads the pinned releases) "
                    "or point SHOP_CRDS_DIR at a folder of them")
    schemas = {}
    for path in files:
        for crd in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                    schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def to_json_schema(node: dict, root: bool = True) -> dict:
    """A CRD's structural OpenAPI schema as a strict JSON Schema, like the API
    server's strict field validation: an unknown field is an error unless the
    schema says `x-kubernetes-preserve-unknown-fields` there (an object without
    properties prunes everything, so any field in it is unknown too)."""
    node = copy.deepcopy(node)
    for key in ("x-kubernetes-map-type", "format", "nullable", "default"):
        node.pop(key, None)
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("anyOf", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node:
        node["properties"] = {k: to_json_schema(v, root=False) for k, v in node["properties"].items()}
        if root and "metadata" in node["properties"]:
            # ObjectMeta: the API server's own schema, not the CRD's (kubernetes-validate
            # covers it on built-in kinds; kustomize wrote these names and labels).
            node["properties"]["metadata"] = {"type": "object"}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = to_json_schema(node["additionalProperties"], root=False)
    elif node.get("type") == "object" and not preserve and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if "items" in node:
        node["items"] = to_json_schema(node["items"], root=False)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            # Alternatives constrain, never declare fields: keep them non-strict.
            node[key] = [{k: v for k, v in to_json_schema(sub, root=False).items()
                          if k != "additionalProperties"} for sub in node[key]]
    return node


VALIDATE_CRS = r"""
import json, sys
import jsonschema
cases = json.load(sys.stdin)
errors = []
for case in cases:
    validator = jsonschema.Draft7Validator(case["schema"])
    for err in validator.iter_errors(case["object"]):
        errors.append(f"{case['what']}: {'/'.join(map(str, err.absolute_path))}: {err.message}")
print(json.dumps(errors))
"""


def validate_custom_resources(tools, cases: list[dict]) -> list[str]:
    # jsonschema lives in the tools virtualenv (with checkov), not the project's.
    done = subprocess.run([tools.bin("python"), "-c", VALIDATE_CRS], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_upstream_crds(crd_schemas, tools, rendered, overlay):
    schemas = crd_schemas
    cases = []
    for doc in rendered[overlay]:
        if doc["apiVersion"] in BUILTIN_GROUPS:
            continue
        key = (doc["apiVersion"], doc["kind"])
        assert key in schemas, f"no upstream CRD in {CRDS_DIR} serves {key}"
        cases.append({"what": f"{doc['kind']}/{doc['metadata']['name']}",
                      "schema": to_json_schema(schemas[key]), "object": doc})
    assert validate_custom_resources(tools, cases) == []


def test_crd_validation_rejects_mistakes(crd_schemas, tools, rendered):
    """The CRD check can fail: a misspelt field, a wrong type, a bad duration,
    a missing required field, an unknown field inside a typed subtree."""
    schemas = crd_schemas
    scaled = next(d for d in rendered["prod"] if d["kind"] == "ScaledObject")
    rule = next(d for d in rendered["prod"] if d["kind"] == "PrometheusRule")
    mongo = next(d for d in rendered["prod"] if d["kind"] == "MongoDBCommunity")
    typo = copy.deepcopy(scaled)
    typo["spec"]["maxReplicas"] = 4
    wrong_type = copy.deepcopy(scaled)
    wrong_type["spec"]["triggers"][0]["metadata"]["value"] = 50
    bad_duration = copy.deepcopy(rule)
    bad_duration["spec"]["groups"][0]["rules"][2]["for"] = "ten minutes"
    no_users = copy.deepcopy(mongo)
    del no_users["spec"]["users"]
    rabbit = next(d for d in rendered["prod"] if d["kind"] == "RabbitmqCluster")
    nested = copy.deepcopy(rabbit)
    nested["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]["topologySpreadConstraint"] = []
    cases = [{"what": what, "schema": to_json_schema(schemas[(d["apiVersion"], d["kind"])]), "object": d}
             for what, d in [("typo", typo), ("type", wrong_type), ("duration", bad_duration),
                             ("required", no_users), ("nested", nested)]]
    errors = validate_custom_resources(tools, cases)
    assert {e.split(":")[0] for e in errors} == {"typo", "type", "duration", "required", "nested"}, errors


def run_checkov(tools, args: list[str]) -> dict:
    done = subprocess.run([tools.bin("checkov"), *args, "--output", "json", "--skip-download", "--quiet"],
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".run"),
                               "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    text = done.stdout.strip()
    assert text, done.stderr[-2000:]
    report = json.loads(text)
    return report[0] if isinstance(report, list) else report


def failed_checks(report: dict) -> list[str]:
    results = report.get("results", {})
    return [f"{c['check_id']} {c['resource']} {c.get('check_name', '')}"
            for c in results.get("failed_checks", [])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes(tools, rendered_text, overlay, tmp_path):
    (tmp_path / f"{overlay}.yaml").write_text(rendered_text[overlay])
    report = run_checkov(tools, ["-d", str(tmp_path), "--framework", "kubernetes"])
    assert report["summary"]["passed"] > 100
    assert failed_checks(report) == []
    for skipped in report["results"].get("skipped_checks", []):
        # Every skip says why (checkov.io/skipN: CHECK=reason).
        assert len((skipped.get("check_result") or {}).get("suppress_comment", "")) > 20, skipped["check_id"]


def test_checkov_passes_on_the_dockerfile(tools):
    report = run_checkov(tools, ["-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile"])
    assert report["summary"]["passed"] > 10
    assert failed_checks(report) == []


def test_yamllint_clean(tools):
    done = subprocess.run([tools.bin("yamllint"), "-c", str(DEPLOY / ".yamllint.yaml"), "-f", "parsable",
                           str(DEPLOY)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_valid_grafana_json():
    dashboard = json.loads((K8S / "components" / "monitoring" / "dashboards" / "shop.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for word in ("Rate", "Errors", "Duration", "Business"):
        assert word in titles
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("shop_requests_total", "shop_request_seconds_bucket", "shop_kpi_gmv"):
        assert metric in exprs
