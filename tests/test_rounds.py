"""edgecnn.core.rounds: every subject once a round, a new random order each round, runs and medians per round."""

import statistics

from edgecnn.core import rounds


def test_every_subject_runs_once_a_round_in_new_orders():
    log: list[str] = []
    subjects = {name: (lambda name=name: log.append(name)) for name in "abcd"}
    medians, times = rounds.interleaved(subjects, rounds=6, runs=2)
    per_call = rounds.WARMUP_RUNS + 2  # a subject's calls in one round: warm-up, then the timed runs
    blocks = [log[i] for i in range(0, len(log), per_call)]
    orders = [tuple(blocks[i:i + 4]) for i in range(0, len(blocks), 4)]
    assert len(orders) == 6 and all(sorted(o) == list("abcd") for o in orders)
    assert len(set(orders)) > 1  # the order changes between rounds
    assert all(len(medians[k]) == 6 and len(times[k]) == 12 for k in subjects)
    assert all(m == statistics.median(times["a"][2 * i:2 * i + 2]) for i, m in enumerate(medians["a"]))


def test_seconds_bound_a_round_and_ratios_pair_rounds():
    medians, times = rounds.interleaved({"x": lambda: None}, rounds=2, seconds=0.01)
    assert len(medians["x"]) == 2 and len(times["x"]) >= 2 * rounds.MIN_RUNS
    assert rounds.round_ratios({"base": [2.0, 4.0], "other": [1.0, 8.0]}, "base") == {"other": [0.5, 2.0]}
