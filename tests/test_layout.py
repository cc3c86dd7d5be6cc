"""encore/ imports one way: every ``encore.*`` import (module or function level) goes to the importer's own layer or
a lower one, and no subpackage or top-level module takes part in a circle of imports (map: encore/__init__.py); a
test module takes shared helpers from tests/conftest.py or tests/pipeline_helpers.py (both in tests/, on sys.path in
every run), never from another test module."""

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "encore"

# Lowest first. A unit is a subpackage of encore or a top-level module (``encore`` itself: the root __init__).
LAYERS = [
    {"encore", "progress", "environment", "cli", "settings", "data"},  # foundations
    {"models"},  # model I/O
    {"editing"},  # the statistics and edit rules
    {"evaluation"},  # the evaluate rule
    {"reporting"},  # the report rules
    {"session", "experiment", "api", "plan"},  # entry points
    {"measuring"},  # tools that measure the code
]
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """``encore.editing.keys`` -> ``editing``, ``encore.plan`` -> ``plan``, ``encore`` -> ``encore``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every encore import in the file, at any depth; ``from encore.x import y`` names the
    module ``encore.x.y`` when y is a submodule, and relative imports are resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                is_module = PACKAGE.parent.joinpath(*submodule.split(".")).with_suffix(".py").is_file() or (
                    PACKAGE.parent.joinpath(*submodule.split(".")).is_dir()
                )
                found.append((submodule if is_module else base, node.lineno))
    return [(module, line) for module, line in found if module == "encore" or module.startswith("encore.")]


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{importing unit: {imported unit: ["encore/<file>.py:<line> imports <module>", ...]}}, other units only."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = unit_of(module_name(path))
        graph.setdefault(importer, {})
        for module, line in imported_modules(path):
            if unit_of(module) != importer:
                where = f"{path.relative_to(REPO)}:{line} imports {module}"
                graph[importer].setdefault(unit_of(module), []).append(where)
    return graph


def layer_violations(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Units missing from LAYERS (or listed but gone), imports of a higher layer, and circles of imports."""
    problems = [f"{unit}: not in tests/test_layout.py LAYERS" for unit in sorted(set(graph) - set(LAYER_OF))]
    problems += [f"{unit}: in LAYERS but not in encore/" for unit in sorted(set(LAYER_OF) - set(graph))]
    for importer, targets in sorted(graph.items()):
        for imported, sites in sorted(targets.items()):
            if LAYER_OF.get(imported, -1) > LAYER_OF.get(importer, len(LAYERS)):
                problems += [f"{site}: {importer} is below {imported}" for site in sites]
    state = {}  # unit -> "open" (on the current path) | "done"

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for imported in sorted(graph.get(unit, {})):
            if state.get(imported) == "open":
                circle = [*path[path.index(imported) :], imported]
                problems.append("circle: " + " -> ".join(circle))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])
    return problems


def test_encore_imports_only_its_own_or_lower_layers_and_never_in_a_circle():
    graph = import_graph()
    assert {"models", "editing", "evaluation", "reporting"} <= set(graph)
    assert graph["reporting"]["editing"]  # collect.collect imports encore.editing.snapshots inside the function
    assert layer_violations(graph) == []


def test_an_upward_import_or_a_circle_is_a_violation():
    graph = {unit: {} for unit in LAYER_OF}
    graph["models"] = {"editing": ["encore/models/hooks.py:1 imports encore.editing.keys"]}
    graph["session"] = {"experiment": ["encore/session.py:1 imports encore.experiment"]}
    graph["experiment"] = {"session": ["encore/experiment.py:1 imports encore.session"]}
    graph["tools"] = {}
    assert layer_violations(graph) == [
        "tools: not in tests/test_layout.py LAYERS",
        "encore/models/hooks.py:1 imports encore.editing.keys: models is below editing",
        "circle: experiment -> session -> experiment",
    ]


def module_circles() -> list[str]:
    """Circles of imports between encore's modules, inside a unit too (e.g. reporting.figures <-> reporting.paper_tables)."""
    graph = {module_name(path): {module for module, _ in imported_modules(path)} for path in PACKAGE.rglob("*.py")}
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, set()) - {module}):
            if state.get(imported) == "open":
                found.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_itself_through_others():
    assert module_circles() == []


def test_the_module_map_names_every_module_of_encore():
    """encore/__init__'s docstring is the one picture of the layout: every subpackage and module is in it."""
    import encore

    names = {path.parent.name if path.name == "__init__.py" else path.stem for path in PACKAGE.rglob("*.py")}
    names = {name for name in names if not name.startswith("__")}  # __main__: the package's command line
    missing = sorted(name for name in names - {"encore"} if not re.search(rf"\b{name}\b", encore.__doc__))
    assert missing == []


def test_a_moved_module_fails_in_one_line_naming_where_it_went():
    import importlib

    import encore

    for old, new in encore.MOVED.items():
        with pytest.raises(ModuleNotFoundError, match=f"^{re.escape(old)} has moved to {re.escape(new)}$"):
            importlib.import_module(old)
        for module in re.findall(r"encore(?:\.\w+)+", new):
            importlib.import_module(module)


def test_a_test_module_imports_shared_helpers_from_conftest_never_from_another_test_module():
    """pytest puts a test file's folder on sys.path only once it collects that file, so an import of another test
    module passes in the whole run and fails when a single folder or file runs (the GPU check runs one file)."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [
                f"{path.relative_to(REPO)}: {name}" for name in names if name.split(".")[0].startswith("test_")
            ]
    assert offenders == []
