"""The backend interface (Polygraphy's loaders and runners): a Backend compiles and loads, a Runner runs.

A Backend has a small core (available, compile, load, packages); what only some backends can do is a
capability Protocol (Tunable, DeviceFarm, BuildsOnDevice, QdqRules, RunNotes, OperatorMatrix) that callers
test, so verify and bench never ask which backend they hold. A Runner declares what it does differently
with defaults: a runner that times itself (a remote board's own clock), reports its own memory or reads
its own device's state, an input dtype other than float32.
"""

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from edgecnn.core.errors import EdgecnnError

DEFAULT_SECONDS = 2.0  # timing: as many runs as fit in this, at least MIN_RUNS
MIN_RUNS, MAX_RUNS = 10, 100_000
CHUNK = 256  # samples per call when a runner goes through a dataset (verify, accuracy budgets)


class Runner:
    """A loaded artifact: `run(x) -> {output name: array}` for a batch of any size; a context manager.

    Subclasses set input_name / output_names / batch / input_shape and write `_run` for one batch the
    artifact takes: a fixed `batch` (the last chunk is padded) or up to `max_batch` samples.
    """

    name = "runner"
    input_name = "input"
    input_dtype = "float32"
    output_names: list[str] = ["logits"]
    batch: int | None = None  # fixed batch of the artifact, None when dynamic
    max_batch: int | None = None  # most samples one call takes (a dynamic batch with a limit)
    input_shape: list | None = None  # the dimensions after the batch
    board: str | None = None  # HOST:PORT of the board it runs on, for a runner on a remote board

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if self.input_shape and list(x.shape[1:]) != list(self.input_shape):
            raise EdgecnnError(f"input shape {list(x.shape)} does not fit this model: it takes "
                               f"N x {' x '.join(map(str, self.input_shape))} ({self.name})")
        step = self.batch or self.max_batch
        if not step or len(x) == step or (not self.batch and len(x) < step):
            return self._run(x)
        return run_batches(self._run_padded, x, step)

    def _run_padded(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        n = len(chunk)
        if self.batch and n < self.batch:
            chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
        return {k: v[:n] for k, v in self._run(chunk).items()}

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def time_runs(self, x: np.ndarray, *, warmup: int, runs: int | None, seconds: float | None,
                  tick=None) -> np.ndarray:
        """Per-run latencies in ns by this machine's clock: `runs` runs, else as many as fit in `seconds`."""
        for _ in range(warmup):
            self.run(x)
        times: list[int] = []
        deadline = time.perf_counter_ns() + int((seconds or DEFAULT_SECONDS) * 1e9)
        while True:
            t0 = time.perf_counter_ns()
            self.run(x)
            t1 = time.perf_counter_ns()
            times.append(t1 - t0)
            if tick:
                tick()
            if len(times) >= (runs or MAX_RUNS) or (not runs and t1 >= deadline and len(times) >= MIN_RUNS):
                return np.array(times, np.int64)

    def memory(self) -> dict | None:
        """The runner's own memory report, or None: bench then measures the process it runs in."""
        return None

    def device_probe(self):
        """What reads the state and power of the device this runner runs on (edgecnn.device.conditions.Probe's
        methods), or None: bench then reads this machine."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_batches(run, x: np.ndarray, size: int, advance=None) -> dict[str, np.ndarray]:
    """`run` over x in chunks of `size`, outputs concatenated; `advance(n)` after each chunk (progress)."""
    parts: dict[str, list] = {}
    for i in range(0, len(x), size):
        for k, v in run(x[i:i + size]).items():
            parts.setdefault(k, []).append(v)
        if advance:
            advance(len(x[i:i + size]))
    return {k: np.concatenate(v) for k, v in parts.items()}


@dataclass(frozen=True)
class QdqForm:
    """Where a runtime's int8 kernels want QuantizeLinear/DequantizeLinear (`edgecnn quantize --form NAME`):
    settings for ONNX Runtime's quantizer, which does the work."""

    symmetric: bool  # int8 activations, zero point 0 (else uint8 with a zero point)
    op_types: tuple[str, ...] | None  # quantize only these ops' inputs (None: all ONNX Runtime quantizes)
    options: dict = field(default_factory=dict)  # extra_options of quantize_static
    strict: bool = False  # a lint error refuses the model (the runtime would refuse or miscompute it)
    reduce_range: bool = False  # 7-bit weights (quantize_static's reduce_range): the runtime's advice for this CPU


class Backend:
    """One backend, found by name (edgecnn.backends.get) and importing its runtime only when used.

    The core every backend has; what only some can do is a capability below (a Protocol), which a caller
    tests with isinstance (`isinstance(backend, Tunable)`), so no caller names a backend."""

    name = ""
    packages: tuple[str, ...] = ()  # pip packages whose versions a manifest records
    # the Q/DQ form (a name of edgecnn.backends.qdq_forms) its fast int8 path runs, which compile converts an
    # int8 model to; None: it takes any form
    int8_form: str | None = None

    def available(self) -> str | None:
        """None when usable here, else the reason (e.g. the package to install)."""
        return None

    def compile(self, onnx_path, target, precision: str, out_dir, *, batch: int | None = 1, **opts) -> dict:
        """Write the artifact into out_dir; return the manifest's `artifact` section (what load() needs)."""
        raise EdgecnnError(f"the {self.name} backend does not compile ONNX models")

    def load(self, build_dir, manifest: dict, *, threads: int | None = None, **opts) -> Runner:
        raise NotImplementedError


@runtime_checkable
class Tunable(Protocol):
    """It has a tuner (`edgecnn tune`)."""

    def tune(self, onnx_path, target, **opts) -> tuple:
        """Tune a model's kernels for a target (compiler.targets.Target) into a database `compile --tune-db`
        applies: (db, record)."""


@runtime_checkable
class DeviceFarm(Protocol):
    """Its builds run on the boards of an RPC tracker (`--rpc`, `--boards`)."""

    def remote(self, build_dir, address: str, key: str | None = None, *, timeout: float = 10.0,
               threads: int | None = None):
        """A picklable loader of the build's runner on a board of the tracker at `address`."""

    def boards(self, address: str, key: str, *, timeout: float = 10.0) -> dict:
        """{"registered": n, "free": m}: the boards of `key` on the tracker."""


@runtime_checkable
class BuildsOnDevice(Protocol):
    """compile prepares a build on any machine (without the runtime); the device finishes it (`edgecnn build`)."""

    def finish(self, build_dir, manifest: dict, **opts) -> str:
        """The step a build takes on its device; returns what was done."""


@runtime_checkable
class QdqRules(Protocol):
    """It has int8 kernels that want Q/DQ nodes placed their way (`edgecnn quantize --form NAME`)."""

    qdq_form: QdqForm

    def lint_qdq(self, model) -> list:
        """Its rules for a Q/DQ model: violations (str() names the rule and node; .severity)."""


@runtime_checkable
class RunNotes(Protocol):
    """It can say how this machine runs a build (a known deviation of its kernels), for verify."""

    def notes(self, build_dir, manifest: dict) -> list[str]: ...


@runtime_checkable
class OperatorMatrix(Protocol):
    """`edgecnn verify --ops` checks it, compiled for this target."""

    matrix_target: str


def needs_torch(backend: Backend) -> bool:
    """Its runtime imports torch (the PyTorch reference); the others run where torch is not installed."""
    return "torch" in backend.packages
