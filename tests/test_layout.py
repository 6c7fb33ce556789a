"""The package's shape: importable entry points, no import cycle, no private name reached across packages,
no backend special-cased outside backends/, keyword-only arguments on long signatures."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "edgecnn"
# the stages, lowest first: a package imports only from lower ranks (and within itself); README "Where the
# code is" states the same order. Modules at the top of the package (pipeline, runtime, rpc, rpc_server,
# __main__) are entry points: the top rank.
STAGES = [("core", "device"), ("data", "models"), ("backends",), ("qdq",), ("train", "export", "compiler"),
          ("verify", "bench"), ("quantize",), ("deploy", "pipeline", "testing", "cli")]
MAX_POSITIONAL = 4  # a function with more parameters takes the rest by keyword


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str, known) -> bool:
    return name in known


def imports(tree: ast.Module, known) -> list[tuple[str, str]]:
    """(imported edgecnn module, name taken from it or '') for every import, at any depth in the file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "edgecnn"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgecnn":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub, "") if is_module(sub, known) else (node.module, a.name))
    return found


def graph() -> dict[str, set[str]]:
    trees = modules()
    return {name: {m for m, _ in imports(tree, trees) if m != name} for name, tree in trees.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_of(module: str, trees) -> str:
    """A module's package: itself for a package's __init__, else its parent."""
    is_package = (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()
    return module if is_package else module.rpartition(".")[0]


def test_entry_points_import():
    r = subprocess.run([sys.executable, "-c", "import edgecnn, edgecnn.runtime, edgecnn.rpc"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def stage_rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself (its version, its path): loaded before any of its modules
        return -1
    ranks = {name: i for i, names in enumerate(STAGES) for name in names}
    return ranks.get(parts[1], len(STAGES) - 1)


def stage_of(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_stages_import_downward_only():
    """Every edgecnn import, lazy ones inside functions included, goes to a lower stage or stays in its own."""
    upward = [f"{importer} ({stage_of(importer)}) imports {source} ({stage_of(source)})"
              for importer, targets in graph().items() if importer != "edgecnn" for source in targets
              if stage_of(source) != stage_of(importer) and stage_rank(source) >= stage_rank(importer)
              and not (stage_rank(source) == stage_rank(importer) == len(STAGES) - 1)]
    assert not upward, upward
    assert graph()["edgecnn"] <= {"edgecnn.core.errors"}  # the package itself: its error type only


def test_stage_order_is_the_readme_s():
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("Stages, lowest first:"))
    assert line == "Stages, lowest first: " + " < ".join(", ".join(names) for names in STAGES) + "."


def test_the_device_package_is_a_standard_library_leaf():
    """A board's RPC server imports edgecnn.device with nothing but Python and the TVM runtime."""
    allowed = set(sys.stdlib_module_names) | {"edgecnn"}
    for path in (PACKAGE / "device").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("edgecnn"):
                    assert name.startswith("edgecnn.device"), f"{path.name} imports {name}"


def test_no_private_name_imported_across_packages():
    trees = modules()
    crossing = [f"{importer} imports {name} from {source}" for importer, tree in trees.items()
                for source, name in imports(tree, trees)
                if name.startswith("_") and not name.startswith("__")
                and package_of(source, trees) != package_of(importer, trees)]
    assert not crossing, crossing


def test_backend_names_only_in_backends_targets_and_help():
    pattern = re.compile(r'"(tvm|tensorrt)"')
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("backends/") or rel == "compiler/targets.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not (rel.startswith("cli/") and "help=" in line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, found


def test_long_signatures_take_keywords():
    too_long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = [a.arg for a in [*node.args.posonlyargs, *node.args.args] if a.arg not in ("self", "cls")]
                if len(positional) > MAX_POSITIONAL:
                    too_long.append(f"{name}.{node.name}({', '.join(positional)})")
    assert not too_long, too_long
