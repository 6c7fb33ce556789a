"""Named YAML files (targets, recipes): the ones shipped inside the package, then the user's own folders.

Looked up by name, the first folder that has NAME.yaml wins:

    $EDGECNN_TARGETS / $EDGECNN_RECIPES   folders separated by os.pathsep (like PATH: the first one wins)
    $XDG_CONFIG_HOME/edgecnn/KIND         (default ~/.config/edgecnn/KIND)
    edgecnn/KIND/*.yaml                   package data (importlib.resources): the same from any folder

so a user's file overrides a shipped one of the same name. `edgecnn targets` / `edgecnn recipes` list
each name once with the file it comes from.
"""

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgecnn.core.errors import EdgecnnError, suggest

SUFFIXES = (".yaml", ".yml")
ENV = {"targets": "EDGECNN_TARGETS", "recipes": "EDGECNN_RECIPES"}


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    origin: str  # "shipped", "$EDGECNN_TARGETS", "user config" ...


def shipped(kind: str) -> Path:
    """The folder of the YAML files shipped with edgecnn (pip installs a package as a folder, so a real path)."""
    return Path(str(resources.files("edgecnn") / kind))


def user_config(kind: str) -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "edgecnn" / kind


def folders(kind: str) -> list[tuple[str, Path]]:
    """(origin, folder) in lookup order: the first folder holding a name gives it."""
    env = ENV[kind]
    found = [(f"${env}", Path(p)) for p in os.environ.get(env, "").split(os.pathsep) if p]
    return [*found, ("user config", user_config(kind)), ("shipped", shipped(kind))]


def entries(kind: str) -> dict[str, Entry]:
    """name -> Entry, sorted by name; a name defined in several folders is the one lookup finds."""
    found: dict[str, Entry] = {}
    for origin, folder in folders(kind):
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            if path.suffix in SUFFIXES:
                found.setdefault(path.stem, Entry(path.stem, path, origin))
    return dict(sorted(found.items()))


def is_path(name: str) -> bool:
    """A YAML path (`./myboard.yaml`, `my.yml`, `dir/x.yaml`) rather than a name."""
    return Path(name).suffix in SUFFIXES or os.sep in name or "/" in name


def find(kind: str, name: str) -> Path:
    """The file of a name; unknown -> one line with the valid names and the closest match."""
    found = entries(kind)
    if name in found:
        return found[name].path
    singular = kind.rstrip("s")
    raise EdgecnnError(f"unknown {singular} '{name}'{suggest(name, found)} (edgecnn {kind} lists them; "
                       f"a file of your own: a path to NAME.yaml)")


def overrides(kind: str) -> list[str]:
    """One line per file of the user's (`NAME: PATH (ORIGIN)`), printed under a listing, unwrapped."""
    return [f"{e.name}: {e.path} ({e.origin})" for e in entries(kind).values() if e.origin != "shipped"]


def where(kind: str) -> str:
    """The folders a name is looked up in, first one first (a listing's caption)."""
    return "looked up in: " + ", ".join(f"{origin} {folder}" for origin, folder in folders(kind))
