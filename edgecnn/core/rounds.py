"""Interleaved rounds: several subjects timed in alternation, in a new random order each round, so that a busy
moment of a shared machine hits them all alike. The one timing method of `edgecnn bench --rounds` and of the
benchmarks' side-by-side tables (benchmarks/tvm_vs_ort.py, int8.py, foreign_models.py).

A subject is a callable taking no argument (one inference: `functools.partial(runner.run, x)`).
"""

import random
import time
from collections.abc import Callable
from statistics import median

WARMUP_RUNS = 3  # untimed runs of a subject at the start of each of its rounds (caches, thread pool wake-up)
MIN_RUNS = 5  # timed runs of a subject in a round at least, however slow it is
MAX_RUNS = 5000  # and at most, however fast (a 10 us model in a 0.3 s round)


def time_round(run: Callable[[], object], seconds: float, *, runs: int | None = None) -> list[float]:
    """One subject's round: back-to-back runs over about `seconds` (at least MIN_RUNS; exactly `runs` when
    given), after WARMUP_RUNS untimed ones; each run's time in ms."""
    for _ in range(WARMUP_RUNS):
        run()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < (runs or MIN_RUNS) or (not runs and time.perf_counter() < end and len(times) < MAX_RUNS):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def interleaved(subjects: dict[str, Callable[[], object]], *, rounds: int, seconds: float = 0.0,
                runs: int | None = None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every subject once a round (time_round: `seconds` of runs, or `runs` runs), in a new random order each
    round (seeded by the round: reproducible). Returns (each round's median ms per subject, every run's ms per
    subject)."""
    medians: dict[str, list[float]] = {k: [] for k in subjects}
    times: dict[str, list[float]] = {k: [] for k in subjects}
    order = list(subjects)
    for r in range(rounds):
        random.Random(r).shuffle(order)
        for key in order:
            these = time_round(subjects[key], seconds, runs=runs)
            medians[key].append(float(median(these)))
            times[key] += these
    return medians, times


def round_ratios(medians: dict[str, list[float]], base: str) -> dict[str, list[float]]:
    """Each other subject's round median over `base`'s in the same round (0.5: twice as fast as base)."""
    return {k: [a / b for a, b in zip(v, medians[base])] for k, v in medians.items() if k != base}

