"""edgecnn tune: MetaSchedule tuning (TVM 0.27 Relax) of a model for a target, saved as a database.

A tuning database is a directory: MetaSchedule's JSON database (`database_workload.json`,
`database_tuning_record.json`), its per-task logs (`logs/`), and `tune.json`, edgecnn's record of what
the schedules are valid for: the CPU they were measured on, the resolved target, the model's sha256,
the batch, the TVM version, the graph layout and the trials. `edgecnn compile --tune-db DIR` re-applies
the schedules without tuning (MetaSchedule's ApplyDatabase) and refuses a database recorded for another
CPU, target, model or TVM: schedules do not carry across them.

Tuning for a board (an aarch64 target) measures every candidate on the board, through TVM's RPC
tracker (`--rpc HOST:PORT --key KEY`, see edgecnn.backends.tvm.rpc); the host compiles them with the target's
cross compiler.
"""

import datetime
import functools
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgecnn.backends.tvm import build, passes
from edgecnn.backends.tvm.build import require_tvm
from edgecnn.backends.tvm.tunedb import FORMAT, RECORD, VERSION, check, expected, host_cpu
from edgecnn.compiler import targets
from edgecnn.core.errors import EdgecnnError, MissingDependency
from edgecnn.core.fileio import atomic_dir, write_json



def default_db(onnx_path: Path, target: str) -> Path:
    """RUN_DIR/model.onnx -> RUN_DIR/tune-host; other.onnx -> other-tune-host beside it."""
    stem = onnx_path.name.split(".")[0]
    return onnx_path.parent / f"{'' if stem == 'model' else stem + '-'}tune-{target}"


def is_cross(spec: dict) -> bool:
    triple = spec.get("mtriple")
    return bool(triple) and triple.split("-")[0] != require_tvm().target.codegen.llvm_get_system_triple().split("-")[0]


def light_intrinsics(arch: str = "x86") -> None:
    """Register only this architecture's tensor intrinsics.

    `import tvm.s_tir.tensor_intrin` registers every GPU intrinsic too: ~40 s of CPU in each process,
    and MetaSchedule's builder starts fresh worker processes for every batch of candidates (more than
    the builds themselves on a 2-core machine). A package stub holding only x86 or arm_cpu lets the
    tuner's own `import tvm.s_tir.tensor_intrin` find what a CPU target uses.
    """
    import importlib
    import importlib.util
    import sys

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        sys.modules[name] = importlib.util.module_from_spec(spec)
    importlib.import_module(f"{name}.{'arm_cpu' if arch == 'aarch64' else 'x86'}")


def _export_so(cross_compiler: str, rt_mod) -> str:
    """MetaSchedule builder export for a board: a shared library built by the cross compiler."""
    import tempfile

    from tvm.support import cc

    path = str(Path(tempfile.mkdtemp()) / "tvm_tmp_mod.so")
    rt_mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    return path


def pre_tuning(mod, spec: dict, prepack: bool):
    """The passes before tuning; compile applies the same ones (static_shape_tuning), so workloads match."""
    tvm = require_tvm()
    from tvm import relax

    steps = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
             relax.pipeline.zero_pipeline()]
    if prepack:
        steps.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with tvm.target.Target(spec):
        return tvm.transform.Sequential(steps)(mod)


def budget(trials: int, n_tasks: int, per_task: int | None) -> tuple[int, int]:
    """(max trials per task, trials per round): every task gets a first round; converged small kernels
    leave their share to the big ones, up to twice the even share unless --per-task says otherwise."""
    share = max(1, math.ceil(trials / n_tasks))
    per_task = per_task or 2 * share
    return per_task, max(1, min(64, share, per_task))


def search_strategy(per_round: int):
    """MetaSchedule's evolutionary search, its population scaled to the round: the default 512
    candidates evolved per round cost seconds of CPU that a round of a few trials does not repay."""
    from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch

    return EvolutionarySearch(population_size=min(512, 16 * max(4, per_round)),
                              init_min_unmeasured=min(50, 2 * max(4, per_round)))


def measure_progress(bar, task, weights: list[float]):
    """A MetaSchedule measure callback advancing a rich bar: trials done, best estimate, failures."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Progress(PyMeasureCallback):
        def __init__(self):
            self.best: dict[int, float] = {}
            self.trials = self.failed = 0
            self.first_error = ""

        def apply(self, task_scheduler, task_id, candidates, builder_results, runner_results):
            secs = [sum(map(float, r.run_secs)) / len(r.run_secs) for r in runner_results
                    if r.error_msg is None and r.run_secs]
            self.trials += len(candidates)
            self.failed += len(candidates) - len(secs)
            errors = [r.error_msg for r in [*builder_results, *runner_results] if r.error_msg]
            if errors and not self.first_error:
                self.first_error = (errors[0].strip().splitlines() or ["?"])[-1][:300]
            if secs:
                self.best[task_id] = min(min(secs), self.best.get(task_id, math.inf))
            bar.update(task, advance=len(candidates), info=(
                f"task {task_id + 1}/{len(weights)}  est. {self.estimate_ms():.3f} ms"
                + (f"  {self.failed} failed" if self.failed else "")))

        def estimate_ms(self) -> float:
            """Sum of the best measured kernel times, each times how often the model runs it."""
            return 1e3 * sum(weights[t] * s for t, s in self.best.items())

    return Progress()


def make_runner(spec: dict, rpc: str | None, key: str | None, timeout: float, *, board_log: Path | None = None):
    """LocalRunner on this machine, or MetaSchedule's RPCRunner on every free board of the key."""
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, LocalRunner

    evaluator = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100)
    if not rpc:
        if is_cross(spec):
            raise EdgecnnError(f"a {spec['mtriple']} target is tuned on the board itself: pass --rpc "
                               "TRACKER_HOST:PORT --key KEY (see edgecnn.rpc; the board runs "
                               "python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY)")
        return LocalRunner(timeout_sec=120, evaluator_config=evaluator)
    from edgecnn.backends.tvm import rpc as rpc_mod

    if not key:
        raise EdgecnnError("--rpc needs --key: the key the board registered with the tracker")
    return rpc_mod.tuning_runner(rpc, key, evaluator=evaluator, timeout=timeout, log=board_log)


def make_builder(spec: dict, cross_compiler: str | None, workers: int, recycle: int = 16):
    """MetaSchedule's LocalBuilder work, with its worker processes kept across rounds.

    LocalBuilder starts a fresh pool every round (TVM works around a slow leak in its workers that way),
    so each round re-imports TVM in every worker: more CPU than the builds themselves on 2 cores. Here
    the pool lives for `recycle` rounds. Uses the builder's worker function (TVM 0.27 is pinned).
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    arch = (spec.get("mtriple") or "x86").split("-")[0]
    export = functools.partial(_export_so, cross_compiler) if cross_compiler and is_cross(spec) else None

    @derived_object
    class PooledBuilder(PyBuilder):
        def __init__(self):
            super().__init__()
            self.pool, self.rounds = None, 0

        def build(self, build_inputs):
            if self.rounds % recycle == 0:
                if self.pool:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=workers, timeout=120,
                                              initializer=functools.partial(light_intrinsics, arch))
            self.rounds += 1
            jobs = [(None, export, i.mod, i.target, _serialize_params(i.params)) for i in build_inputs]
            return [BuilderResult(r.value, None) if r.status == StatusKind.COMPLETE
                    else BuilderResult(None, f"build {r.status.name.lower()}: {r.value}")
                    for r in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs)]

    return PooledBuilder()


def quiet_metaschedule() -> None:
    """MetaSchedule logs every round to stdout: keep its files (DB/logs), show warnings only."""
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


def run_tuning(mod, spec: dict, work_dir: Path, *, trials: int, per_task: int | None, runner, builder) -> dict:
    """MetaSchedule over the model's kernels with a progress bar; returns what the session did."""
    from edgecnn.core.progress import progress_bar

    require_tvm()
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(mod, require_tvm().target.Target(spec))
    quiet_metaschedule()
    per_task, per_round = budget(trials, len(tasks), per_task)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), strategy=search_strategy(per_round))
    if not contexts:
        raise EdgecnnError("the model has no kernel left to tune")
    start = time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task("tuning", total=min(trials, per_task * len(contexts)), info=f"{len(contexts)} kernels")
        progress = measure_progress(bar, task, weights)
        ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                           max_trials_per_task=per_task, num_trials_per_iter=per_round, builder=builder,
                           runner=runner, measure_callbacks=[*ms.MeasureCallback.create("default"), progress])
        bar.update(task, completed=bar.tasks[0].total)
    if not progress.best:
        raise EdgecnnError(f"all {progress.trials} candidates failed to build or run (first error: "
                           f"{progress.first_error or 'none reported'}): check the compiler or the board")
    return {"trials": progress.trials, "failed": progress.failed, "requested": trials, "per_task": per_task,
            "kernels": len(contexts), "minutes": round((time.monotonic() - start) / 60, 2),
            "estimate_ms": round(progress.estimate_ms(), 4),
            "ended": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def require_search_deps() -> None:
    """MetaSchedule's search needs these; TVM itself does not pull them in."""
    for module in ("psutil", "xgboost", "cloudpickle"):
        try:
            __import__(module)
        except ImportError:
            raise MissingDependency(f"{module} (MetaSchedule tuning needs it)", "tvm") from None


def check_request(onnx_path: Path, tgt, trials: int, per_task: int | None) -> None:
    if trials < 1 or (per_task is not None and per_task < 1):
        raise EdgecnnError("--trials and --per-task must be at least 1")
    if not onnx_path.is_file():
        raise EdgecnnError(f"no ONNX model at {onnx_path}")
    if tgt.backend != "tvm":
        raise EdgecnnError(f"target '{tgt.name}' uses {tgt.backend}: edgecnn tune tunes TVM targets "
                           f"({', '.join(t.name for t in targets.all_targets() if t.backend == 'tvm')})")
    require_tvm()
    require_search_deps()


def tune(onnx_path: str | Path, target: str, *, trials: int, db: str | Path | None = None, per_task: int | None = None,
         rpc: str | None = None, key: str | None = None, batch: int = 1, prepack: bool = True,
         timeout: float = 10.0) -> tuple[Path, dict]:
    """Tune a model for a target with `trials` MetaSchedule trials; a matching database is added to.

    Returns (database directory, its record). The database appears (or changes) only when tuning worked.
    """
    onnx_path, tgt = Path(onnx_path), targets.load(target)
    check_request(onnx_path, tgt, trials, per_task)
    spec = build.resolve_target(tgt)
    want = expected(onnx_path, tgt, spec, batch)
    db = Path(db) if db else default_db(onnx_path, tgt.name)
    measured_on = {"rpc": rpc, "key": key} if rpc else "local"
    previous = check(db, want) if db.exists() and any(db.iterdir()) else None
    if previous and (previous["prepack"], previous["measured_on"]) != (prepack, measured_on):
        raise EdgecnnError(f"{db} was tuned with prepack={previous['prepack']} measured on "
                           f"{previous['measured_on']}: tune into a new --db to change either")
    cross = (tgt.options or {}).get("cross_compiler")
    build.check_cross_compiler(cross, tgt.name)
    board_log = Path(tempfile.mkdtemp(prefix="edgecnn-boards-")) / "boards.log" if rpc else None
    runner = make_runner(spec, rpc, key, timeout, board_log=board_log)
    light_intrinsics((spec.get("mtriple") or "x86").split("-")[0])
    mod = passes.prepare(build.import_onnx(onnx_path, batch), tgt)
    mod = pre_tuning(mod, spec, prepack)
    with atomic_dir(db) as tmp:
        if previous:
            shutil.copytree(db, tmp, dirs_exist_ok=True)
        session = run_tuning(mod, spec, tmp, trials=trials, per_task=per_task, runner=runner,
                             builder=make_builder(spec, cross, os.cpu_count() or 1))
        if board_log:  # which board measured how many candidates; the log goes to the database's logs/
            from edgecnn.backends.tvm import rpc as rpc_mod

            session["boards"] = rpc_mod.collect_board_log(board_log, tmp / "logs")
        sessions = [*(previous or {}).get("sessions", []), session]
        record = {"format": FORMAT, "version": VERSION, **want, "source": {"onnx": str(onnx_path.resolve())},
                  "cpu": host_cpu() if measured_on == "local" else {"board_key": key, "mcpu": spec.get("mcpu")},
                  "measured_on": measured_on, "prepack": prepack,
                  "trials": sum(s["trials"] for s in sessions), "sessions": sessions}
        write_json(tmp / RECORD, record)
    return db, record


def apply_db(mod, spec: dict, db: str | Path, *, onnx_path: Path, target, batch: int):
    """Apply a checked tuning database to a Relax module (no tuning); returns (module, what was applied)."""
    db = Path(db)
    record = check(db, expected(Path(onnx_path), target, spec, batch))
    require_tvm()
    from tvm import relax

    light_intrinsics((spec.get("mtriple") or "x86").split("-")[0])
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    with JSONDatabase(work_dir=str(db)):  # in context: ApplyDatabase uses it (and does not log creating one)
        mod = relax.get_pipeline("static_shape_tuning", target=spec, total_trials=0, work_dir=str(db),
                                 cpu_weight_prepack=record["prepack"])(mod)
    kernels = [f for f in mod.functions.values() if isinstance(f, require_tvm().tirx.PrimFunc)]
    return mod, {"db": str(db.resolve()), "trials": record["trials"], "cpu": record["cpu"],
                 "prepack": record["prepack"], "tuned": record["sessions"][-1]["ended"],
                 "kernels": len(kernels), "kernels_from_db": sum(bool(f.attrs and f.attrs.get("tirx.is_scheduled"))
                                                                 for f in kernels)}
