"""Training: recipe -> RUN_DIR with model.pt, recipe.yaml, metrics.json, curves.png.

    recipe.py      recipes/*.yaml -> Recipe dataclasses
    engine.py      the epoch loop (shared with QAT), augmentation, evaluation
    distributed.py several ranks (torchrun, DistributedDataParallel); launch.py: --nproc
    resume.py      RUN_DIR.partial.pt, the checkpoint of a run in progress (--resume)
    checkpoint.py  model.pt: weights + what later stages need
    finetune.py    transfer learning: which parts train
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from edgecnn.core.fileio import atomic_dir, write_json
from edgecnn.data import ImageSet, load_split
from edgecnn.core.progress import console
from edgecnn.models import checkpoint
from edgecnn.train import distributed, engine, finetune, recipe as recipe_mod, resume


@dataclass
class Data:
    train: ImageSet
    val: ImageSet
    test: ImageSet


def load_data(recipe, limit: int | None = None) -> Data:
    def cut(ds: ImageSet) -> ImageSet:
        return ds.subset(slice(0, limit)) if limit else ds

    return Data(*(cut(load_split(recipe.data, s)) for s in ("train", "val", "test")))


def build(recipe, num_classes: int, classes: list[str]):
    """The model for a recipe, with fine-tuning applied: (model, spec, new parameter names)."""
    spec = checkpoint.model_spec(recipe, num_classes, classes)
    model = checkpoint.build_model(spec)
    new = []
    if recipe.finetune:
        new = finetune.load_pretrained(model, recipe.finetune.run, recipe.model.name)
        finetune.freeze(model, recipe.finetune.mode, recipe.finetune.last_n)
    return model, spec, new


@dataclass
class Setup:
    """What one rank trains with: the model (on its device), optimizer, scheduler, augmentation generator."""

    model: torch.nn.Module
    spec: dict
    opt: torch.optim.Optimizer
    sched: object
    gen: torch.Generator
    batch: int  # per rank


def setup(recipe, data: Data, world: distributed.World, epochs: int) -> Setup:
    """The same model on every rank (seeded), the optimizer and schedule for the per-rank batch."""
    torch.manual_seed(recipe.seed)
    model, spec, _ = build(recipe, len(data.train.classes), data.train.classes)
    model.to(world.device, memory_format=torch.channels_last)  # 1.3-2.3x faster depthwise training on CPU
    batch, lr = distributed.rank_batch(recipe.schedule.batch_size, recipe.optim.lr, recipe.distributed, world.size)
    opt = engine.make_optimizer(model, recipe.optim, lr)
    steps = epochs * engine.steps_per_epoch(len(data.train), world, batch)
    sched = engine.make_scheduler(opt, recipe.schedule, steps, lr)
    torch.manual_seed(recipe.seed + world.rank)  # dropout: each rank its own draws
    return Setup(model, spec, opt, sched, torch.Generator().manual_seed(recipe.seed + world.rank), batch)


def fit(recipe, data: Data, world: distributed.World, epochs: int, *, out=None, run: dict | None = None,
        state: dict | None = None):
    """Train (continuing `state`, a partial checkpoint) and return (model on CPU, spec, per-epoch history).
    With `out`, rank 0 rewrites OUT.partial.pt after every epoch; `run` holds what it records besides, and
    its train_seconds (time spent before this session) is kept up to date."""
    t0, run = time.perf_counter(), run if run is not None else {"train_seconds": 0.0}
    before = run["train_seconds"]
    s = setup(recipe, data, world, epochs)
    history = []
    if state:
        resume.restore(state, world, model=s.model, opt=s.opt, sched=s.sched, gen=s.gen)
        history = state["history"]

    def checkpoint_epoch(done: list[dict]) -> None:
        run["train_seconds"] = before + time.perf_counter() - t0
        rngs = world.gather(resume.rng_state(s.gen, world.device))
        if world.main and out is not None:
            resume.save(out, {**run, "history": done}, model=s.model, opt=s.opt, sched=s.sched, rngs=rngs)

    history = engine.run_epochs(world.wrap(s.model, recipe.distributed.sync_bn), data.train, data.val, recipe,
                                opt=s.opt, sched=s.sched, world=world, epochs=epochs, gen=s.gen, batch=s.batch,
                                history=history, on_epoch=checkpoint_epoch)
    return s.model.cpu().eval(), s.spec, history


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.plot(ep, [h["train_top1"] for h in history], label="train")
    b.plot(ep, [h["val_top1"] for h in history], label="val")
    b.set(xlabel="epoch", ylabel="top-1 %", title="accuracy")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(recipe, out: str | Path, *, epochs: int | None = None, limit: int | None = None,
          device: str | None = None) -> dict | None:
    """Train `recipe` into RUN_DIR `out` (written atomically when the run completes); returns its metrics.

    Under torchrun every rank calls this; rank 0 writes and returns the metrics, the others return None.
    A killed run continues with resume(out)."""
    resolved = recipe.to_dict()
    resolved["schedule"]["epochs"] = epochs or recipe.schedule.epochs
    with distributed.session(device) as world:
        if world.main and resume.partial_path(out).exists():
            console.print(f"note: {resume.partial_path(out)} holds an interrupted run; starting over "
                          f"(edgecnn train --resume {out} continues it)")
        return _run(resolved, out, world, limit=limit)


def resume_run(out: str | Path, *, device: str | None = None) -> dict | None:
    """Continue the interrupted run of RUN_DIR `out` from its last completed epoch (see train.resume)."""
    with distributed.session(device) as world:
        state = world.broadcast(resume.load(out) if world.main else None)
        return _run(state["recipe"], out, world, limit=state["limit"], state=state)


def _run(resolved: dict, out, world: distributed.World, *, limit: int | None, state: dict | None = None):
    recipe = recipe_mod.parse(resolved, "the run's recipe")
    epochs = resolved["schedule"]["epochs"]
    data = load_data(recipe, limit)
    run = {"recipe": resolved, "limit": limit, "world_size": world.size,
           "train_seconds": state["train_seconds"] if state else 0.0,
           "resumed_at": [*state["resumed_at"], state["epoch"]] if state else []}
    model, spec, history = fit(recipe, data, world, epochs, out=out, run=run, state=state)
    if not world.main:
        return None
    metrics = _metrics(recipe, data, model, history, world=world, run=run)
    with atomic_dir(out) as tmp:
        checkpoint.save(tmp / "model.pt", model, spec)
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        write_json(tmp / "metrics.json", metrics)
        plot_curves(history, tmp / "curves.png")
    resume.partial_path(out).unlink(missing_ok=True)
    return metrics


def _metrics(recipe, data: Data, model, history: list[dict], *, world: distributed.World, run: dict) -> dict:
    test = engine.evaluate(model, data.test, recipe.data.mean, recipe.data.std, device=torch.device("cpu"))
    batch, _ = distributed.rank_batch(recipe.schedule.batch_size, 0.0, recipe.distributed, world.size)
    return {"recipe": recipe.name, "model": recipe.model.name, "epochs": history,
            "test_top1": test["top1"], "test_loss": test["loss"], "train_seconds": run["train_seconds"],
            "device": str(world.device), "world_size": world.size, "global_batch": batch * world.size,
            "resumed_at": run["resumed_at"], "train_images": len(data.train), "test_images": len(data.test),
            "torch": torch.__version__}


def eval_run(run_dir: str | Path, limit: int | None = None) -> dict:
    """Re-measure test top-1 of a RUN_DIR with the data settings it was trained with."""
    model, spec = checkpoint.load(run_dir)
    rec = recipe_mod.load(Path(run_dir) / "recipe.yaml")
    test = load_split(rec.data, "test")
    if limit:
        test = test.subset(slice(0, limit))
    return engine.evaluate(model, test, spec["input"]["mean"], spec["input"]["std"], device=torch.device("cpu"))
