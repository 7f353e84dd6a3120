"""The layout rules of ARCHITECTURE.md, read from the source with `ast` (nothing is imported):

- nothing in shared/ or services/ imports tools/;
- a service imports only the chassis (`shared`), the standard library, third-party packages and
  its own package: never another service;
- the chassis imports no service;
- every service has the same layers: service.py, usecases, domain, store, schemas;
- every package opens with a docstring saying what it is for.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level names of this repository's own code: anything else a module imports is the standard
# library or a third-party package.
OWN = {"shared", "services", "tools", "tests", "bench", "deploy"}
LAYERS = ("service", "usecases", "domain", "store", "schemas")
SHAPE_PENDING: set[str] = set()  # a service moving into the shape; its imports are checked all the same


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports, absolute (relative imports resolved against `module`)."""
    found = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from shared import guard` imports the module shared.guard
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imports(folder: str) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p.read_text(encoding="utf-8"), module_name(p),
                                       p.name == "__init__.py")
            for p in python_files(folder)}


def top(name: str) -> str:
    return name.split(".")[0]


SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "service.py").exists())


def test_the_checker_sees_absolute_relative_and_from_imports():
    found = imports_of("import tools.stack\nfrom shared import guard\nfrom . import store\n"
                       "from .domain import rules\n", "services.member.usecases")
    assert {"tools.stack", "shared.guard", "services.member.store",
            "services.member.domain.rules"} <= found


def test_the_suite_has_its_six_services():
    assert SERVICES == ["analytics", "catalog", "fulfillment", "marketing", "member", "order"]


@pytest.mark.parametrize("folder", ["shared", "services"])
def test_nothing_in_the_chassis_or_the_services_imports_the_tools(folder):
    offenders = {m: sorted(n for n in names if top(n) in {"tools", "tests", "bench"})
                 for m, names in imports(folder).items()}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_the_chassis_imports_no_service():
    offenders = {m: sorted(n for n in names if top(n) == "services")
                 for m, names in imports("shared").items()}
    assert {m: n for m, n in offenders.items() if n} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_the_chassis_and_its_own_package(service):
    own = f"services.{service}"
    offenders = {}
    for module, names in imports(f"services/{service}").items():
        bad = sorted(n for n in names if top(n) in OWN and top(n) != "shared"
                     and n != own and not n.startswith(own + "."))
        if bad:
            offenders[module] = bad
    assert offenders == {}


@pytest.mark.parametrize("service", [s for s in SERVICES if s not in SHAPE_PENDING])
def test_every_service_has_the_same_layers(service):
    folder = ROOT / "services" / service
    missing = [layer for layer in LAYERS
               if not (folder / f"{layer}.py").exists() and not (folder / layer / "__init__.py").exists()]
    assert missing == [], f"services/{service} lacks {missing} (ARCHITECTURE.md, one service)"


def test_every_package_opens_with_a_docstring():
    packages = [p for folder in ("shared", "services", "tools") for p in python_files(folder)
                if p.name == "__init__.py"]
    assert len(packages) > 10
    undocumented = [str(p.relative_to(ROOT)) for p in packages
                    if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert undocumented == []
