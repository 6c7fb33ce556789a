"""`--nproc N`: run an edgecnn command on N local ranks under torchrun, from this process.

This is torchrun itself (torch.distributed.run: its argument parser, rendezvous and elastic agent), called
in-process so that a failed launch ends as one line: the rank that failed first and why, or the rendezvous
that did not form. A rank reports its own error through torchrun's error file (TORCHELASTIC_ERROR_FILE).
"""

import logging
import os
from pathlib import Path

from edgecnn.core.errors import LAUNCHER_ENV, EdgecnnError

AGENT_SIGNALS = ("SIGTERM",)  # what the agent sends the surviving ranks when one fails


def torchrun_args(argv: list[str], *, nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
                  rdzv_timeout: float = 600.0) -> list[str]:
    """torchrun's command line for `python -m edgecnn ARGV` on `nproc` ranks of this node."""
    args = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", "--max-restarts=0"]
    if rdzv_endpoint:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                 f"--rdzv-conf=join_timeout={rdzv_timeout:g}"]
    elif nnodes > 1:
        raise EdgecnnError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT, the same on every node")
    else:
        args.append("--standalone")
    return [*args, "-m", "edgecnn", *map(str, argv)]


def _environment(nproc: int) -> None:
    """What the ranks inherit: this edgecnn on their path, a fair share of the cores, errors to us."""
    import edgecnn

    here = str(Path(edgecnn.__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // nproc)))
    os.environ[LAUNCHER_ENV] = "1"  # the ranks hand their errors to us
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)  # we say what failed, in one line


def root_cause(failures: dict) -> str:
    """One line for a failed group of ranks: a rank's own error first, then a rank killed by a signal
    the agent did not send, then any other exit; a rank that only lost its peers comes last."""
    from edgecnn.train.distributed import PEER_LOST

    def rank_of(item):
        rank, f = item
        own = f.exitcode > 0 and f.message and not f.message.startswith("To enable") and PEER_LOST not in f.message
        killed = f.exitcode < 0 and f.signal_name() not in AGENT_SIGNALS
        return (0 if own else 1 if killed else 2 if PEER_LOST not in (f.message or "") else 3, rank)

    rank, f = min(failures.items(), key=rank_of)
    if f.exitcode < 0:
        return f"rank {rank} (pid {f.pid}) was killed by {f.signal_name()}"
    if f.message and not f.message.startswith("To enable"):
        return f"rank {rank}: {f.message.removeprefix('error: ')}"
    return f"rank {rank} (pid {f.pid}) exited with code {f.exitcode} (its messages are above)"


def launch(argv: list[str], *, nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
           rdzv_timeout: float = 600.0, after: str = "") -> None:
    """Run `edgecnn ARGV` on nproc ranks here (and nnodes nodes meeting at rdzv_endpoint); `after` ends
    the error line (what was left behind, how to resume)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError

    if nproc < 1 or nnodes < 1:
        raise EdgecnnError("--nproc and --nnodes must be at least 1")
    args = torchrun_args(argv, nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, rdzv_timeout=rdzv_timeout)
    _environment(nproc)
    tail = f"; {after}" if after else ""
    try:
        torchrun.run(torchrun.parse_args(args))
    except ChildFailedError as e:
        raise EdgecnnError(root_cause(e.failures) + tail) from None
    except RendezvousError as e:  # the timeout, or a closed or unreachable rendezvous
        raise EdgecnnError(f"the rendezvous at {rdzv_endpoint} did not form within {rdzv_timeout:g} s "
                           f"({type(e).__name__}): start the command on all {nnodes} nodes with the same "
                           f"--rdzv-endpoint{tail}") from None
    except SignalException as e:
        raise EdgecnnError(f"interrupted ({e.sigval.name}): the ranks were stopped{tail}") from None


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", 1)) > 1
