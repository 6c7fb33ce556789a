"""The training loop shared by `edgecnn train` and QAT fine-tuning: batches, augmentation, epochs, evaluation."""

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgecnn.core.errors import EdgecnnError
from edgecnn.core.progress import progress_bar
from edgecnn.data import ImageSet
from edgecnn.train.finetune import set_train_mode


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgecnnError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)


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
def evaluate(model: nn.Module, ds: ImageSet, mean, std, *, device, batch_size=512) -> dict:
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(ds), batch_size):
        x = to_tensor(ds.images[i:i + batch_size], mean, std, device)
        y = torch.from_numpy(ds.labels[i:i + batch_size]).to(device)
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    n = max(1, len(ds))
    return {"loss": loss / n, "top1": 100.0 * correct / n}


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg, steps: int, lr: float):
    if cfg.name == "onecycle" and steps * cfg.warmup_pct >= 2:  # shorter runs (a --limit trial): constant
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=cfg.warmup_pct)
    if cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def train_epoch(model, data: ImageSet, recipe, *, opt, sched, device, gen, advance, set_mode=set_train_mode) -> dict:
    """One pass over `data` in shuffled batches (the last partial one dropped); `set_mode` puts the model in
    training mode (plain training keeps frozen BatchNorms in eval; QAT freezes them all)."""
    set_mode(model)
    bs, d = recipe.schedule.batch_size, recipe.data
    order = torch.randperm(len(data), generator=gen).numpy()
    total, correct, loss_sum = 0, 0, 0.0
    for i in range(0, max(1, len(order) - bs + 1), bs):  # drop the last partial batch
        idx = np.sort(order[i:i + bs])
        x = augment(to_tensor(data.images[idx], d.mean, d.std, device), recipe.augment, gen)
        y = torch.from_numpy(data.labels[idx]).to(device)
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=recipe.optim.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += len(y)
        correct += (out.argmax(1) == y).sum().item()
        loss_sum += loss.item() * len(y)
        advance(len(y), f"loss {loss_sum / total:.3f}")
    return {"train_loss": loss_sum / total, "train_top1": 100.0 * correct / total}


def run_epochs(model, train_set: ImageSet, val_set: ImageSet, recipe, *, opt, sched, device, epochs: int, gen,
               label: str = "epoch", set_mode=set_train_mode) -> list[dict]:
    """`epochs` passes of train_epoch, each followed by val loss and top-1; one progress bar per epoch."""
    bs, d = recipe.schedule.batch_size, recipe.data
    history = []
    with progress_bar() as bar:
        for epoch in range(1, epochs + 1):
            task = bar.add_task(f"{label} {epoch}/{epochs}", total=len(train_set) // bs * bs or len(train_set), info="")
            t0 = time.perf_counter()
            row = train_epoch(model, train_set, recipe, opt=opt, sched=sched, device=device, gen=gen,
                              advance=lambda n, info: bar.update(task, advance=n, info=info), set_mode=set_mode)
            val = evaluate(model, val_set, d.mean, d.std, device=device)
            row = {"epoch": epoch, **row, "val_loss": val["loss"], "val_top1": val["top1"],
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            history.append(row)
            bar.update(task, visible=False)
            bar.console.print(f"{label} {epoch}/{epochs}: train loss {row['train_loss']:.3f}, "
                              f"val top-1 {val['top1']:.2f}% ({row['seconds']:.0f} s)")
    return history
