"""The package keeps the shape of the data flow: a stage imports only stages below it, and no
import (at module level or inside a function) closes a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aiflow_cli"

# model source -> cut graph -> profile -> plan -> compress -> export -> serve; api: one entry per verb; cli on top
RANKS = {"data": 1, "models": 2, "codecs": 3, "profiling": 4, "split": 5, "compress": 6, "export": 7, "serve": 8,
         "api": 9, "cli": 10, "__main__": 11}
BOTTOM = {"errors", "atomic", "hashing", "tensors", "stats", "ort", "onnx_io", "staging", "schemas", "settings", "__init__"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rank(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return 0 if top in BOTTOM else RANKS[top]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported aiflow module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aiflow_cli"):
            found.append((node.module, id(node) in top_level))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top_level) for a in node.names if a.name.startswith("aiflow_cli")]
    return found


def _graph(include_nested: bool) -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, top in _imports(path):
            if (top or include_nested) and target in modules and target != name:
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_stage_imports_a_stage_above_it():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        source = _module(path)
        for target, _ in _imports(path):
            if _rank(target) > _rank(source):
                wrong.append(f"{source} -> {target}")
    assert not wrong, wrong


def test_models_codecs_and_profiling_never_import_export():
    for package in ("models", "codecs", "profiling"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert not [t for t, _ in _imports(path) if t.startswith("aiflow_cli.export")], path


def test_no_import_closes_a_cycle_not_even_inside_a_function():
    assert _cycle(_graph(include_nested=True)) is None


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_module(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")  # __main__ runs the CLI
    code = "import importlib\nfor name in %r:\n    importlib.import_module(name)\nprint(len(%r))" % (names, names)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(len(names))


def test_only_the_server_package_and_its_api_entry_import_the_server():
    """Device code, the link, the studies and the CLI start a server through ``serve.launch`` (a child
    process) or ``api.serve``; none of them reaches into the server's modules."""
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        source = _module(path)
        if source.startswith("aiflow_cli.serve.server") or source == "aiflow_cli.api.serve":
            continue
        wrong += [f"{source} -> {t}" for t, _ in _imports(path) if t.startswith("aiflow_cli.serve.server")]
    assert not wrong, wrong


def test_the_device_and_the_link_import_neither_the_studies_nor_each_other():
    for role, others in (("device", ("studies", "link")), ("link", ("studies", "device"))):
        for path in (PACKAGE / "serve" / role).rglob("*.py"):
            assert not [t for t, _ in _imports(path) if any(t.startswith(f"aiflow_cli.serve.{o}") for o in others)], path
