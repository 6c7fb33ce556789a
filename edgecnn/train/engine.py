"""The training loop shared by `edgecnn train` and QAT fine-tuning: batches, augmentation, epochs, evaluation,
on one rank or many (edgecnn.train.distributed)."""

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from edgecnn.core.progress import progress_bar
from edgecnn.data import ImageSet
from edgecnn.train.distributed import World, unwrap
from edgecnn.train.finetune import set_train_mode


def to_tensor(images: np.ndarray, mean, std, device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device, torch.float32).div_(255.0)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, cfg, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding, on a whole batch."""
    if cfg.hflip:
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    p = cfg.crop_padding
    if p:
        h, w = x.shape[2:]
        padded = F.pad(x, (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2, len(x)), generator=gen).tolist()
        x = torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx))])
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(model: nn.Module, ds: ImageSet, mean, std, *, device, batch_size=512, world=None) -> dict:
    """Loss and top-1 on `ds`; with a World of several ranks each takes its share and the sums are reduced."""
    model.eval()
    if world is not None and world.size > 1:
        ds = ds.subset(world.shard(len(ds)))
    loss, correct = 0.0, 0
    for i in range(0, len(ds), batch_size):
        x = to_tensor(ds.images[i:i + batch_size], mean, std, device)
        y = torch.from_numpy(ds.labels[i:i + batch_size]).to(device)
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    n = len(ds)
    if world is not None:
        loss, correct, n = world.sum(loss, correct, n)
    n = max(1, n)
    return {"loss": loss / n, "top1": 100.0 * correct / n}


def make_optimizer(model: nn.Module, cfg, lr: float | None = None) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr = lr or cfg.lr
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg, steps: int, lr: float):
    if cfg.name == "onecycle" and steps * cfg.warmup_pct >= 2:  # shorter runs (a --limit trial): constant
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=cfg.warmup_pct)
    if cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def epoch_order(n: int, world: World, seed: int, epoch: int) -> np.ndarray:
    """This rank's training samples for `epoch`: DistributedSampler's shuffle (seeded by seed + epoch, so a
    resumed run draws the same), equal shares, the few left over dropped."""
    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), np.int64, count=len(sampler))


def steps_per_epoch(n: int, world: World, batch: int) -> int:
    """Optimizer steps in one epoch of n samples: full per-rank batches (one partial one if none is full)."""
    return max(1, n // world.size // batch)


def train_epoch(model, data: ImageSet, recipe, *, opt, sched, world: World, gen, epoch: int, batch: int, advance,
                set_mode=set_train_mode) -> dict:
    """One pass over this rank's share of `data` in batches of `batch` (the last partial one dropped);
    `set_mode` puts the model in training mode (plain training keeps frozen BatchNorms in eval; QAT freezes
    them all). Loss and top-1 are over every rank's samples."""
    set_mode(model)
    d = recipe.data
    order = epoch_order(len(data), world, recipe.seed, epoch)
    total, correct, loss_sum = 0, 0, 0.0
    for i in range(0, max(1, len(order) - batch + 1), batch):  # drop the last partial batch
        idx = np.sort(order[i:i + batch])
        x = augment(to_tensor(data.images[idx], d.mean, d.std, world.device), recipe.augment, gen)
        y = torch.from_numpy(data.labels[idx]).to(world.device)
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=recipe.optim.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += len(y)
        correct += (out.argmax(1) == y).sum().item()
        loss_sum += loss.item() * len(y)
        advance(len(y) * world.size, f"loss {loss_sum / total:.3f}")
    loss_sum, correct, total = world.sum(loss_sum, correct, total)
    return {"train_loss": loss_sum / total, "train_top1": 100.0 * correct / total}


def run_epochs(model, train_set: ImageSet, val_set: ImageSet, recipe, *, opt, sched, world: World, epochs: int,
               gen, batch: int, history=(), label: str = "epoch", set_mode=set_train_mode, on_epoch=None) -> list[dict]:
    """The epochs after those in `history`, each followed by val loss and top-1, then `on_epoch(history)`
    (every rank: a checkpoint); rank 0 shows one progress bar per epoch."""
    d, history = recipe.data, list(history)
    per_epoch = steps_per_epoch(len(train_set), world, batch) * batch * world.size
    with progress_bar(disable=not world.main) as bar:
        for epoch in range(len(history) + 1, epochs + 1):
            task = bar.add_task(f"{label} {epoch}/{epochs}", total=per_epoch, info="")
            t0 = time.perf_counter()
            row = train_epoch(model, train_set, recipe, opt=opt, sched=sched, world=world, gen=gen, epoch=epoch,
                              batch=batch, advance=lambda n, info: bar.update(task, advance=n, info=info),
                              set_mode=set_mode)
            val = evaluate(unwrap(model), val_set, d.mean, d.std, device=world.device, world=world)
            history.append({"epoch": epoch, **row, "val_loss": val["loss"], "val_top1": val["top1"],
                            "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            if on_epoch:
                on_epoch(history)
            bar.update(task, visible=False)
            if world.main:
                bar.console.print(f"{label} {epoch}/{epochs}: train loss {history[-1]['train_loss']:.3f}, "
                                  f"val top-1 {val['top1']:.2f}% ({history[-1]['seconds']:.0f} s)")
    return history
