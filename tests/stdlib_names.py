"""Run by an older Python (.ci/board310: 3.10): every standard-library module, `from M import NAME` and
`M.attr` the given source trees use exists in this Python. Byte-compiling catches new syntax; this catches
`import tomllib`, `from datetime import UTC`, `typing.Self`, `enum.StrEnum`, `itertools.batched` ... in the
modules whose third-party imports (torch) this Python does not have.

    python3.10 tests/stdlib_names.py edgecnn tests benchmarks examples
"""

import ast
import importlib
import sys
from pathlib import Path

# the standard library of the newest Pythons too, so a module new in them (tomllib) counts as standard
NEWER = {"tomllib", "_interpreters", "_interpqueues", "_interpchannels", "_pyrepl", "annotationlib", "compression",
         "string.templatelib", "_colorize"}
STDLIB = set(sys.stdlib_module_names) | NEWER


def module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def missing_attribute(obj, chain: list[str]) -> str | None:
    """The first name of `a.b.c` that `obj` (a module) lacks, else None; stops at non-module objects."""
    for attr in chain:
        if not hasattr(obj, attr) and module(f"{obj.__name__}.{attr}") is None:
            return attr
        obj = getattr(obj, attr, None) or module(f"{obj.__name__}.{attr}")
        if not isinstance(obj, type(sys)):
            return None
    return None


def problems(path: Path) -> list[str]:
    tree, found, aliases = ast.parse(path.read_text()), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.partition(".")[0] in STDLIB:
                    mod = module(a.name)
                    found += [] if mod else [f"{path}:{node.lineno}: import {a.name}"]
                    aliases[a.asname or a.name.partition(".")[0]] = a.name if a.asname else a.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.partition(".")[0] in STDLIB:
            mod = module(node.module)
            if mod is None:
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
                continue
            found += [f"{path}:{node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if not hasattr(mod, a.name) and module(f"{node.module}.{a.name}") is None]
    for node in ast.walk(tree):
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if chain and isinstance(base, ast.Name) and base.id in aliases and module(aliases[base.id]):
            attr = missing_attribute(module(aliases[base.id]), chain)
            found += [f"{path}:{node.lineno}: {base.id}.{'.'.join(chain)} ({attr})"] if attr else []
    return found


def main() -> None:
    found = sorted({p for root in sys.argv[1:] for f in Path(root).rglob("*.py") for p in problems(f)})
    print("\n".join(found) or f"stdlib names: all present in Python {sys.version.split()[0]}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
