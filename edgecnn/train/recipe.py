"""Training recipes: YAML -> dataclasses, validated with one-line errors. A recipe is a name (the shipped
edgecnn/recipes/*.yaml, or one in the user's folders: edgecnn.core.catalog) or a path to a YAML file."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgecnn.core import catalog
from edgecnn.core.errors import EdgecnnError, suggest
from edgecnn.core.fileio import read_document
from edgecnn.data import DataCfg


@dataclass
class ModelCfg:
    name: str
    options: dict = field(default_factory=dict)  # everything else under `model:` goes to models.create


@dataclass
class AugmentCfg:
    hflip: bool = False
    crop_padding: int = 0


@dataclass
class OptimCfg:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    label_smoothing: float = 0.0


@dataclass
class ScheduleCfg:
    name: str = "onecycle"  # onecycle | cosine | constant
    epochs: int = 10
    batch_size: int = 128
    warmup_pct: float = 0.25


@dataclass
class DistributedCfg:
    """How a recipe runs on several ranks (torchrun; one rank ignores it)."""

    scaling: str = "global"  # global: per-rank batch = batch_size / ranks; linear: batch_size per rank, lr x ranks
    sync_bn: bool = False  # SyncBatchNorm: batch statistics over all ranks (CUDA ranks only)


@dataclass
class FinetuneCfg:
    run: str  # RUN_DIR whose model.pt gives the starting weights
    mode: str = "all"  # classifier | last_n | all
    last_n: int = 1


@dataclass
class Recipe:
    name: str
    model: ModelCfg
    data: DataCfg = field(default_factory=DataCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    finetune: FinetuneCfg | None = None
    distributed: DistributedCfg = field(default_factory=DistributedCfg)
    seed: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = {"name": self.model.name, **self.model.options}
        return d


SECTIONS = {"model": ModelCfg, "data": DataCfg, "augment": AugmentCfg, "optim": OptimCfg,
            "schedule": ScheduleCfg, "finetune": FinetuneCfg, "distributed": DistributedCfg}
CHOICES = {("optim", "name"): ("adamw", "sgd"), ("schedule", "name"): ("onecycle", "cosine", "constant"),
           ("finetune", "mode"): ("classifier", "last_n", "all"),
           ("data", "dataset"): ("fashion-mnist", "idx", "imagefolder", "npz"),
           ("distributed", "scaling"): ("global", "linear")}


def _check_type(where: str, value: Any, default: Any):
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EdgecnnError(f"recipe field {where} must be {kind.__name__}, got {value!r}")
    return value


def _section(name: str, cls, raw: Any):
    if not isinstance(raw, dict):
        raise EdgecnnError(f"recipe section '{name}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if cls is ModelCfg:
        if "name" not in raw:
            raise EdgecnnError("recipe is missing field model.name: name a registered model")
        return ModelCfg(raw["name"], {k: v for k, v in raw.items() if k != "name"})
    for key in raw:
        if key not in fields:
            raise EdgecnnError(f"unknown recipe field {name}.{key}{suggest(key, fields)}")
    values = {}
    for fname, f in fields.items():
        if fname in raw:
            default = f.default if f.default is not dataclasses.MISSING else \
                (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            values[fname] = _check_type(f"{name}.{fname}", raw[fname], default)
            allowed = CHOICES.get((name, fname))
            if allowed and values[fname] not in allowed:
                raise EdgecnnError(f"recipe field {name}.{fname}='{values[fname]}' must be one of "
                                   f"{', '.join(allowed)}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise EdgecnnError(f"recipe is missing field {name}.{fname}")
    return cls(**values)


def parse(raw: Any, source: str = "recipe") -> Recipe:
    from edgecnn import models

    if not isinstance(raw, dict):
        raise EdgecnnError(f"{source}: a recipe must be a YAML mapping with at least 'model:'")
    unknown = set(raw) - set(SECTIONS) - {"name", "seed"}
    if unknown:
        key = sorted(unknown)[0]
        raise EdgecnnError(f"{source}: unknown recipe section '{key}'{suggest(key, [*SECTIONS, 'name', 'seed'])}")
    if "model" not in raw:
        raise EdgecnnError(f"{source}: recipe is missing the 'model:' section")
    parts = {k: _section(k, SECTIONS[k], v) for k, v in raw.items() if k in SECTIONS and v is not None}
    recipe = Recipe(name=str(raw.get("name", Path(source).stem)), seed=_check_type("seed", raw.get("seed", 0), 0),
                    **parts)
    if recipe.model.name not in models.names():
        raise EdgecnnError(f"{source}: unknown model '{recipe.model.name}'{suggest(recipe.model.name, models.names())}")
    if len(recipe.data.mean) != recipe.data.channels or len(recipe.data.std) != recipe.data.channels:
        raise EdgecnnError(f"{source}: data.mean and data.std need one value per channel ({recipe.data.channels})")
    return recipe


def load(name: str | Path) -> Recipe:
    """Read and validate a recipe, by name (`edgecnn recipes` lists them) or path; every problem is one
    EdgecnnError line."""
    path = Path(name) if isinstance(name, Path) or catalog.is_path(name) else catalog.find("recipes", name)
    raw = read_document(path, missing=f"recipe not found: {path}{shipped_hint(path)}")
    return parse(raw, str(path))


def shipped_hint(path: Path) -> str:
    """A missing `recipes/NAME.yaml` outside the checkout is usually the shipped recipe NAME."""
    known = catalog.entries("recipes")
    if path.stem in known:
        return f" (a recipe of edgecnn's own is named without a path: {path.stem})"
    return f" (edgecnn recipes lists the recipes known by name{suggest(path.stem, known)})"


def summary(path: Path) -> tuple[str, str, str]:
    """(model, dataset, epochs) of a recipe file as written, without validating it ('?' where unreadable)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raw = None
    if not isinstance(raw, dict):
        return ("?", "?", "?")
    model, data, schedule = (raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("model", "data", "schedule"))
    return (str(model.get("name", "?")), str(data.get("dataset", DataCfg.dataset)),
            str(schedule.get("epochs", ScheduleCfg.epochs)))


def table():
    """The recipes known by name and the file each comes from (edgecnn recipes); one broken file of the user's
    does not hide the others."""
    from rich.table import Table

    t = Table(title="recipes: edgecnn train NAME (or a PATH.yaml of your own)", caption=catalog.where("recipes"))
    for col in ("name", "model", "dataset", "epochs", "from"):
        t.add_column(col)
    for entry in catalog.entries("recipes").values():
        t.add_row(entry.name, *summary(entry.path), entry.origin)
    return t
