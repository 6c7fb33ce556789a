"""`edgecnn bench --rpc HOST:PORT --boards N`: one build timed on N boards of a device farm at once.

Each call of the remote loader takes a board from the tracker and holds it until closed, so N calls hold N
different boards; they are timed in parallel threads (each waits on its own board's socket) and the report
lists every board and how far their medians spread.
"""

import concurrent.futures

import numpy as np

from edgecnn.core.errors import EdgecnnError


def check_boards(boards: dict, wanted: int, key: str, address: str) -> None:
    """Refuse --boards N when the key has fewer boards, or fewer free now (a held board would wait forever)."""
    if boards["registered"] < wanted:
        raise EdgecnnError(f"--boards {wanted}: the tracker {address} has {boards['registered']} '{key}' board(s); "
                           f"start more (python -m edgecnn.rpc_server --tracker {address} --key {key}) or ask for "
                           f"--boards {boards['registered']}")
    if boards["free"] < wanted:
        raise EdgecnnError(f"--boards {wanted}: only {boards['free']} of the {boards['registered']} '{key}' boards "
                           f"are free now (the others are in use): try again, or ask for --boards {boards['free']}")


def spread(results: list[dict]) -> dict:
    """Per batch size: each board's p50, their min, median and max, and (max - min) / median in percent."""
    out = {}
    for b in results[0]["batches"]:
        p50 = [r["batches"][b]["p50_ms"] for r in results]
        median = float(np.median(p50))
        out[b] = {"p50_ms": {r["board"]: v for r, v in zip(results, p50)}, "min_ms": min(p50),
                  "median_ms": median, "max_ms": max(p50), "spread_pct": 100.0 * (max(p50) - min(p50)) / median}
    return out


def measure_boards(name: str, load, n: int, plan: dict, *, measure) -> dict:
    """{"boards": each board's `measure` result (edgecnn.bench.measure, with its "board"), "spread": spread()},
    the boards timed at once."""
    from edgecnn.core.progress import progress_bar

    runners = []
    try:
        for _ in range(n):
            runners.append(load())
        held = {r.board for r in runners}
        if len(held) < n:
            raise EdgecnnError(f"the tracker gave {len(held)} different boards for {n} sessions: cannot bench "
                               f"{n} boards at once")
        with progress_bar() as bar, concurrent.futures.ThreadPoolExecutor(n) as pool:
            jobs = [pool.submit(measure, name, lambda r=r: r, plan, False, bar=bar) for r in runners]
            results = [job.result() for job in jobs]
    finally:
        for r in runners:
            r.close()
    return {"boards": results, "spread": spread(results)}
