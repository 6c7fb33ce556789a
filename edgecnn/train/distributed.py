"""Data-parallel training with PyTorch's own engine: torchrun launches the ranks, DistributedDataParallel
averages the gradients (gloo on CPU, nccl on CUDA), DistributedSampler shards each epoch.

    torchrun --nproc-per-node 2 -m edgecnn train RECIPE.yaml      # or: edgecnn train RECIPE.yaml --nproc 2

Every rank runs the same code; `World` says which rank this is and does the few collectives the loop needs
(sums of metrics, one object from rank 0, everyone's RNG state). Rank 0 alone prints and writes files.
"""

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from edgecnn.core.errors import EdgecnnError

TIMEOUT_ENV = "EDGECNN_DIST_TIMEOUT"  # seconds a rank waits for the others (joining, each collective)
PEER_LOST = "lost contact with the other ranks"


class PeerLost(EdgecnnError):
    """A collective failed because another rank is gone: that rank's failure is the one to report."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.size > 1:
            dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, by rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (evaluation: the shares cover all n exactly once)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def wrap(self, model: nn.Module, sync_bn: bool = False) -> nn.Module:
        """The model DistributedDataParallel trains (itself on one rank); SyncBatchNorm when asked."""
        if self.size == 1:
            return model
        if sync_bn:
            if self.device.type != "cuda":
                raise EdgecnnError("distributed.sync_bn: SyncBatchNorm needs CUDA ranks (nccl); on CPU ranks set "
                                   "sync_bn: false (each rank then normalizes with its own batch statistics)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def rank_batch(batch_size: int, lr: float, cfg, size: int) -> tuple[int, float]:
    """(per-rank batch, learning rate) by the recipe's scaling rule: 'global' keeps the global batch
    (batch_size / ranks each) and the rate; 'linear' gives each rank batch_size and scales the rate by the ranks."""
    if cfg.scaling == "linear":
        return batch_size, lr * size
    if batch_size % size:
        raise EdgecnnError(f"schedule.batch_size {batch_size} does not split over {size} ranks: use a multiple "
                           f"of {size}, or distributed.scaling: linear (batch_size per rank, lr x ranks)")
    return batch_size // size, lr


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun (or any env:// launcher) sets them."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgecnnError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)


def _device(name: str | None, local_rank: int, size: int) -> torch.device:
    if size > 1 and name and name.startswith("cuda:"):
        raise EdgecnnError(f"--device {name} under torchrun: every rank takes cuda:LOCAL_RANK; pass --device cuda")
    device = pick_device(name)
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        return datetime.timedelta(seconds=float(raw))
    except ValueError:
        raise EdgecnnError(f"{TIMEOUT_ENV}={raw}: give seconds, e.g. 600") from None


def _join(device: torch.device, rank: int, size: int) -> None:
    timeout = _timeout()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    except (RuntimeError, ValueError) as e:  # a store timeout or a refused connection (several types)
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise EdgecnnError(f"rank {rank} of {size}: the ranks did not meet at {where} within "
                           f"{timeout.total_seconds():g} s ({reason}): start every rank ({TIMEOUT_ENV} sets the wait)"
                           ) from None


@contextlib.contextmanager
def session(device: str | None = None):
    """The World of this process (torchrun's environment, else one rank): joins the process group for
    more than one rank and leaves it afterwards; a collective that fails because a peer died is PeerLost."""
    rank, size, local_rank = env_world()
    world = World(rank, size, local_rank, _device(device, local_rank, size))
    if size == 1:
        yield world
        return
    _join(world.device, rank, size)
    try:
        yield world
        dist.barrier()  # leave together: rank 0 may still be writing
    except RuntimeError as e:  # DistError, or the RuntimeError gloo raises inside backward()
        if not isinstance(e, dist.DistError) and not any(w in str(e) for w in ("gloo", "NCCL", "ProcessGroup")):
            raise
        raise PeerLost(f"rank {rank}: {PEER_LOST} ({str(e).strip().splitlines()[0][:200]})") from None
    finally:
        dist.destroy_process_group()
