"""TensorRT (optional extra `[tensorrt]`; JetPack's on a Jetson): ONNX -> engine on the device, run it.

An engine is tied to the TensorRT version and GPU that built it, so a build directory is made in two steps:
- `compile` (anywhere, no TensorRT needed) writes the prepared ONNX (target opset, Q/DQ lint passed),
  the builder settings (trt_settings.json) and the manifest, and prints the equivalent trtexec command;
- the engine is built where TensorRT and the target GPU are: by compile itself when this machine is the
  target, else by `edgecnn build BUILD_DIR` on the device or at first load, which record the TensorRT
  version and GPU in the manifest. An engine from another TensorRT or GPU is refused before TensorRT sees it.
Version differences live in `trt_compat`, ONNX preparation in `trt_onnx`.
"""

import datetime
import functools
import os
import time
from pathlib import Path

import numpy as np

from edgecnn.backends import Runner, trt_compat, trt_onnx
from edgecnn.errors import EdgecnnError, MissingDependency
from edgecnn.fileio import atomic_file, write_json
from edgecnn.progress import console, status

COMPILE_NEEDS_RUNTIME = False  # compile prepares a build directory on any machine
SETTINGS = "trt_settings.json"
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                "BOOL": "bool", "BF16": "bfloat16"}


def available() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return str(MissingDependency("tensorrt", "tensorrt")) + " (needs an NVIDIA GPU; on Jetson use JetPack's)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch (TensorRT needs an NVIDIA GPU and a CUDA build of torch)"
    return None


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependency("tensorrt", "tensorrt") from None
    reason = available()
    if reason:
        raise EdgecnnError(reason)
    return trt


def target_config(target: dict) -> dict:
    """The target's `tensorrt:` section (a manifest's or a Target's raw YAML), checked."""
    cfg = target.get("tensorrt")
    missing = [k for k in ("version", "sm", "max_opset") if k not in (cfg or {})]
    if missing:
        raise EdgecnnError(f"target '{target.get('name')}' has no tensorrt.{missing[0]}: TensorRT targets "
                           "state version, sm and max_opset (see targets/jetson-orin.yaml)")
    return cfg


def local_device(trt) -> dict:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"tensorrt": trt.__version__, "gpu": props.name, "sm": f"{props.major}.{props.minor}"}


def mismatch(cfg: dict, target_name: str, local: dict) -> str | None:
    """Why this machine cannot build for the target (None when it can)."""
    gen = trt_compat.generation(local["tensorrt"]).major
    if cfg["version"] == "local":
        allowed = cfg.get("generations", [10, 11])
        if gen not in allowed:
            return (f"target '{target_name}' takes TensorRT {' or '.join(map(str, allowed))}, "
                    f"this is {local['tensorrt']}")
    elif trt_compat.generation(cfg["version"]).major != gen:
        return f"target '{target_name}' is TensorRT {cfg['version']}, this machine has TensorRT {local['tensorrt']}"
    if cfg["sm"] != "local" and str(cfg["sm"]) != local["sm"]:
        return (f"target '{target_name}' is sm_{str(cfg['sm']).replace('.', '')} ({cfg.get('gpu', 'its GPU')}), this "
                f"GPU is {local['gpu']} (sm_{local['sm'].replace('.', '')})")
    return None


def check_engine(record: dict, local: dict) -> None:
    """Refuse an engine built by another TensorRT or for another GPU, before it reaches the deserializer."""
    for key, what in (("tensorrt", "TensorRT"), ("sm", "GPU architecture (SM)")):
        if record.get(key) != local[key]:
            raise EdgecnnError(f"model.engine was built with TensorRT {record.get('tensorrt')} for {record.get('gpu')} "
                               f"(sm {record.get('sm')}); this machine has TensorRT {local['tensorrt']} on "
                               f"{local['gpu']} (sm {local['sm']}): the {what} differs and TensorRT engines are not "
                               "portable. Rebuild it here: edgecnn build BUILD_DIR --force")
    if record.get("gpu") != local["gpu"]:
        status.print(f"[yellow]warning[/]: model.engine was built on {record.get('gpu')}, this is {local['gpu']} "
                     "(same SM): it runs, but rebuild here for the best tactics")


def timing_cache_file(version: str, sm: str) -> str:
    """The timing cache shared by builds for one TensorRT version and GPU ($HOME is expanded where it builds)."""
    root = os.environ.get("EDGECNN_CACHE", "$HOME/.cache/edgecnn")
    return f"{root}/tensorrt/trt{version}-sm{sm}.timing"


def dla_core_of(default: int | None, override) -> int | None:
    """--dla-core N, or 'gpu' for none, overrides the default (the target's dla.core, or the build's)."""
    if override is None:
        return default
    return None if override == "gpu" else int(override)


@functools.cache
def trt_logger(trt):
    """One logger per process: TensorRT warns when builders and runtimes get different ones."""
    return trt.Logger(trt.Logger.WARNING)


# ---- compile: prepare the build directory ----

def compile(onnx_path, target, precision, out_dir: Path, batch: int | None = 1, dla_core=None, **opts) -> dict:
    """Prepare model.onnx + trt_settings.json; build the engine too when this machine is the target."""
    cfg = target_config(target.raw)
    artifact = prepare(Path(onnx_path), target.name, cfg, precision, Path(out_dir), batch, dla_core)
    reason = available()
    if reason is None:
        reason = mismatch(cfg, target.name, local_device(_trt()))
    if reason is None:
        artifact["engine"] = build_engine(Path(out_dir), {"target": target.raw, "artifact": artifact})
        return artifact
    trtexec = f", or with trtexec, in BUILD_DIR:\n  {artifact['trtexec']}" if artifact.get("trtexec") else ""
    console.print(f"engine: not built on this machine ({reason}).\n  On the device: edgecnn build BUILD_DIR{trtexec}",
                  markup=False, highlight=False, soft_wrap=True)
    return artifact


def prepare(onnx_path: Path, name: str, cfg: dict, precision: str, out_dir: Path, batch, dla_core) -> dict:
    """The ONNX TensorRT gets (target opset, Q/DQ lint passed), its profile, and the settings when known."""
    import onnx

    model = onnx.load(str(onnx_path))
    trt_onnx.check_precision(model, precision, onnx_path.name)
    model, opset = trt_onnx.lower_opset(model, int(cfg["max_opset"]), onnx_path.name)
    lint = trt_onnx.lint(model, int(cfg["max_opset"]), onnx_path.name)
    onnx.save(model, str(out_dir / "model.onnx"))
    input_name, chw, dynamic = trt_onnx.input_info(model)
    dynamic_batch = cfg.get("dynamic_batch", {"min": 1, "opt": 8, "max": 32})
    artifact = {"file": "model.engine", "onnx": "model.onnx", "settings": None, "precision": precision,
                "profile": trt_compat.profile_shapes(input_name, chw, batch, dynamic_batch, dynamic),
                "dla_core": dla_core_of((cfg.get("dla") or {}).get("core"), dla_core), "opset": opset,
                "lint": lint, "engine": None}
    if cfg["version"] != "local":  # the local TensorRT is known only where it builds
        settings = trt_compat.settings_for(str(cfg["version"]), cfg, name, precision, artifact["profile"],
                                           artifact["dla_core"], timing_cache_file(cfg["version"], cfg["sm"]))
        write_settings(out_dir, settings, artifact)
    return artifact


def write_settings(build_dir: Path, settings: dict, artifact: dict) -> None:
    artifact["settings"] = SETTINGS
    artifact["trtexec"] = trt_compat.shell_join(trt_compat.trtexec_command(settings))
    write_json(build_dir / SETTINGS, {**settings, "trtexec": artifact["trtexec"]})


# ---- build: the engine, on the device ----

def build_engine(build_dir: Path, man: dict, dla_core=None, timing_cache: Path | None = None) -> dict:
    """Build model.engine in build_dir for this machine's TensorRT and GPU; return the engine record."""
    import onnx

    trt, art = _trt(), man["artifact"]
    cfg, name = target_config(man["target"]), man["target"]["name"]
    local = local_device(trt)
    reason = mismatch(cfg, name, local)
    if reason:
        raise EdgecnnError(f"cannot build here: {reason}")
    core = dla_core_of(art.get("dla_core"), dla_core)
    cache = Path(os.path.expandvars(timing_cache or timing_cache_file(local["tensorrt"], local["sm"])))
    settings = trt_compat.settings_for(local["tensorrt"], cfg, name, art["precision"], art["profile"], core, str(cache))
    if settings["fp16_onnx"]:
        onnx.save(trt_onnx.fp16_model(onnx.load(str(build_dir / art["onnx"]))), str(build_dir / settings["onnx"]))
    write_settings(build_dir, settings, art)
    console.print(f"building {name} {art['precision']} with TensorRT {local['tensorrt']} on {local['gpu']}; "
                  f"the same with trtexec:\n  {art['trtexec']}", markup=False, highlight=False, soft_wrap=True)
    start = time.perf_counter()
    with status.status(f"building the TensorRT engine ({name}, {art['precision']})"):
        plan = serialize_engine(trt, build_dir / settings["onnx"], settings, cache)
    with atomic_file(build_dir / "model.engine") as tmp:
        tmp.write_bytes(plan)
    record = {**local, "dla_core": core, "precision": art["precision"],
              "build_s": round(time.perf_counter() - start, 1),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    art.update(engine=record, dla_core=core)
    return record


def serialize_engine(trt, onnx_path: Path, settings: dict, cache_path: Path) -> bytes:
    """ONNX parser -> network -> builder config (profile, timing cache) -> serialized engine."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    gen = trt_compat.generation(trt.__version__)
    network = trt_compat.create_network(trt, builder, gen)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgecnnError(f"TensorRT {trt.__version__}'s ONNX parser refused {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    trt_compat.configure(trt, builder, config, settings)
    add_profile(builder, network, config, settings["profile"])
    cached = cache_path.read_bytes() if cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cached), ignore_mismatch=False):
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)  # stale: start afresh
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EdgecnnError(f"TensorRT {trt.__version__} could not build an engine for {onnx_path.name} "
                           "(its log above says why)")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def add_profile(builder, network, config, profile: dict) -> None:
    """An optimisation profile for a dynamic batch (min/opt/max); none needed for a static input."""
    inp = network.get_input(0)
    if all(d > 0 for d in inp.shape):
        return
    opt = builder.create_optimization_profile()
    opt.set_shape(inp.name, profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(opt)


# ---- load and run ----

class TrtRunner(Runner):
    """Runs a serialized engine with execute_async_v3 (v2 on 8.2) on its own CUDA stream; torch tensors as buffers."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, dla_core: int | None, profile: dict):
        import torch

        trt = _trt()
        self.torch, self.trt = torch, trt
        self.runtime = trt.Runtime(trt_logger(trt))
        if dla_core is not None:
            self.runtime.DLA_core = dla_core
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EdgecnnError(f"TensorRT could not deserialize {engine_path}: rebuild it (edgecnn build --force)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()  # not the default stream: TensorRT syncs extra on that one
        ios = trt_compat.io_tensors(trt, self.engine)
        self.input_name = next(n for n, is_input in ios if is_input)
        self.output_names = [n for n, is_input in ios if not is_input]
        self.dtypes = {n: getattr(torch, TORCH_DTYPES[trt_compat.tensor_dtype(self.engine, n).name]) for n, _ in ios}
        self.input_shape = list(profile["opt"][1:])
        fixed = profile["min"][0] == profile["max"][0]
        self.batch, self.max_batch = (profile["max"][0] if fixed else None), profile["max"][0]

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if len(x) > self.max_batch:
            parts = [self._run(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        torch = self.torch
        with torch.cuda.stream(self.stream):
            inp = torch.from_numpy(x).to("cuda").to(self.dtypes[self.input_name])
            if not trt_compat.set_input_shape(self.context, self.engine, self.input_name, tuple(x.shape)):
                raise EdgecnnError(f"TensorRT refused input shape {list(x.shape)} (profile: batch 1..{self.max_batch})")
            outs = {n: torch.empty(trt_compat.tensor_shape(self.context, self.engine, n), dtype=self.dtypes[n],
                                   device="cuda") for n in self.output_names}
            addresses = {self.input_name: inp.data_ptr(), **{n: t.data_ptr() for n, t in outs.items()}}
            if not trt_compat.execute(self.context, self.engine, addresses, self.stream.cuda_stream):
                raise EdgecnnError("TensorRT execution failed (its log above says why)")
        self.stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in outs.items()}

    def close(self) -> None:
        self.stream.synchronize()
        self.context = self.engine = None


def load(build_dir, manifest: dict, dla_core=None, **opts) -> TrtRunner:
    """The build's engine; built here first (and recorded in the manifest) when there is none yet."""
    build_dir, art = Path(build_dir), manifest["artifact"]
    trt = _trt()
    if not art.get("engine") or not (build_dir / art["file"]).is_file():
        build_and_record(build_dir, manifest, dla_core)
    check_engine(art["engine"], local_device(trt))
    return TrtRunner(build_dir / art["file"], art["engine"].get("dla_core"), art["profile"])


def build_and_record(build_dir: Path, man: dict, dla_core=None, timing_cache=None) -> dict:
    """build_engine, then the manifest records the engine (and the new files' sha256) when there is one."""
    from edgecnn import manifest as manifest_mod

    record = build_engine(build_dir, man, dla_core, timing_cache)
    if (build_dir / "manifest.json").is_file():
        manifest_mod.update(build_dir, artifact=man["artifact"])
    return record
