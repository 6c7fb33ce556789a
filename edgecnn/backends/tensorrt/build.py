"""Build a TensorRT build directory: prepare it anywhere (compile), make the engine on the device (build)."""

import datetime
import os
import time
from pathlib import Path

from edgecnn.backends.tensorrt import compat, onnx as trt_onnx
from edgecnn.backends.tensorrt.device import (dla_core_of, local_device, mismatch, require_trt, target_config,
                                              timing_cache_file, trt_logger)
from edgecnn.core import onnx_utils
from edgecnn.core.errors import EdgecnnError, Unsupported
from edgecnn.core.fileio import atomic_file, write_json
from edgecnn.core.progress import console, status

SETTINGS = "trt_settings.json"


def prepare(onnx_path: Path, cfg: dict, precision: str, out_dir: Path, *, name: str, batch, dla_core) -> dict:
    """The ONNX TensorRT gets (target opset, Q/DQ lint passed), its profile, and the settings when known."""
    import onnx

    model = onnx.load(str(onnx_path))
    external = bool(onnx_utils.external_files(onnx.load(str(onnx_path), load_external_data=False)))
    trt_onnx.check_precision(model, precision, onnx_path.name)
    model, opset = trt_onnx.lower_opset(model, int(cfg["max_opset"]), onnx_path.name, int(cfg.get("min_opset", 0)))
    lint = trt_onnx.lint(model, int(cfg["max_opset"]), onnx_path.name)
    onnx_utils.save(model, out_dir / "model.onnx", external=external)  # the parser reads the data beside it
    input_name, chw, dynamic = onnx_utils.input_info(model)
    dynamic_batch = cfg.get("dynamic_batch", {"min": 1, "opt": 8, "max": 32})
    artifact = {"file": "model.engine", "onnx": "model.onnx", "settings": None, "precision": precision,
                "profile": compat.profile_shapes(input_name, chw, batch, dynamic_batch=dynamic_batch,
                                                 dynamic_input=dynamic),
                "dla_core": dla_core_of((cfg.get("dla") or {}).get("core"), dla_core), "opset": opset,
                "lint": lint, "engine": None}
    if cfg["version"] != "local":  # the local TensorRT is known only where it builds
        settings = compat.settings_for(str(cfg["version"]), cfg, target_name=name, precision=precision,
                                       profile=artifact["profile"], dla_core=artifact["dla_core"],
                                       timing_cache=timing_cache_file(cfg["version"], cfg["sm"]))
        write_settings(out_dir, settings, artifact)
    return artifact


def write_settings(build_dir: Path, settings: dict, artifact: dict) -> None:
    artifact["settings"] = SETTINGS
    artifact["trtexec"] = compat.shell_join(compat.trtexec_command(settings))
    write_json(build_dir / SETTINGS, {**settings, "trtexec": artifact["trtexec"]})


def build_engine(build_dir: Path, man: dict, dla_core=None, timing_cache: Path | None = None) -> dict:
    """Build model.engine in build_dir for this machine's TensorRT and GPU; return the engine record."""
    trt, art = require_trt(), man["artifact"]
    cfg, name = target_config(man["target"]), man["target"]["name"]
    local = local_device(trt)
    reason = mismatch(cfg, name, local)
    if reason:
        raise EdgecnnError(f"cannot build here: {reason}")
    core = dla_core_of(art.get("dla_core"), dla_core)
    cache = Path(os.path.expandvars(timing_cache or timing_cache_file(local["tensorrt"], local["sm"])))
    settings = compat.settings_for(local["tensorrt"], cfg, target_name=name, precision=art["precision"],
                                   profile=art["profile"], dla_core=core, timing_cache=str(cache))
    if settings["fp16_onnx"]:
        import onnx  # only here: a board builds its engine without onnx installed

        onnx.save(onnx_utils.to_fp16(onnx.load(str(build_dir / art["onnx"]))), str(build_dir / settings["onnx"]))
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
    gen = compat.generation(trt.__version__)
    network = compat.create_network(trt, builder, gen)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise Unsupported(f"TensorRT {trt.__version__}'s ONNX parser cannot take {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    compat.configure(trt, builder, config, settings)
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


def build_and_record(build_dir: Path, man: dict, dla_core=None, timing_cache=None) -> dict:
    """build_engine, then the manifest records the engine (and the new files' sha256) when there is one."""
    from edgecnn.core import manifest as manifest_mod

    record = build_engine(build_dir, man, dla_core, timing_cache)
    if (build_dir / "manifest.json").is_file():
        manifest_mod.update(build_dir, artifact=man["artifact"])
    return record
