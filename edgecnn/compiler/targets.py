"""Targets: YAML files naming a backend, its device settings, precisions and options. The shipped ones are
package data (edgecnn/targets/*.yaml); a user's own come by path or from a folder (edgecnn.core.catalog)."""

from dataclasses import dataclass, field
from pathlib import Path

from edgecnn.core import catalog
from edgecnn.core.errors import EdgecnnError, suggest
from edgecnn.core.fileio import read_document
from edgecnn.core.manifest import PRECISIONS

REQUIRED = ("name", "backend", "precision", "precisions")


@dataclass
class Target:
    name: str
    backend: str
    precision: str  # default precision
    precisions: list[str]
    description: str = ""
    device: str = "cpu"
    options: dict = field(default_factory=dict)
    # a backend's own settings, under its name (tvm: TVM's target dict; tensorrt: version, sm, max_opset, ...)
    sections: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)  # the YAML as written, recorded in manifests

    def section(self, backend: str) -> dict | None:
        """The settings the target gives `backend` (the YAML's top-level key of that name), if any."""
        return self.sections.get(backend)

    def check_precision(self, precision: str | None) -> str:
        precision = precision or self.precision
        if precision not in self.precisions:
            others = sorted(t.name for t in all_targets() if t.backend == self.backend and precision in t.precisions)
            where = f" ({precision} on {self.backend}: {', '.join(others)})" if others else ""
            raise EdgecnnError(f"target '{self.name}' does not take {precision}; it takes "
                               f"{', '.join(self.precisions)}{where}")
        return precision


def names() -> list[str]:
    return list(catalog.entries("targets"))


def parse(raw, source: str) -> Target:
    if not isinstance(raw, dict):
        raise EdgecnnError(f"{source}: a target must be a YAML mapping")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise EdgecnnError(f"{source}: target is missing field(s) {', '.join(missing)}")
    from edgecnn import backends

    known = set(Target.__dataclass_fields__) - {"raw", "sections"} | set(backends.names())
    unknown = sorted(set(raw) - known)
    if unknown:
        raise EdgecnnError(f"{source}: unknown target field '{unknown[0]}'{suggest(unknown[0], known)}")
    bad = [p for p in [raw["precision"], *raw["precisions"]] if p not in PRECISIONS]
    if bad:
        raise EdgecnnError(f"{source}: precision '{bad[0]}' is not one of {', '.join(PRECISIONS)}")
    sections = {k: v for k, v in raw.items() if k in backends.names()}
    return Target(**{k: v for k, v in raw.items() if k not in sections}, sections=sections, raw=dict(raw))


def load(name: str, _seen: tuple = ()) -> Target:
    """A target by name (`edgecnn targets` lists them) or by path to a YAML file; an alias loads the target it
    names."""
    path = Path(name) if catalog.is_path(name) else catalog.find("targets", name)
    raw = read_document(path, missing=f"target file not found: {path}")
    if isinstance(raw, dict) and "alias" in raw:
        return load_alias(raw, path, _seen)
    return parse(raw, str(path))


def load_alias(raw: dict, path: Path, seen: tuple) -> Target:
    """`alias: OTHER` (a file with nothing else) names another target, which stays the one source of truth."""
    if set(raw) != {"alias"}:
        raise EdgecnnError(f"{path}: an alias file holds only 'alias: TARGET', not '{sorted(set(raw) - {'alias'})[0]}'")
    if path.stem in seen:
        raise EdgecnnError(f"{path}: alias loop {' -> '.join([*seen, path.stem])}")
    return load(str(raw["alias"]), (*seen, path.stem))


def from_manifest(man: dict) -> Target:
    """The target a build was compiled for, as its manifest recorded it (the YAML's fields as written)."""
    return parse(man["target"], f"the manifest's target '{man['target'].get('name')}'")


def all_targets() -> list[Target]:
    """Every target once (an alias is listed under the target it names)."""
    return [target for target, _ in listing()]


def listing() -> list[tuple[Target, catalog.Entry]]:
    """Every target once, with the file it was found in (an alias: under the target it names)."""
    unique: dict[str, tuple[Target, catalog.Entry]] = {}
    for entry in catalog.entries("targets").values():
        target = load(entry.name)
        unique.setdefault(target.name, (target, entry))
    return list(unique.values())


def table(listed: list[tuple[Target, catalog.Entry]], availability: dict):
    """The targets, where each comes from and whether its backend is usable here (edgecnn targets)."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="targets: --target NAME (or a PATH.yaml of your own)", caption=catalog.where("targets"))
    for col in ("name", "backend", "device", "precisions", "description", "from", "usable here"):
        t.add_column(col)
    for tg, entry in listed:
        reason = availability.get(tg.backend)
        t.add_row(tg.name, tg.backend, tg.device, ", ".join(tg.precisions), tg.description, entry.origin,
                  "[green]yes[/]" if not reason else f"[yellow]no[/]: {escape(reason)}")
    return t
