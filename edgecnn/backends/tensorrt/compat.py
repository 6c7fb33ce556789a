"""TensorRT 8.x / 10.x / 11.x differences, kept in this one module (like TVM's versioned converters).

Two halves:
- `Generation`: what a TensorRT version has, in plain Python (no TensorRT needed). It drives the
  builder settings a build directory records and the equivalent `trtexec` command, so both are written
  and unit-tested on machines without a GPU.
- Small functions that call the TensorRT Python API the way the installed version wants, chosen by
  the major version and `hasattr` checks (checked against the pybind sources of TensorRT 8.2.1, 8.5.2,
  10.3.0 and 11.1).

What differs:
| | 8.2 | 8.5 | 8.6 - 10.x | 11.x |
|---|---|---|---|---|
| network flag | EXPLICIT_BATCH | EXPLICIT_BATCH | (10: none) | none, always strongly typed |
| fp16 / int8 | BuilderFlag.FP16 / INT8 | same | same | removed: fp16 ONNX, Q/DQ |
| workspace | max_workspace_size, --workspace | set_memory_pool_limit, --memPoolSize | same | same |
| optimisation level | - | - | builder_optimization_level | same |
| execution | bindings, execute_async_v2 | named tensors, execute_async_v3 | same | same |
"""

import re
import shlex
from dataclasses import dataclass

from edgecnn.core.errors import EdgecnnError

OLDEST = (8, 2)


@dataclass(frozen=True)
class Generation:
    version: tuple[int, int]

    @property
    def major(self) -> int:
        return self.version[0]

    @property
    def explicit_batch_flag(self) -> bool:  # deprecated and ignored on 10, gone on 11
        return self.major < 10

    @property
    def precision_flags(self) -> bool:  # weak typing; 11 takes precision from the graph only
        return self.major < 11

    @property
    def memory_pool(self) -> bool:
        return self.version >= (8, 4)

    @property
    def optimization_level(self) -> bool:
        return self.version >= (8, 6)

    @property
    def skip_inference_flag(self) -> str:
        return "--skipInference" if self.version >= (8, 6) else "--buildOnly"


def generation(version: str) -> Generation:
    """'10.3.0.30' -> Generation((10, 3)); TensorRT before 8.2 is refused."""
    try:
        major, minor = (int(p) for p in str(version).split(".")[:2])
    except ValueError:
        raise EdgecnnError(f"'{version}' is not a TensorRT version (MAJOR.MINOR)") from None
    if (major, minor) < OLDEST:
        raise EdgecnnError(f"TensorRT {version} is too old: edgecnn builds with TensorRT 8.2 and newer")
    return Generation((major, minor))


# ---- builder settings and the trtexec command (pure Python) ----

def precision_flags(gen: Generation, precision: str) -> list[str]:
    """Builder flags for a precision: INT8 comes from the Q/DQ graph, FP16 covers the unquantized layers."""
    if not gen.precision_flags or precision == "fp32":
        return []
    return ["FP16"] if precision == "fp16" else ["INT8", "FP16"]


def dla_settings(dla: dict | None, core: int | None, precision: str, target_name: str) -> dict | None:
    if core is None:
        return None
    cores = (dla or {}).get("cores", 0)
    if not 0 <= core < cores:
        raise EdgecnnError(f"target '{target_name}' has {cores or 'no'} DLA core(s); DLA core {core} does not exist")
    if precision == "fp32":
        raise EdgecnnError(f"DLA runs FP16 and INT8 only: build fp16 or int8 for DLA core {core}")
    return {"core": core, "gpu_fallback": bool(dla.get("gpu_fallback", True))}


def profile_shapes(input_name: str, chw: list[int], batch: int | None, *, dynamic_batch: dict,
                   dynamic_input: bool) -> dict:
    """The optimisation profile: min/opt/max of a dynamic batch, or the one fixed batch."""
    lo, opt, hi = (batch, batch, batch) if batch else (dynamic_batch["min"], dynamic_batch["opt"], dynamic_batch["max"])
    return {"input": input_name, "dynamic_input": dynamic_input,
            "min": [lo, *chw], "opt": [opt, *chw], "max": [hi, *chw]}


def settings_for(version: str, trt_cfg: dict, *, target_name: str, precision: str, profile: dict,
                 dla_core: int | None, timing_cache: str) -> dict:
    """Everything a build of this target at this precision sets, for this TensorRT version."""
    gen = generation(version)
    level = trt_cfg.get("builder_optimization_level")
    fp16_onnx = precision == "fp16" and not gen.precision_flags
    return {"format": "edgecnn.tensorrt-build", "version": 1, "target": target_name, "tensorrt": version,
            "generation": gen.major, "precision": precision,
            "onnx": "model.fp16.onnx" if fp16_onnx else "model.onnx", "fp16_onnx": fp16_onnx,
            "flags": precision_flags(gen, precision), "strongly_typed": not gen.precision_flags,
            "workspace_mib": int(trt_cfg.get("workspace_mib", 1024)),
            "builder_optimization_level": level if gen.optimization_level else None,
            "dla": dla_settings(trt_cfg.get("dla"), dla_core, precision, target_name),
            "profile": profile, "engine": "model.engine",
            "timing_cache": timing_cache}


def trtexec_command(settings: dict) -> list[str]:
    """The trtexec command line that builds the same engine with that TensorRT generation."""
    gen = generation(settings["tensorrt"])
    cmd = ["trtexec", f"--onnx={settings['onnx']}", f"--saveEngine={settings['engine']}"]
    cmd += [f"--{flag.lower()}" for flag in settings["flags"]]
    mib = settings["workspace_mib"]
    cmd.append(f"--memPoolSize=workspace:{mib}" if gen.memory_pool else f"--workspace={mib}")
    if settings["builder_optimization_level"] is not None:
        cmd.append(f"--builderOptimizationLevel={settings['builder_optimization_level']}")
    if settings["dla"]:
        cmd.append(f"--useDLACore={settings['dla']['core']}")
        cmd += ["--allowGPUFallback"] if settings["dla"]["gpu_fallback"] else []
    prof = settings["profile"]
    if prof["dynamic_input"]:
        dims = {k: "x".join(map(str, prof[k])) for k in ("min", "opt", "max")}
        if dims["min"] == dims["max"]:
            cmd.append(f"--shapes={prof['input']}:{dims['opt']}")
        else:
            cmd += [f"--{k}Shapes={prof['input']}:{dims[k]}" for k in ("min", "opt", "max")]
    cmd += [f"--timingCacheFile={settings['timing_cache']}", gen.skip_inference_flag]
    return cmd


def shell_join(cmd: list[str]) -> str:
    """shlex.join that leaves $VARIABLES for the shell to expand."""
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./$-]+", a) else shlex.quote(a) for a in cmd)


# ---- the TensorRT Python API, per generation ----

def create_network(trt, builder, gen: Generation):
    flags = 0
    if gen.explicit_batch_flag and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return builder.create_network(flags)


def set_flags(trt, config, names: list[str]) -> None:
    for name in names:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise EdgecnnError(f"TensorRT {trt.__version__} has no BuilderFlag.{name} (strongly typed builds "
                               "take precision from the ONNX): rebuild the settings with edgecnn build --force")
        config.set_flag(flag)


def set_workspace(trt, config, mib: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, mib << 20)
    else:
        config.max_workspace_size = mib << 20


def configure(trt, builder, config, settings: dict) -> None:
    """Apply precision flags, workspace, optimisation level and DLA to a builder config."""
    set_flags(trt, config, settings["flags"])
    set_workspace(trt, config, settings["workspace_mib"])
    level = settings["builder_optimization_level"]
    if level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = level
    dla = settings["dla"]
    if dla:
        if builder.num_DLA_cores <= dla["core"]:
            raise EdgecnnError(f"this device has {builder.num_DLA_cores} DLA core(s), not core {dla['core']}: "
                               "build without --dla-core (on the GPU)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla["core"]
        if dla["gpu_fallback"]:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def io_tensors(trt, engine) -> list[tuple[str, bool]]:
    """[(name, is_input)] of the engine's inputs and outputs, in engine order."""
    if hasattr(engine, "num_io_tensors"):
        return [(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
                for n in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))]
    return [(engine.get_binding_name(i), engine.binding_is_input(i)) for i in range(engine.num_bindings)]


def tensor_dtype(engine, name: str):
    if hasattr(engine, "get_tensor_dtype"):
        return engine.get_tensor_dtype(name)
    return engine.get_binding_dtype(engine.get_binding_index(name))


def set_input_shape(context, engine, name: str, shape: tuple) -> bool:
    if hasattr(context, "set_input_shape"):
        return context.set_input_shape(name, shape)
    return context.set_binding_shape(engine.get_binding_index(name), shape)


def tensor_shape(context, engine, name: str) -> tuple:
    if hasattr(context, "get_tensor_shape"):
        return tuple(context.get_tensor_shape(name))
    return tuple(context.get_binding_shape(engine.get_binding_index(name)))


def execute(context, engine, addresses: dict[str, int], stream_handle: int) -> bool:
    """Enqueue one inference on `stream_handle`: named tensor addresses (8.5+) or a bindings list (8.2)."""
    if hasattr(context, "execute_async_v3"):
        for name, ptr in addresses.items():
            context.set_tensor_address(name, ptr)
        return context.execute_async_v3(stream_handle)
    bindings = [0] * engine.num_bindings
    for name, ptr in addresses.items():
        bindings[engine.get_binding_index(name)] = ptr
    return context.execute_async_v2(bindings=bindings, stream_handle=stream_handle)
