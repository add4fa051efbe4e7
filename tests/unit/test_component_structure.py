"""How `components/` is put together: the Pulumi components never reach into each other (what one needs of another
comes in through its args, handed over by `__main__.py`, and no shared helper imports a component either), and every
namespace and add-on is made by the one helper that also gives it its NetworkPolicies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMPONENTS_DIR = Path(__file__).resolve().parents[2] / "components"
COMPONENTS = ("app_tier", "worker_pool", "data_plane", "observability", "edge_ingress")
# The module whose helpers create every namespace, with its policies, and install the add-ons into theirs.
NAMESPACES_HELPER = "namespaces.py"
# The charts of the platform's own services, which components install into their own namespaces.
PLATFORM_CHARTS = {"JAEGER", "VALKEY"}


def imported_modules(path: Path) -> set[str]:
    """Every module of `components` that `path` imports, at any depth, relative imports resolved."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = "components" if node.level else ""
            module = ".".join(part for part in (package, node.module) if part)
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return modules


def defines_a_component(path: Path) -> bool:
    return any(
        isinstance(node, ast.ClassDef) and any(ast.unparse(base) == "pulumi.ComponentResource" for base in node.bases)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
    )


def test_the_components_are_the_modules_that_define_a_component_resource():
    assert {path.stem for path in COMPONENTS_DIR.glob("*.py") if defines_a_component(path)} == set(COMPONENTS)


@pytest.mark.parametrize("component", COMPONENTS)
def test_no_module_of_components_imports_a_component(component):
    forbidden = f"components.{component}"
    importers = [
        path.name
        for path in sorted(COMPONENTS_DIR.glob("*.py"))
        if path.stem != component and forbidden in imported_modules(path)
    ]
    assert importers == []


def calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.Call)]


def called_name(call: ast.Call) -> str:
    return ast.unparse(call.func).rsplit(".", 1)[-1]


def test_namespaces_and_release_manifests_are_created_only_by_the_helper_that_adds_their_policies():
    creators = {
        path.name
        for path in COMPONENTS_DIR.glob("*.py")
        for call in calls(path)
        if called_name(call) in ("Namespace", "ConfigFile")
    }
    assert creators == {NAMESPACES_HELPER}


def test_components_install_only_the_platforms_own_charts_directly_and_add_ons_through_the_helper():
    installed_directly = {
        ast.unparse(call.args[0])
        for path in COMPONENTS_DIR.glob("*.py")
        if path.name != NAMESPACES_HELPER
        for call in calls(path)
        if called_name(call) == "install_chart"
    }
    assert installed_directly == PLATFORM_CHARTS


def test_the_rule_sees_every_form_of_import(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "import components.app_tier\n"
        "from components import worker_pool\n"
        "from .data_plane import DataPlane\n"
        "def f():\n"
        "    from components.observability import otlp_endpoint\n"
    )

    assert {
        "components.app_tier",
        "components.worker_pool",
        "components.data_plane",
        "components.observability",
    } <= imported_modules(source)
