"""The app's dependencies point one way: the adapters implement what the engine needs without knowing it, and
the engine reaches the adapters only through its Protocols (`app/engine/ports.py`), wired in `app/runtime.py`.
The policy pack (`policy/`) judges the program without importing it, and its validators need no Pulumi at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (inside functions and TYPE_CHECKING blocks too)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def imports_of(package: str) -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(APP.parent)), module)
        for path in sorted((APP / package).rglob("*.py"))
        for module in sorted(imported_modules(path))
    ]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("forbidden", ["app.engine", "app.http", "app.runtime"])
def test_the_adapters_never_import_the_engine_nor_the_api(forbidden):
    assert [(path, module) for path, module in imports_of("adapters") if within(module, forbidden)] == []


@pytest.mark.parametrize("forbidden", ["app.adapters", "app.http", "app.runtime"])
def test_the_engine_never_imports_an_adapter_nor_the_api(forbidden):
    assert [(path, module) for path, module in imports_of("engine") if within(module, forbidden)] == []


def test_the_rule_sees_every_form_of_import(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import app.engine.state\nfrom app.engine import state\ndef f():\n    from app.http import api\n")

    assert {"app.engine.state", "app.engine", "app.http", "app.http.api"} <= imported_modules(source)


POLICY = APP.parent / "policy"


def policy_imports(*files: str) -> list[tuple[str, str]]:
    paths = [POLICY / name for name in files] if files else sorted(POLICY.rglob("*.py"))
    return [(str(path.relative_to(APP.parent)), module) for path in paths for module in sorted(imported_modules(path))]


@pytest.mark.parametrize("forbidden", ["app", "components", "tools"])
def test_the_policy_pack_never_imports_the_program_it_judges(forbidden):
    assert [(path, module) for path, module in policy_imports() if within(module, forbidden)] == []


@pytest.mark.parametrize("forbidden", ["pulumi", "pulumi_policy"])
def test_the_validators_run_without_pulumi(forbidden):
    assert [(path, module) for path, module in policy_imports("validators.py") if within(module, forbidden)] == []


CAPACITY = APP.parent / "capacity"
# The parts of `make capacity` that run without the program: prices, the cost and the scale-out simulator.
PURE_CAPACITY_MODULES = ("prices.py", "cost.py", "scaleout.py")


def test_capacity_never_imports_the_app():
    imports = [(path.name, module) for path in sorted(CAPACITY.glob("*.py")) for module in imported_modules(path)]

    assert [(path, module) for path, module in imports if within(module, "app")] == []


@pytest.mark.parametrize("module", PURE_CAPACITY_MODULES)
@pytest.mark.parametrize("forbidden", ["pulumi", "pulumi_kubernetes", "components", "tools"])
def test_the_pure_capacity_modules_import_neither_pulumi_nor_the_program(module, forbidden):
    assert [m for m in imported_modules(CAPACITY / module) if within(m, forbidden)] == []
