"""Fixtures for the deployment checks: the tools (installed by the project's
own deploy/tools/setup.sh), and every overlay rendered by kustomize."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
SERVICES = ["catalog", "order", "fulfillment", "member", "marketing", "analytics"]


@dataclass(frozen=True)
class Tools:
    kustomize: str
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="session")
def tools() -> Tools:
    # Idempotent and fast when everything is installed; installs on a fresh clone.
    done = subprocess.run([str(DEPLOY / "tools" / "setup.sh")], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        pytest.fail(f"deploy/tools/setup.sh failed:\n{done.stderr[-3000:]}")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return Tools(kustomize=values["KUSTOMIZE"], venv=Path(values["TOOLS_VENV"]))


def kustomize_build(tools: Tools, path: Path) -> str:
    done = subprocess.run([tools.kustomize, "build", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kustomize build {path} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def rendered_text(tools) -> dict[str, str]:
    return {name: kustomize_build(tools, K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text) -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered_text.items()}


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}
