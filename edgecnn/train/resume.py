"""The checkpoint of a run in progress, RUN_DIR.partial.pt, rewritten after every epoch: model, optimizer,
scheduler, every rank's RNG states, the epochs done (their history), the resolved recipe and options.

`edgecnn train --resume RUN_DIR` continues from it and ends as the uninterrupted run would (the shuffle is
seeded per epoch, the augmentation and dropout generators are restored); RUN_DIR itself appears only when
the run completes, and the partial checkpoint then goes. Tensors and plain types only: weights_only loads it.
"""

from pathlib import Path

import torch

from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_file

FORMAT, VERSION = "edgecnn.resume", 1


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.pt")


def rng_state(gen: torch.Generator, device: torch.device) -> dict:
    """This rank's random state: the global generator (dropout), the augmentation's, CUDA's."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "augment": gen.get_state(), "cuda": cuda}


def set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["augment"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(out: str | Path, run: dict, *, model, opt, sched, rngs: list[dict]) -> None:
    """`run`: recipe (resolved dict), limit, world_size, history, train_seconds, resumed_at."""
    state = {"format": FORMAT, "version": VERSION, **run, "epoch": len(run["history"]),
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs}
    with atomic_file(partial_path(out)) as tmp:
        torch.save(state, tmp)


def load(out: str | Path) -> dict:
    """The partial checkpoint of RUN_DIR `out`, checked; one-line errors naming what to do."""
    path = partial_path(out)
    if not path.exists():
        done = (Path(out) / "metrics.json").exists()
        raise EdgecnnError(f"{out} is a finished run: nothing to resume" if done else
                           f"no interrupted run at {out} (no {path.name} beside it): start it with "
                           f"edgecnn train RECIPE.yaml --out {out}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise EdgecnnError(f"{path} is not a loadable checkpoint ({type(e).__name__}): delete it and "
                           "start the run again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise EdgecnnError(f"{path} is not an edgecnn {FORMAT} v{VERSION} checkpoint: delete it and start again")
    return state


def restore(state: dict, world, *, model, opt, sched, gen) -> None:
    """Load a partial checkpoint into this rank's model, optimizer, scheduler and generators."""
    if state["world_size"] != world.size:
        raise EdgecnnError(f"the run was trained on {state['world_size']} ranks, this resume has {world.size}: "
                           f"resume it with --nproc {state['world_size']} (the same shuffle and batches)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"][world.rank], gen, world.device)
