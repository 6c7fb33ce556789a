"""edgecnn tune: search the schedule rules' parameters kernel by kernel, within a budget, into a database.

The default schedules (schedules/) are the starting point and the search space: every rule lists the
parameter sets it can apply (`Rule.space`: register tiles, padding, loop order, threads). A session times
each kernel alone (TVM's time_evaluator, on this CPU or on the boards of an RPC tracker: every free board
of the key times its share of each batch of candidates at once), then spends
its budget (`minutes` of wall clock and/or `trials` candidates) where the time is: it keeps trying the
untried candidates of the kernel that costs the whole model the most (its share of the default build's
measured profile, the VM's per-call instrument; by its time alone x calls on a board), a small batch at a
time, and keeps a candidate only when it beats the kernel's best so far.

A kernel fast alone can be slow in the model (another kernel's data evicted, threads woken differently), so
a session ends with the whole model (model_check, on this CPU or on the first board of the tracker): the
build with every kernel's best and the build with the defaults, timed in interleaved rounds; while the tuned
build is slower, the tuned choices are reverted, those that lose most in the model's profile first (on a
board: by their time alone x calls), until it is not slower (or nothing is left).

A database is a directory:

    tune.json        edgecnn's record: what the schedules are valid for (model sha256, batch, target, the
                     CPU or board they were measured on, TVM version, graph options) and every session
                     (its model_check: default_ms, tuned_ms, final_ms, kept, reverted, lost)
    schedules.json   kernel key -> {name, rule, params, us, default_us, kept}: the best parameters found
                     alone; kept false: the whole-model check reverted them (absent: not checked)

`edgecnn compile --tune-db DIR` applies the kept ones (other kernels get the defaults) after the same checks;
a database whose tuned build lost to the defaults compiles the defaults and says so.
"""

import datetime
import functools
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgecnn.backends.tvm import build, frontend, passes, runner
from edgecnn.backends.tvm.build import require_tvm
from edgecnn.backends.tvm.tunedb import FORMAT, RECORD, SCHEDULES, VERSION, check, expected, host_cpu
from edgecnn.core.errors import EdgecnnError
from edgecnn.core.fileio import atomic_dir, write_json
from edgecnn.core.rounds import interleaved

# The search's constants. None was swept on its own; the kernel timer was chosen with benchmarks/tune_context.py
# (which kernel timing predicts the whole model: results/tune_context.json), the rest are budgets of time.
BATCH = 4  # candidates of one kernel per turn: the next turn may go to another kernel
# a candidate replaces the best only when at least 2% faster (the timings are noisy; a guard, not swept)
KEEP_IF_FASTER = 0.98
CHECK_ROUNDS = 9  # interleaved rounds (default, tuned) of the whole-model check: an odd count, a true median
ROUND_S = 0.15  # seconds of back-to-back model runs per build and round (edgecnn.core.rounds)
BOARD_MIN_RUNS = 3  # on a board (timed by its own clock, not edgecnn.core.rounds): runs a round at least
# one kernel's time (Timer.seconds): the best of KERNEL_REPEATS repeats of KERNEL_NUMBER calls, each repeat at
# least KERNEL_MIN_REPEAT_MS long (TVM's time_evaluator); with the caches flushed, the median of FLUSH_REPEATS
# single calls (MetaSchedule's way; tune_context.json: the sign of the whole model's change right 59% of the
# time flushed, 82% alone, so alone is the default)
KERNEL_NUMBER, KERNEL_REPEATS, KERNEL_MIN_REPEAT_MS, FLUSH_REPEATS = 5, 3, 20, 15
PROFILE_RUNS = 5  # model runs the per-kernel profile takes the best of


def default_db(onnx_path: Path, target: str) -> Path:
    """RUN_DIR/model.onnx -> RUN_DIR/tune-host; other.onnx -> other-tune-host beside it."""
    stem = onnx_path.name.split(".")[0]
    return onnx_path.parent / f"{'' if stem == 'model' else stem + '-'}tune-{target}"


def is_cross(spec: dict) -> bool:
    triple = spec.get("mtriple")
    return bool(triple) and triple.split("-")[0] != require_tvm().target.codegen.llvm_get_system_triple().split("-")[0]


def kernels(mod, spec: dict) -> list[dict]:
    """The lowered model's kernels: name, key, calls in `main`, rule, default parameters, candidates."""
    tvm = require_tvm()
    from edgecnn.backends.tvm import schedules
    from edgecnn.backends.tvm.cpu import cpu_info

    cpu, calls = cpu_info(spec), call_counts(mod)
    out = []
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            rule, ctx = schedules.analyse(func)
            out.append({"name": gv.name_hint, "key": schedules.func_key(func), "func": func,
                        "calls": calls.get(gv.name_hint, 1), "rule": rule.name if rule else "none",
                        "default": rule.default(ctx, cpu) if rule else {},
                        "space": rule.space(ctx, cpu) if rule else []})
    return out


def call_counts(mod) -> dict[str, int]:
    """How often `main` calls each PrimFunc."""
    from tvm import relax

    counts: dict[str, int] = {}

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.call_tir":
            counts[e.args[0].name_hint] = counts.get(e.args[0].name_hint, 0) + 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


class Timer:
    """Times one scheduled kernel alone: built for the target, run on this CPU or on a board's."""

    def __init__(self, spec: dict, session=None, cross_compiler: str | None = None, board: str = "local"):
        self.tvm, self.spec, self.session, self.cross, self.board = require_tvm(), spec, session, cross_compiler, board
        self.device = session.cpu() if session is not None else self.tvm.cpu()
        self.uploads = self.timed = 0

    def compile(self, func):
        tvm = self.tvm
        return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                           target=tvm.target.Target(self.spec))

    def seconds(self, func, lib=None, *, flush: bool = False) -> float:
        """The kernel's best time of KERNEL_REPEATS repeats (`lib`: the kernel compiled already). flush: median of
        FLUSH_REPEATS single runs, the caches flushed of every argument but the first (the input) before each, as
        MetaSchedule times."""
        tvm = self.tvm
        mod = self._load(lib or self.compile(func))
        self.timed += 1
        rng = np.random.default_rng(0)
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)), self.device)
                for p in func.params]
        if flush:
            evaluate = mod.time_evaluator("main", self.device, number=1, repeat=FLUSH_REPEATS,
                                          f_preproc="cache_flush_cpu_non_first_arg")
            return float(np.median(evaluate(*args).results))
        evaluate = mod.time_evaluator("main", self.device, number=KERNEL_NUMBER, repeat=KERNEL_REPEATS,
                                      min_repeat_ms=KERNEL_MIN_REPEAT_MS)
        return float(min(evaluate(*args).results))

    def _load(self, lib):
        return lib.mod if self.session is None else self.upload(lib)

    def upload(self, lib):
        """`lib` (a kernel, or a whole model's executable) exported, sent to the board and loaded there."""
        import tempfile

        # a new name each time: overwriting a library the board has loaded would crash its server
        self.uploads += 1
        name = f"edgecnn-tune-{self.uploads}.so"
        with tempfile.TemporaryDirectory(prefix="edgecnn-tune-") as tmp:
            path = Path(tmp) / name
            fcompile = tvm_cross(self.cross) if self.cross else None
            lib.export_library(str(path), **({"fcompile": fcompile} if fcompile else {}))
            self.session.upload(str(path), target=name)
        return self.session.load_module(name)


def tvm_cross(compiler: str):
    from tvm.support import cc

    return cc.cross_compiler(compiler)


def scheduled(kernel: dict, params: dict, cpu):
    """The kernel's PrimFunc under `params` (None when its rule cannot apply them)."""
    from edgecnn.backends.tvm import schedules

    func, rule, used = schedules.schedule_func(kernel["func"], cpu, params)
    return func if rule == kernel["rule"] and not used.get("errors") else None


class Search:
    """The budgeted search over all kernels: best parameters and times so far, the candidates left."""

    def __init__(self, found: list[dict], cpu, timers: list[Timer], previous: dict, *,
                 profile: dict | None = None):
        """profile: kernel name -> microseconds per model run in the default build (None: weigh by alone x calls)."""
        self.kernels, self.cpu, self.timers, self.profile = found, cpu, timers, profile
        self.best = {k["key"]: dict(previous.get(k["key"], {})) for k in found}
        rng = random.Random(0)
        self.left = {}
        for k in found:
            best, reverted = self.best[k["key"]], None
            if best.get("kept") is False:  # lost in the whole model last time: search on from the default
                reverted = best["params"]
                best.update(params=k["default"], us=best["default_us"], kept=True)
            tried = [{**k["default"], **(t or {})} for t in (best.get("params"), k["default"], reverted)]
            cands = [c for c in k["space"] if {**k["default"], **c} not in tried]
            rng.shuffle(cands)
            self.left[k["key"]] = cands
        self.trials = self.failed = 0
        self.per_kernel: dict[str, int] = {}  # kernel name -> candidates tried this session

    def measure_start(self, deadline: float) -> None:
        """Each kernel at its default and at its best so far (a previous session's), once."""
        todo = [k for k in self.kernels if "default_us" not in self.best[k["key"]]]
        for i in range(0, len(todo), len(self.timers)):
            if time.monotonic() > deadline:
                return
            group = todo[i:i + len(self.timers)]
            times = self.us([scheduled(k, k["default"], self.cpu) or k["func"] for k in group])
            for k, t in zip(group, times):
                self.best[k["key"]].update(name=k["name"], rule=k["rule"], params=k["default"], us=t, default_us=t)

    def us(self, funcs: list) -> list[float]:
        """Microseconds of each function: compiled here, timed on the timers (boards) in parallel."""
        libs = [self.timers[0].compile(f) for f in funcs]
        shares = [list(range(j, len(funcs), len(self.timers))) for j in range(len(self.timers))]

        def run(j: int) -> list[tuple[int, float]]:
            return [(i, 1e6 * self.timers[j].seconds(funcs[i], libs[i])) for i in shares[j]]

        with ThreadPoolExecutor(len(self.timers)) as pool:
            done = dict(pair for part in pool.map(run, range(len(self.timers))) for pair in part)
        return [done[i] for i in range(len(funcs))]

    def model_us(self) -> float:
        """Sum of every kernel's best time times its calls: the tuner's estimate of the model's kernel time."""
        return sum(self.best[k["key"]].get("us", 0.0) * k["calls"] for k in self.kernels)

    def cost(self, kernel: dict) -> float:
        """What the kernel costs the model now: its profiled share scaled by how far its best beats its default."""
        best = self.best[kernel["key"]]
        if self.profile is None or kernel["name"] not in self.profile:
            return best["us"] * kernel["calls"]
        return self.profile[kernel["name"]] * best["us"] / max(best.get("default_us", best["us"]), 1e-9)

    def next_kernel(self) -> dict | None:
        """The kernel with candidates left that costs the model the most."""
        open_ = [k for k in self.kernels if self.left[k["key"]] and "us" in self.best[k["key"]]]
        return max(open_, key=self.cost, default=None)

    def step(self, kernel: dict) -> None:
        """Try up to BATCH untried candidates of `kernel`; keep one that is clearly faster."""
        best, left = self.best[kernel["key"]], self.left[kernel["key"]]
        tried = [{**kernel["default"], **left.pop()} for _ in range(min(max(BATCH, len(self.timers)), len(left)))]
        self.trials += len(tried)
        self.per_kernel[kernel["name"]] = self.per_kernel.get(kernel["name"], 0) + len(tried)
        funcs = [(full, scheduled(kernel, full, self.cpu)) for full in tried]
        self.failed += sum(f is None for _, f in funcs)
        funcs = [(full, f) for full, f in funcs if f is not None]
        for (full, _), t in zip(funcs, self.us([f for _, f in funcs])):
            if t < best["us"] * KEEP_IF_FASTER:
                best.update(params=full, us=t)


class ModelTimer:
    """Whole-model builds of the lowered model, run on this CPU or on a board (`board`: a Timer holding an RPC
    session, which times them with the board's own clock): timed, and profiled where they run here."""

    def __init__(self, mod, spec: dict, found: list[dict], board: "Timer | None" = None):
        self.tvm, self.mod, self.spec = require_tvm(), mod, spec
        self.names = {k["key"]: k["name"] for k in found}
        self.board = board if board is not None and board.session is not None else None
        self.device = self.board.device if self.board else self.tvm.cpu()
        self.builds = 0
        self.input = None

    def vm(self, params: dict, exec_mode: str = "compiled"):
        """The model scheduled with `params` (kernel key -> parameters; others: defaults), built and loaded."""
        tvm = self.tvm
        from tvm import relax

        copy = tvm.IRModule(dict(self.mod.functions_items()), attrs=self.mod.attrs,
                            global_infos=self.mod.global_infos)
        scheduled_mod, _ = build.schedule(copy, self.spec, params)
        with tvm.transform.PassContext(opt_level=3):
            ex = relax.build(scheduled_mod, tvm.target.Target(self.spec), exec_mode=exec_mode)
        self.builds += 1
        vm = relax.VirtualMachine(self.board.upload(ex) if self.board else ex, self.device)
        if self.input is None:
            rng = np.random.default_rng(0)
            self.input = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.ty.shape])
                                             .astype(str(p.ty.dtype)), self.device) for p in self.mod["main"].params]
        return vm

    def profile(self, params: dict, runs: int = PROFILE_RUNS) -> dict[str, float]:
        """Kernel name -> microseconds per model run (best of `runs`), timed around each call by the VM's
        instrument (bytecode: the compiled VM calls no instrument)."""
        vm = self.vm(params, "bytecode")
        times: dict[str, list[float]] = {}
        started: dict[str, int] = {}

        def instrument(func, name, before, ret, *args):
            if name in self.names.values() or not name.startswith("vm."):
                if before:
                    started[name] = time.perf_counter_ns()
                else:
                    times.setdefault(name, []).append((time.perf_counter_ns() - started[name]) / 1e3)
            return 0

        vm.set_instrument(instrument)
        vm["main"](*self.input)  # warm-up
        best: dict[str, float] = {}
        for _ in range(runs):
            times.clear()
            vm["main"](*self.input)
            for name, ts in times.items():
                best[name] = min(best.get(name, float("inf")), sum(ts))
        return best

    def interleaved_ms(self, vms: dict, rounds: int = CHECK_ROUNDS) -> dict[str, float]:
        """Each build's median over `rounds` of its runs' median in the round (edgecnn.core.rounds: builds in a
        new random order each round, so that a busy moment hits both alike; on a board: _interleaved_on_board)."""
        if self.board:
            return self._interleaved_on_board(vms, rounds)
        medians, _ = interleaved({name: functools.partial(vm["main"], *self.input) for name, vm in vms.items()},
                                 rounds=rounds, seconds=ROUND_S)
        return {name: float(np.median(v)) for name, v in medians.items()}


    def _interleaved_on_board(self, vms: dict, rounds: int) -> dict[str, float]:
        """interleaved_ms on the board: each run timed by the board's clock (TVM's time_evaluator), so the
        network's round trips are not in the numbers."""
        def median_ms(vm, runs: int) -> float:  # TVM discards one extra first call as warm-up
            timer = vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=runs)
            return float(np.median(timer("main").results)) * 1e3

        for vm in vms.values():
            vm.set_input("main", *self.input)
        first_ms = median_ms(next(iter(vms.values())), BOARD_MIN_RUNS)
        runs = max(BOARD_MIN_RUNS, int(ROUND_S * 1e3 / max(first_ms, 1e-6)))
        per_round: dict[str, list[float]] = {name: [] for name in vms}
        order = list(vms)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                per_round[name].append(median_ms(vms[name], runs))
        return {name: float(np.median(v)) for name, v in per_round.items()}


def model_check(mt: ModelTimer, search: Search, default_profile: dict[str, float] | None) -> dict:
    """Keep a kernel's tuned parameters only where the whole model is not slower with them.

    The tuned set (every kernel whose best differs from its default) and the defaults are timed in interleaved
    rounds; until it is not slower in two looks in a row, tuned choices are reverted (1, 2 more, 4 more, ...):
    first those slower in the tuned build's profile than in the defaults' (largest loss first), then the rest
    (smallest gain first). Marks `kept` on every kernel of search.best (False: reverted); returns the session's
    record."""
    start = time.monotonic()
    by_key = {k["key"]: k for k in search.kernels}
    tuned = {key: b["params"] for key, b in search.best.items()
             if "params" in b and key in by_key and b["params"] != by_key[key]["default"]}
    for b in search.best.values():
        b["kept"] = True  # a kernel at its default parameters is kept as it is
    if not tuned:
        return {"tuned": 0, "kept": 0, "reverted": [], "lost": False, "builds": 0,
                "minutes": round((time.monotonic() - start) / 60, 3)}
    name = {key: by_key[key]["name"] for key in tuned}
    if default_profile is None:  # on a board: no per-kernel profile there, so each choice's change alone x calls
        profile = default_profile = {}
        change = {key: (search.best[key]["us"] - search.best[key]["default_us"]) * by_key[key]["calls"]
                  for key in tuned}
    else:
        profile = mt.profile(tuned)
        change = {key: profile.get(name[key], 0.0) - default_profile.get(name[key], 0.0) for key in tuned}
    order = sorted(tuned, key=lambda key: -change[key])  # the largest loss first, the largest gain last
    default_vm = mt.vm({})
    keep, reverted, steps = dict(tuned), [], []

    def look(tuned_vm) -> dict:
        times = mt.interleaved_ms({"default": default_vm, "tuned": tuned_vm})
        steps.append({"reverted": len(reverted), **{f"{k}_ms": round(v, 4) for k, v in times.items()}})
        return times

    tuned_vm = mt.vm(keep)
    times = first = look(tuned_vm)
    while keep:
        # not slower twice in a row (a second, independent look): one quiet moment does not decide
        if times["tuned"] <= times["default"]:
            times = look(tuned_vm)
            if times["tuned"] <= times["default"]:
                break
        for key in order[len(reverted):2 * len(reverted) + 1]:
            keep.pop(key)
            reverted.append(key)
        if keep:
            tuned_vm = mt.vm(keep)
            times = look(tuned_vm)
    if not keep:
        times = {"default": times["default"], "tuned": times["default"]}
    for key in reverted:
        search.best[key]["kept"] = False
    return {"tuned": len(tuned), "kept": len(keep), "lost": not keep,
            "default_ms": round(first["default"], 4), "tuned_ms": round(first["tuned"], 4),
            "final_ms": round(times["tuned"], 4), "final_default_ms": round(times["default"], 4),
            "reverted": [{"name": name[k], "in_model_us": {"default": round(default_profile.get(name[k], 0.0), 2),
                                                           "tuned": round(profile.get(name[k], 0.0), 2)},
                          "alone_us": {"default": search.best[k].get("default_us"), "tuned": search.best[k].get("us")}}
                         for k in reverted],
            "steps": steps, "builds": mt.builds, "minutes": round((time.monotonic() - start) / 60, 3)}


def check_request(onnx_path: Path, tgt, trials: int | None, minutes: float | None) -> None:
    if trials is None and minutes is None:
        raise EdgecnnError("give the tuning budget: --minutes M and/or --trials N")
    if (trials is not None and trials < 1) or (minutes is not None and minutes <= 0):
        raise EdgecnnError("--trials must be at least 1 and --minutes above 0")
    if not onnx_path.is_file():
        raise EdgecnnError(f"no ONNX model at {onnx_path}")
    if tgt.backend != "tvm":
        raise EdgecnnError(f"target '{tgt.name}' uses {tgt.backend}: edgecnn tune tunes TVM targets")
    require_tvm()


def board_timers(spec: dict, rpc: str | None, key: str | None, *, timeout: float, cross: str | None) -> list[Timer]:
    """This machine's CPU, or every free board of the key on the tracker (at least one: it waits for one);
    a cross target is timed on its boards only."""
    if not rpc:
        if is_cross(spec):
            raise EdgecnnError(f"a {spec['mtriple']} target is tuned on the board itself: pass --rpc "
                               "TRACKER_HOST:PORT --key KEY (see edgecnn.rpc; the board runs "
                               "python -m edgecnn.rpc_server --tracker HOST:PORT --key KEY)")
        return [Timer(spec)]
    from edgecnn.backends.tvm import rpc as rpc_mod

    if not key:
        raise EdgecnnError("--rpc needs --key: the key the board registered with the tracker")
    n = max(1, rpc_mod.count_boards(rpc, key, timeout)["free"])
    boards = [rpc_mod.request_board(rpc, key, timeout, quiet=i > 0) for i in range(n)]
    return [Timer(spec, session, cross if is_cross(spec) else None, board) for session, board in boards]


def run_search(search: Search, *, trials: int | None, minutes: float | None) -> dict:
    """Spend the budget; returns what the session did. A progress bar shows the estimate as it falls."""
    from edgecnn.core.progress import progress_bar

    start = time.monotonic()
    deadline = start + 60 * minutes if minutes else float("inf")
    total = trials or sum(len(v) for v in search.left.values())
    with progress_bar() as bar:
        task = bar.add_task("tuning", total=total, info="timing every kernel")
        search.measure_start(deadline)
        first = search.model_us()
        while time.monotonic() < deadline and (trials is None or search.trials < trials):
            kernel = search.next_kernel()
            if kernel is None:
                break
            done = search.trials
            search.step(kernel)
            bar.update(task, advance=search.trials - done,
                       info=f"{kernel['name']}  est. {search.model_us() / 1e3:.3f} ms (from {first / 1e3:.3f})")
    return {"trials": search.trials, "failed": search.failed, "requested": {"trials": trials, "minutes": minutes},
            "kernels": len(search.kernels), "minutes": round((time.monotonic() - start) / 60, 3),
            "estimate_ms": {"start": round(first / 1e3, 4), "end": round(search.model_us() / 1e3, 4)},
            "left": sum(len(v) for v in search.left.values()), "trials_per_kernel": search.per_kernel,
            "ended": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def lowered(onnx_path: Path, tgt, spec: dict, batch: int):
    """The model as compile lowers it for this target: the kernels a database holds."""
    return build.lower(passes.prepare(frontend.import_onnx(onnx_path, batch), tgt), spec)


def tune(onnx_path: str | Path, tgt, *, trials: int | None = None, minutes: float | None = None,
         db: str | Path | None = None, rpc: str | None = None, key: str | None = None, batch: int = 1,
         timeout: float = 10.0) -> tuple[Path, dict]:
    """Tune a model for a target (compiler.targets.Target) within `trials` candidates and/or `minutes`; a matching database is added to.

    Returns (database directory, its record). The database appears (or changes) only when tuning worked.
    """
    from edgecnn.backends.tvm.cpu import cpu_info

    onnx_path = Path(onnx_path)
    check_request(onnx_path, tgt, trials, minutes)
    spec = build.resolve_target(tgt)
    want = expected(onnx_path, tgt, spec, batch)
    db = Path(db) if db else default_db(onnx_path, tgt.name)
    measured_on = {"rpc": rpc, "key": key} if rpc else "local"
    previous = check(db, want) if db.exists() and any(db.iterdir()) else None
    if previous and previous["measured_on"] != measured_on:
        raise EdgecnnError(f"{db} was measured on {previous['measured_on']}: tune into a new --db to change that")
    cross = (tgt.options or {}).get("cross_compiler")
    build.check_cross_compiler(cross, tgt.name)
    if not rpc:  # time with the thread pool settings the build's runner will use (before the pool starts)
        runner.apply_thread_settings(runner.thread_settings(spec)["env"], None)
    timers = board_timers(spec, rpc, key, timeout=timeout, cross=cross)
    mod = lowered(onnx_path, tgt, spec, batch)
    found = kernels(mod, spec)
    # the whole model runs on this CPU or on the first board; only here is it profiled per kernel (on boards
    # the kernels are weighed by their time alone x calls)
    model = ModelTimer(mod, spec, found, board=timers[0] if rpc else None)
    profile = None if rpc else model.profile({})
    search = Search(found, cpu_info(spec), timers, read_schedules(db) if previous else {}, profile=profile)
    session = run_search(search, trials=trials, minutes=minutes)
    if profile:
        session["profile_us"] = {k: round(v, 2) for k, v in sorted(profile.items(), key=lambda kv: -kv[1])}
    session["model_check"] = {**model_check(model, search, profile),
                              "measured_on": timers[0].board if rpc else "local"}
    if rpc:  # which board timed how many kernels and candidates
        session["boards"] = {t.board: t.timed for t in timers}
    with atomic_dir(db) as tmp:
        sessions = [*(previous or {}).get("sessions", []), session]
        record = {"format": FORMAT, "version": VERSION, **want, "source": {"onnx": str(onnx_path.resolve())},
                  "cpu": host_cpu() if measured_on == "local" else {"board_key": key, "mcpu": spec.get("mcpu")},
                  "measured_on": measured_on, "trials": sum(s["trials"] for s in sessions), "sessions": sessions}
        write_json(tmp / SCHEDULES, {k: v for k, v in search.best.items() if "us" in v})
        write_json(tmp / RECORD, record)
    return db, record


def read_schedules(db: Path) -> dict:
    import json

    return json.loads((Path(db) / SCHEDULES).read_text())


def apply_db(spec: dict, db: str | Path, *, onnx_path: Path, target, batch: int) -> tuple[dict, dict]:
    """The parameters a checked database holds (kernel key -> params) and what the manifest records of it."""
    from edgecnn.core.progress import status

    db = Path(db)
    record = check(db, expected(Path(onnx_path), target, spec, batch))
    best = read_schedules(db)
    kept = {k: v["params"] for k, v in best.items() if v.get("kept", True)}
    last = record["sessions"][-1]
    summary = {"db": str(db.resolve()), "trials": record["trials"], "cpu": record["cpu"], "tuned": last["ended"],
               "kernels_in_db": len(best), "kernels_kept": len(kept), "estimate_ms": last["estimate_ms"],
               "model_check": {k: v for k, v in last.get("model_check", {}).items() if k not in ("reverted", "steps")}}
    check_ = last.get("model_check", {})
    if check_.get("lost"):
        status.print(f"tuning database {db}: its tuned build was slower than the defaults in the whole model "
                     f"({check_['tuned_ms']:.3f} vs {check_['default_ms']:.3f} ms): compiling the default schedules",
                     soft_wrap=True)
    return kept, summary
